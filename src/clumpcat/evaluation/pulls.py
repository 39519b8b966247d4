"""Photometric pulls of injected clumps: do the flux errors hold? (issue 11)

Clumps injected into the run's own cutouts (``clumpcat inject``) have a known
observed flux in each band. After detection, post-processing and photometry
of the injected cutouts, each injected clump recovered by a candidate at or
above the catalogue's score threshold gives, per band, the pull

    ``(flux_nmgy_b - flux_b) / flux_nmgy_err_b``

(measured and true flux both observed, i.e. before the extinction
correction, in nanomaggies). Errors that hold give pulls of median 0 and
standard deviation 1. Only clumps with true S/N = ``flux_b /
flux_nmgy_err_b`` above ``min_snr`` count: selecting on the *true* flux keeps
the noise of the measurement out of the selection, which would otherwise
favour positive pulls.

The photometry is measured where the *detector* put the clump, as in the
catalogue, so a candidate centred 0.3 FWHM off its clump loses flux from its
aperture and widens the pulls with an error the flux error does not model. The
block therefore also gives the pulls of the ``centred`` recoveries (within
:data:`PULL_CENTRED_FWHM` of the true position), which measure the error model
of the photometry itself.

An injected clump's truth does not hold the host's own clumps: one landing on
such a clump is measured with the host clump's light in its aperture, a bias
no error model of an isolated clump covers. ``clumpcat inject`` keeps injected
clumps 2 FWHM from the compact sources it finds, but faint ones slip through.
Each pull row therefore says whether the clump is ``blended``: another source
within :data:`PULL_BLEND_FWHM` r-band FWHM of its true position -- a
candidate of the injected cutout other than the one that recovered it, or a
source of the host's own truth (``host_truth``, where the survey has one)
-- brighter in that band than the measurement's error. The block reports the
``isolated`` recoveries (centred and not blended) besides all of them.

Positions are in the *cutout* frame (FITS pixels, 0-based).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from astropy.stats import mad_std

from clumpcat.constants import SDSS_BANDS
from clumpcat.errors import InputError
from clumpcat.matching import match_catalogues

__all__ = [
    "PULL_MIN_SNR",
    "PULL_TARGET_STD",
    "PULL_CENTRED_FWHM",
    "PULL_BLEND_FWHM",
    "pull_bands",
    "pull_table",
    "pull_summary",
]

#: Clumps count in the pull statistics above this true S/N (issue 11: S/N > 5).
PULL_MIN_SNR = 5.0
#: Range of pull standard deviations within which the errors are said to hold (issue 11).
PULL_TARGET_STD = (0.8, 1.3)
#: Recoveries whose candidate lies within this many r-band FWHM of the true
#: position are "centred": their aperture loses < 1% of a Moffat's flux.
PULL_CENTRED_FWHM = 0.2
#: Another source within this many r-band FWHM of an injected clump makes it
#: ``blended``: its light reaches the aperture (1.125 FWHM) and the PSF core.
PULL_BLEND_FWHM = 2.0


def pull_bands(photometry: pd.DataFrame, injected_truth: pd.DataFrame) -> list[str]:
    """Bands with a true flux (``flux_<b>``) and a measured one with its error."""
    return [
        b
        for b in (*SDSS_BANDS, "y")
        if f"flux_{b}" in injected_truth.columns
        and f"flux_nmgy_{b}" in photometry.columns
        and f"flux_nmgy_err_{b}" in photometry.columns
    ]


def pull_table(
    photometry: pd.DataFrame,
    injected_truth: pd.DataFrame,
    *,
    threshold: float,
    fwhm_px_by_objid: Mapping | None = None,
    bands: Sequence[str] | None = None,
    host_truth: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per band of each injected clump recovered at ``score >= threshold``.

    Parameters
    ----------
    photometry : pandas.DataFrame
        Photometry of the candidates on the injected cutouts: ``objid``,
        ``x``, ``y``, ``score`` and per band ``flux_nmgy_<b>``,
        ``flux_nmgy_err_<b>`` (nanomaggies).
    injected_truth : pandas.DataFrame
        Truth of the injected cutouts: ``objid``, ``x``, ``y``, ``flux_<b>``
        (observed nanomaggies) and a bool ``injected`` (rows without it, e.g.
        a synthetic galaxy's own clumps, take part in the matching only).
    threshold : float
        Score threshold of a recovery (the catalogue's).
    fwhm_px_by_objid : mapping, optional
        objid -> r-band PSF FWHM in cutout pixels, for the 0.75 x FWHM match.
    bands : sequence of str, optional
        Bands to use; default every band with both a true and a measured flux.
    host_truth : pandas.DataFrame, optional
        The hosts' own sources (the survey's truth: ``objid``, ``x``, ``y``,
        ``flux_<b>``), cutout frame, for the ``blended`` column.

    Returns
    -------
    pandas.DataFrame
        ``objid``, ``source_id`` (when the truth has it), ``band``,
        ``flux_true``, ``flux``, ``flux_err`` (nanomaggies), ``snr_true`` =
        flux_true / flux_err, ``pull``, ``offset_fwhm`` (distance of the
        candidate from the true position in r-band FWHM; NaN without a FWHM),
        ``blended`` (another source within :data:`PULL_BLEND_FWHM` FWHM,
        brighter in the band than ``flux_err``).
    """
    for frame, name, cols in (
        (photometry, "photometry", ("objid", "x", "y", "score")),
        (injected_truth, "injected truth", ("objid", "x", "y")),
    ):
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            raise InputError(f"{name} table lacks column(s) {', '.join(missing)}")
    if bands is None:
        bands = pull_bands(photometry, injected_truth)
    tru = injected_truth.assign(objid=injected_truth["objid"].astype(str)).reset_index(drop=True)
    phot = photometry.assign(objid=photometry["objid"].astype(str))
    phot = phot[phot["objid"].isin(set(tru["objid"]))].reset_index(drop=True)
    matched = match_catalogues(phot, tru, fwhm_px_by_objid)
    rows = matched["truth_index"].to_numpy()
    keep = (rows >= 0) & (matched["score"].to_numpy(float) >= threshold)
    if "injected" in tru.columns:
        injected = tru["injected"].fillna(False).to_numpy(bool)
        keep &= np.where(rows >= 0, injected[np.clip(rows, 0, None)], False)
    det, t_rows = matched[keep], rows[keep]
    fwhm = det["objid"].map(dict(fwhm_px_by_objid or {})).to_numpy(float)
    # The FWHM of the matching: the mapping's, else the candidate's, else the clump's.
    if "fwhm_r_px" in det.columns:
        fwhm = np.where(np.isfinite(fwhm), fwhm, det["fwhm_r_px"].to_numpy(float))
    if "fwhm_r_px" in tru.columns:
        fwhm = np.where(np.isfinite(fwhm), fwhm, tru["fwhm_r_px"].to_numpy(float)[t_rows])
    offset = det["match_distance_px"].to_numpy(float) / fwhm
    true_xy = tru[["x", "y"]].to_numpy(float)[t_rows]
    # Other sources near each recovered clump: the injected cutout's other
    # candidates, and the host's own truth where there is one.
    others = [phot.drop(index=det.index)]
    if host_truth is not None and len(host_truth):
        host = host_truth.assign(objid=host_truth["objid"].astype(str))
        if "injected" in host.columns:
            host = host[~host["injected"].fillna(False).astype(bool)]
        others.append(host.rename(columns={f"flux_{b}": f"flux_nmgy_{b}" for b in bands}))
    parts = []
    for band in bands:
        true = tru[f"flux_{band}"].to_numpy(float)[t_rows]
        flux = det[f"flux_nmgy_{band}"].to_numpy(float)
        err = det[f"flux_nmgy_err_{band}"].to_numpy(float)
        blended = _blended(det["objid"].to_numpy(), true_xy, fwhm, err, others, band)
        ok = np.isfinite(true) & np.isfinite(flux) & np.isfinite(err) & (err > 0)
        part = pd.DataFrame(
            {
                "objid": det["objid"].to_numpy()[ok],
                "band": band,
                "flux_true": true[ok],
                "flux": flux[ok],
                "flux_err": err[ok],
            }
        )
        if "source_id" in tru.columns:
            part.insert(1, "source_id", tru["source_id"].to_numpy()[t_rows][ok])
        part["snr_true"] = part["flux_true"] / part["flux_err"]
        part["pull"] = (part["flux"] - part["flux_true"]) / part["flux_err"]
        part["offset_fwhm"] = offset[ok]
        part["blended"] = blended[ok]
        parts.append(part)
    if not parts:
        columns = [
            "objid",
            "band",
            "flux_true",
            "flux",
            "flux_err",
            "snr_true",
            "pull",
            "offset_fwhm",
            "blended",
        ]
        return pd.DataFrame(columns=columns)
    return pd.concat(parts, ignore_index=True)


def _blended(
    objids: np.ndarray,
    xy: np.ndarray,
    fwhm: np.ndarray,
    err: np.ndarray,
    others: Sequence[pd.DataFrame],
    band: str,
) -> np.ndarray:
    """True where a source of ``others`` (same objid) lies within PULL_BLEND_FWHM, brighter than ``err``."""
    out = np.zeros(len(objids), dtype=bool)
    radius = PULL_BLEND_FWHM * np.where(np.isfinite(fwhm), fwhm, np.inf)
    for frame in others:
        if not len(frame) or f"flux_nmgy_{band}" not in frame.columns:
            continue
        groups = {k: g for k, g in frame.groupby(frame["objid"].astype(str), sort=False)}
        for k, objid in enumerate(objids):
            near = groups.get(str(objid))
            if near is None:
                continue
            dist = np.hypot(near["x"].to_numpy(float) - xy[k, 0], near["y"].to_numpy(float) - xy[k, 1])
            bright = near[f"flux_nmgy_{band}"].to_numpy(float) > err[k]
            out[k] |= bool(np.any((dist < radius[k]) & bright))
    return out


def pull_summary(
    pulls: pd.DataFrame,
    *,
    bands: Sequence[str] | None = None,
    min_snr: float = PULL_MIN_SNR,
    threshold: float | None = None,
) -> dict:
    """The ``photometry_pulls`` block of ``metrics.json``.

    Parameters
    ----------
    pulls : pandas.DataFrame
        :func:`pull_table`.
    bands : sequence of str, optional
        Bands to report, those without a clump too (default: the table's).
    min_snr : float
        Only rows with ``snr_true > min_snr`` count.
    threshold : float, optional
        The score threshold used by :func:`pull_table`, recorded in the block.

    Returns
    -------
    dict
        ``min_snr``, ``threshold``, ``target_std``, ``centred_fwhm`` and
        ``bands`` (every recovery), ``centred`` (those within
        ``centred_fwhm``) and ``isolated`` (centred and not ``blended``;
        the block that the error model is judged on): per band ``n``, ``median``, ``std``, ``robust_std``
        (``mad_std``), ``median_frac_error`` (median of flux / flux_true - 1)
        and ``within_target`` (std inside ``target_std``); NaN statistics when
        no clump passes.
    """
    out = {
        "min_snr": float(min_snr),
        "threshold": None if threshold is None else float(threshold),
        "target_std": list(PULL_TARGET_STD),
        "definition": "(flux_nmgy_b - true observed flux_b) / flux_nmgy_err_b of matched injected clumps "
        "with true flux / error > min_snr, at the candidates' positions",
        "centred_fwhm": PULL_CENTRED_FWHM,
        "blend_fwhm": PULL_BLEND_FWHM,
        "bands": {},
        "centred": {},
        "isolated": {},
    }
    if bands is None:
        bands = list(dict.fromkeys(pulls["band"]))
    bright = pulls[pulls["snr_true"] > min_snr]
    offset = bright["offset_fwhm"] if "offset_fwhm" in bright.columns else pd.Series(np.nan, bright.index)
    blended = bright["blended"] if "blended" in bright.columns else pd.Series(False, bright.index)
    blended = blended.fillna(False).astype(bool)
    for band in bands:
        centred = (bright["band"] == band) & (offset < PULL_CENTRED_FWHM)
        out["bands"][str(band)] = _stats(bright[bright["band"] == band])
        out["centred"][str(band)] = _stats(bright[centred])
        out["isolated"][str(band)] = _stats(bright[centred & ~blended])
    return out


def _stats(rows: pd.DataFrame) -> dict:
    pull = rows["pull"].to_numpy(float)
    frac = (rows["flux"] / rows["flux_true"] - 1.0).to_numpy(float)
    n = int(pull.size)
    std = float(np.std(pull, ddof=1)) if n > 1 else float("nan")
    return {
        "n": n,
        "median": float(np.median(pull)) if n else float("nan"),
        "std": std,
        "robust_std": float(mad_std(pull)) if n > 1 else float("nan"),
        "median_frac_error": float(np.median(frac)) if n else float("nan"),
        "within_target": bool(PULL_TARGET_STD[0] <= std <= PULL_TARGET_STD[1]) if n > 1 else None,
    }
