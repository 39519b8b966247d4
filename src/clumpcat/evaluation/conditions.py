"""Observing conditions of each galaxy, measured on its cutout, and the metrics per condition.

A detector that works only at one depth, one seeing and one PSF shape makes a
catalogue nobody can use on another survey (issue 10). The condition of each
galaxy is therefore measured from its cutout alone, not from simulator truth,
so the same table can be made for any survey:

- **sky-noise tier**: the r-band sky noise per pixel -- the median of
  ``sqrt(1 / IVAR)`` over the pixels outside the host segment, or
  ``astropy.stats.mad_std`` of those pixels when the cutout has no IVAR --
  scaled to SDSS's 0.396" pixel and divided by the nominal SDSS r-band noise
  (:data:`NOMINAL_SKY_SIGMA_R`), then assigned to the nearest of
  :data:`SKY_NOISE_TIERS` in log;
- **seeing bin**: the r-band ``PSF_FWHM`` (arcsec) in :data:`SEEING_EDGES`;
- **PSF shape**: where the cutout carries a ``PSF_R`` image, the fraction of
  its light outside a radius of 1.5 x its half-maximum FWHM, less the same
  fraction for a Gaussian of that FWHM on the same pixel grid (the *wing
  excess*), binned by :data:`PSF_WING_EDGES`; ``'unknown'`` without an image.

Completeness and purity are then counted per tier, bin and shape at one score
threshold, for any detector, from the matching already made by
:func:`clumpcat.matching.match_catalogues`.

Positions are in the *cutout* frame (FITS pixels, 0-based).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.stats import mad_std

from clumpcat.constants import SDSS_PIXEL_SCALE
from clumpcat.errors import ClumpcatError, ClumpcatWarning, InputError
from clumpcat.matching import ONE_SIGMA, binomial_interval, truth_match_scores
from clumpcat.paths import objid_path
from clumpcat.survey.cutouts import Cutout, read_cutout
from clumpcat.survey.hostsegment import host_galaxy_mask
from clumpcat.survey.psf import draw_psf, encircled_energy, measure_fwhm
from clumpcat.survey.segments import read_segments

__all__ = [
    "NOMINAL_SKY_SIGMA_R",
    "SKY_NOISE_TIERS",
    "SEEING_EDGES",
    "PSF_WING_RADIUS_FWHM",
    "PSF_WING_EDGES",
    "PSF_SHAPES",
    "CONDITION_AXES",
    "UNKNOWN",
    "sky_noise",
    "sky_noise_tier",
    "tier_label",
    "seeing_bin",
    "psf_wing_excess",
    "psf_shape",
    "stored_host_masks",
    "measure_conditions",
    "conditions_table",
    "stored_host_masks",
    "condition_bins",
    "completeness_purity_by_condition",
    "conditions_block",
]

log = logging.getLogger(__name__)

#: Nominal SDSS r-band sky noise per 0.396" pixel (nanomaggy), as measured on
#: a real SDSS frame (issue 10); the simulator's ``observe.sky_sigma('r')``,
#: derived from the 5-sigma depth, is 0.0332.
NOMINAL_SKY_SIGMA_R = 0.034
#: Sky-noise tiers in units of the nominal noise: deep coadds (x0.3), dark
#: sky (x0.6), nominal (x1), bright sky (x1.6) and the worst SDSS fields (x2.2).
SKY_NOISE_TIERS: tuple[float, ...] = (0.3, 0.6, 1.0, 1.6, 2.2)
#: Edges (arcsec) of the r-band seeing bins: <1.2, 1.2-1.6, 1.6-2.0, >=2.0.
SEEING_EDGES: tuple[float, ...] = (1.2, 1.6, 2.0)
#: The wing measure counts the light outside this many half-maximum FWHM.
PSF_WING_RADIUS_FWHM = 1.5
#: Edges of the wing excess (fraction of the flux beyond a Gaussian's) between
#: the PSF shapes (measured on pixel-integrated profiles of FWHM 2.5-5 px): a
#: Gaussian has 0; a Moffat of beta 6 to 4, 0.02-0.05 (beta 4.765, the
#: simulator's nominal: 0.03); a double Gaussian with 8-20% of the flux in a
#: wing twice as wide, 0.015-0.035; a Moffat of beta 3.5, about 0.06; of beta
#: 2.5, 0.12.
PSF_WING_EDGES: tuple[float, ...] = (0.01, 0.06)
#: Names of the PSF shapes, in order of wing excess, then the missing case.
PSF_SHAPES: tuple[str, ...] = ("gaussian-like", "moffat", "strong wings")
#: Label of a condition that could not be measured.
UNKNOWN = "unknown"
#: Condition columns of :func:`conditions_table`, in the order they are reported.
CONDITION_AXES: tuple[str, ...] = ("sky_tier", "seeing_bin", "psf_shape")


# --------------------------------------------------------------------------
# One galaxy
# --------------------------------------------------------------------------


def sky_noise(image: np.ndarray, ivar: np.ndarray | None = None, sky: np.ndarray | None = None) -> float:
    """Per-pixel sky noise of one band, in the image's units.

    Parameters
    ----------
    image : ndarray
        2-D image.
    ivar : ndarray, optional
        Inverse variance of ``image``; when given the noise is the median of
        ``1 / sqrt(ivar)`` over the sky pixels (pixels with ``ivar <= 0`` are
        masked and left out).
    sky : ndarray of bool, optional
        True on sky pixels (outside the host and its neighbours). Default:
        every pixel.

    Returns
    -------
    float
        The noise; without ``ivar``, ``mad_std`` of the finite sky pixels,
        which ignores the few stars and background galaxies among them. NaN
        when there are no usable pixels.
    """
    image = np.asarray(image, dtype=np.float64)
    use = np.isfinite(image) if sky is None else (np.asarray(sky, bool) & np.isfinite(image))
    if ivar is not None:
        ivar = np.asarray(ivar, dtype=np.float64)
        good = use & np.isfinite(ivar) & (ivar > 0)
        if not good.any():
            return float("nan")
        return float(np.median(1.0 / np.sqrt(ivar[good])))
    if use.sum() < 10:
        return float("nan")
    return float(mad_std(image[use]))


def sky_noise_tier(ratio: float, tiers: Sequence[float] = SKY_NOISE_TIERS) -> float:
    """The tier nearest in log to a noise ratio (NaN for a non-positive or NaN ratio)."""
    if not (np.isfinite(ratio) and ratio > 0):
        return float("nan")
    tiers = np.asarray(tiers, dtype=float)
    return float(tiers[int(np.argmin(np.abs(np.log(tiers) - np.log(ratio))))])


def tier_label(tier: float) -> str:
    """``'x0.6'``, ``'x1'``, ... for a tier; :data:`UNKNOWN` for NaN."""
    return UNKNOWN if not np.isfinite(tier) else f"x{tier:g}"


def _seeing_labels(edges: Sequence[float]) -> list[str]:
    edges = [float(e) for e in edges]
    labels = [f'<{edges[0]:.1f}"']
    labels += [f'{lo:.1f}-{hi:.1f}"' for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    return labels + [f'>={edges[-1]:.1f}"']


def seeing_bin(fwhm_arcsec: float, edges: Sequence[float] = SEEING_EDGES) -> str:
    """Seeing bin of an r-band PSF FWHM in arcsec, e.g. ``'1.2-1.6"'``."""
    if not (np.isfinite(fwhm_arcsec) and fwhm_arcsec > 0):
        return UNKNOWN
    return _seeing_labels(edges)[int(np.searchsorted(np.asarray(edges, float), fwhm_arcsec, side="right"))]


def psf_wing_excess(psf: np.ndarray, radius_fwhm: float = PSF_WING_RADIUS_FWHM) -> float:
    """Fraction of a PSF's light beyond ``radius_fwhm`` FWHM, less a Gaussian's.

    Parameters
    ----------
    psf : ndarray
        Normalised PSF image (odd side, centred, unit sum; the cutout contract).
    radius_fwhm : float
        Radius of the aperture in units of the PSF's half-maximum FWHM.

    Returns
    -------
    float
        ``(1 - EE_psf(r)) - (1 - EE_gauss(r))`` with ``r = radius_fwhm x FWHM``,
        the Gaussian drawn pixel-integrated at the FWHM measured on ``psf`` on
        a stamp of the same size, so that pixelisation and stamp truncation
        cancel. About 0 for a Gaussian and positive for PSFs with wings.
    """
    psf = np.asarray(psf, dtype=np.float64)
    fwhm = measure_fwhm(psf)
    radius = radius_fwhm * fwhm
    half = (min(psf.shape) - 1) // 2
    # measure_fwhm sees the pixel-integrated core: a Gaussian's FWHM grows in
    # quadrature by the pixel's (1/12 px^2 of variance), so undo that first.
    sigma2 = (fwhm / 2.3548200450309493) ** 2 - 1.0 / 12.0
    gauss_fwhm = 2.3548200450309493 * np.sqrt(max(sigma2, 0.04))
    gauss = draw_psf("gaussian", gauss_fwhm, half_width=half)
    pad = ((psf.shape[0] - gauss.shape[0]) // 2, (psf.shape[1] - gauss.shape[1]) // 2)
    gauss = np.pad(gauss, ((pad[0], pad[0]), (pad[1], pad[1])))
    return float(encircled_energy(gauss, radius) - encircled_energy(psf, radius))


def psf_shape(psf: np.ndarray | None, edges: Sequence[float] = PSF_WING_EDGES) -> str:
    """PSF shape name from its wing excess; :data:`UNKNOWN` without an image."""
    if psf is None:
        return UNKNOWN
    return PSF_SHAPES[int(np.searchsorted(np.asarray(edges, float), psf_wing_excess(psf), side="right"))]


def _detection_band(cutout: Cutout) -> str | None:
    for band in ("r", "i", "g"):
        if band in cutout.images:
            return band
    return None


def _unknown_row(objid: str, fwhm_arcsec: float = float("nan")) -> dict:
    """A galaxy's conditions before (or without) measuring them."""
    return {
        "objid": objid,
        "condition_band": "",
        "sky_sigma": float("nan"),
        "noise_source": "",
        "sky_noise_ratio": float("nan"),
        "sky_tier": UNKNOWN,
        "psf_fwhm_arcsec": fwhm_arcsec,
        "seeing_bin": seeing_bin(fwhm_arcsec),
        "psf_wing_excess": float("nan"),
        "psf_shape": UNKNOWN,
    }


def measure_conditions(
    cutout: Cutout, nominal_sky_sigma: float = NOMINAL_SKY_SIGMA_R, host_mask: np.ndarray | None = None
) -> dict:
    """Sky noise, seeing and PSF shape of one cutout, measured in the r band.

    Parameters
    ----------
    cutout : Cutout
        The galaxy's cutout (falls back to i, then g, when it has no r band).
    nominal_sky_sigma : float
        Nominal sky noise per 0.396" pixel (nanomaggy) that defines tier x1.
    host_mask : ndarray of bool, optional
        The galaxy's stored host segment (``segments.npz``, the one every
        stage uses); segmented here with the default settings when not given.

    Returns
    -------
    dict
        ``objid``; ``condition_band``; ``sky_sigma`` (nanomaggy per 0.396"
        pixel: the per-pixel noise times ``pixel_scale / 0.396``, so that a
        finer pixel grid of the same depth reads the same); ``noise_source``
        (``'ivar'`` or ``'pixels'``); ``sky_noise_ratio``; ``sky_tier``
        (label); ``psf_fwhm_arcsec``; ``seeing_bin``; ``psf_wing_excess``
        (NaN without a PSF image); ``psf_shape``.
    """
    band = _detection_band(cutout)
    row = _unknown_row(str(cutout.objid))
    if band is None:
        return row
    row["condition_band"] = band
    image = cutout.images[band]
    fwhm_px = cutout.fwhm_pixels(band)
    host = host_mask
    if host is None or host.shape != image.shape:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ClumpcatWarning)
            host = host_galaxy_mask(image, fwhm_px)
    # Sky = outside the host segment; a galaxy filling the cutout leaves the
    # whole image, which overestimates the noise only through its Poisson part.
    sky = ~host if (~host).sum() >= 0.1 * host.size else None
    ivar = cutout.ivar.get(band)
    sigma = sky_noise(image, ivar, sky) * cutout.pixel_scale / SDSS_PIXEL_SCALE
    ratio = sigma / nominal_sky_sigma
    fwhm = float(cutout.psf_fwhm[band])
    psf = cutout.psf.get(band)
    row.update(
        sky_sigma=sigma,
        noise_source="ivar" if ivar is not None else "pixels",
        sky_noise_ratio=ratio,
        sky_tier=tier_label(sky_noise_tier(ratio)),
        psf_fwhm_arcsec=fwhm,
        seeing_bin=seeing_bin(fwhm),
        psf_wing_excess=psf_wing_excess(psf) if psf is not None else float("nan"),
        psf_shape=psf_shape(psf),
    )
    return row


def stored_host_masks(paths: Iterable[str | Path]) -> dict[str, np.ndarray]:
    """objid -> host segment from the shards' ``segments.npz`` (galaxies with one found).

    The conditions then measure the sky outside the same host that
    post-processing, photometry and the baseline used, without segmenting
    every galaxy again.
    """
    masks = {}
    for path in paths:
        for objid, segment in read_segments(path).segments.items():
            if segment.found:
                masks[objid] = segment.mask
    return masks


def conditions_table(
    cutout_dir: str | Path | None,
    objids: Iterable,
    galaxies: pd.DataFrame | None = None,
    host_masks: Mapping[str, np.ndarray] | None = None,
) -> pd.DataFrame:
    """Conditions of every galaxy, one cutout read per galaxy.

    Parameters
    ----------
    cutout_dir : str or Path or None
        Folder of ``{objid}.fits`` cutouts; None measures nothing.
    objids : iterable of str
        The galaxies.
    galaxies : pandas.DataFrame, optional
        Galaxy table; its ``psf_fwhm_r`` (arcsec) gives the seeing bin of a
        galaxy whose cutout cannot be read.
    host_masks : mapping of str to ndarray, optional
        objid -> stored host segment (:func:`stored_host_masks`); galaxies
        without one are segmented here.

    Returns
    -------
    pandas.DataFrame
        One row per objid with the keys of :func:`measure_conditions`;
        conditions that could not be measured are :data:`UNKNOWN`.
    """
    fallback = {}
    if galaxies is not None and "psf_fwhm_r" in galaxies.columns:
        fallback = dict(zip(galaxies["objid"].astype(str), galaxies["psf_fwhm_r"].astype(float), strict=True))
    rows, unread = [], []
    for objid in (str(o) for o in objids):
        row = None
        if cutout_dir is not None:
            try:
                cutout = read_cutout(objid_path(cutout_dir, objid, ".fits"))
                mask = host_masks.get(objid) if host_masks is not None else None
                row = measure_conditions(cutout, host_mask=mask)
            except (ClumpcatError, OSError, ValueError) as exc:
                unread.append(f"{objid} ({exc})")
        if row is None:
            row = _unknown_row(objid, fallback.get(objid, float("nan")))
        rows.append(row)
    if unread:
        log.warning(
            "conditions of %d galaxies left unknown (cutout unreadable): %s",
            len(unread),
            "; ".join(unread[:5]) + (" ..." if len(unread) > 5 else ""),
        )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------
# Metrics per condition
# --------------------------------------------------------------------------


def condition_bins(axis: str) -> list[str]:
    """The bins of one condition axis, in reporting order (with :data:`UNKNOWN` last)."""
    if axis == "sky_tier":
        return [tier_label(t) for t in SKY_NOISE_TIERS] + [UNKNOWN]
    if axis == "seeing_bin":
        return _seeing_labels(SEEING_EDGES) + [UNKNOWN]
    if axis == "psf_shape":
        return [*PSF_SHAPES, UNKNOWN]
    raise InputError(f"condition axis must be one of {', '.join(CONDITION_AXES)}, got {axis!r}")


def _fraction(k: int, n: int, confidence: float) -> tuple[float, float, float]:
    lo, hi = binomial_interval([k], [n], confidence)
    return (k / n if n else float("nan")), float(lo[0]), float(hi[0])


def completeness_purity_by_condition(
    matched: pd.DataFrame,
    truth: pd.DataFrame,
    conditions: pd.DataFrame,
    *,
    threshold: float,
    truth_subset: str | None = None,
    confidence: float = ONE_SIGMA,
) -> pd.DataFrame:
    """Completeness and purity at one threshold per sky tier, seeing bin and PSF shape.

    Parameters
    ----------
    matched : pandas.DataFrame
        Detections with their match (:func:`clumpcat.matching.match_catalogues`
        of these same ``truth`` rows): ``objid``, ``score``, ``truth_index``,
        ``matched``.
    truth : pandas.DataFrame
        The truth given to the matching (same row order): ``objid``;
        ``flux_ratio_u`` for the 3% column; ``truth_subset`` if named.
    conditions : pandas.DataFrame
        :func:`conditions_table` of the evaluated galaxies.
    threshold : float
        Detections with ``score >= threshold`` count.
    truth_subset : str, optional
        Bool truth column restricting the clumps counted in completeness
        (e.g. ``'detectable'``); every clump still takes part in the matching.
    confidence : float
        Coverage of the Clopper-Pearson intervals.

    Returns
    -------
    pandas.DataFrame
        One row per axis and bin that holds a galaxy: ``axis``, ``bin``,
        ``threshold``, ``n_galaxies``, ``n_truth``, ``n_tp``,
        ``completeness``, ``completeness_lo``, ``completeness_hi``,
        ``n_truth_3pct``, ``n_tp_3pct``, ``completeness_3pct`` (clumps with
        u-band flux ratio >= 3%, issue 10), ``n_det``, ``n_det_matched``,
        ``purity``, ``purity_lo``, ``purity_hi``.
    """
    missing = [c for c in ("objid", *CONDITION_AXES) if c not in conditions.columns]
    if missing:
        raise InputError(f"conditions table lacks column(s) {', '.join(missing)}")
    t_obj = truth["objid"].astype(str).to_numpy()
    t_scores = truth_match_scores(matched, len(truth))
    counted = np.ones(len(truth), bool)
    if truth_subset is not None:
        counted = truth[truth_subset].fillna(False).to_numpy(bool)
    bright = (
        truth["flux_ratio_u"].to_numpy(float) >= 0.03
        if "flux_ratio_u" in truth.columns
        else np.zeros(len(truth), bool)
    )
    d_obj = matched["objid"].astype(str).to_numpy()
    above = matched["score"].to_numpy(float) >= threshold
    d_matched = matched["matched"].to_numpy(bool)
    cond = conditions.assign(objid=conditions["objid"].astype(str)).set_index("objid")
    rows = []
    for axis in CONDITION_AXES:
        of_galaxy = cond[axis].astype(str)
        t_bin = pd.Series(t_obj).map(of_galaxy).fillna(UNKNOWN).to_numpy()
        d_bin = pd.Series(d_obj).map(of_galaxy).fillna(UNKNOWN).to_numpy()
        for name in condition_bins(axis):
            n_gal = int((of_galaxy == name).sum())
            if n_gal == 0:
                continue
            sel_t = (t_bin == name) & counted
            sel_d = (d_bin == name) & above
            found = t_scores >= threshold
            n_truth, n_tp = int(sel_t.sum()), int((sel_t & found).sum())
            n3, k3 = int((sel_t & bright).sum()), int((sel_t & bright & found).sum())
            n_det, n_ok = int(sel_d.sum()), int((sel_d & d_matched).sum())
            c, c_lo, c_hi = _fraction(n_tp, n_truth, confidence)
            p, p_lo, p_hi = _fraction(n_ok, n_det, confidence)
            rows.append(
                {
                    "axis": axis,
                    "bin": name,
                    "threshold": float(threshold),
                    "n_galaxies": n_gal,
                    "n_truth": n_truth,
                    "n_tp": n_tp,
                    "completeness": c,
                    "completeness_lo": c_lo,
                    "completeness_hi": c_hi,
                    "n_truth_3pct": n3,
                    "n_tp_3pct": k3,
                    "completeness_3pct": k3 / n3 if n3 else float("nan"),
                    "n_det": n_det,
                    "n_det_matched": n_ok,
                    "purity": p,
                    "purity_lo": p_lo,
                    "purity_hi": p_hi,
                }
            )
    return pd.DataFrame(rows)


def conditions_block(
    tables: dict[str, pd.DataFrame], conditions: pd.DataFrame, *, truth_set: str, threshold: float
) -> dict:
    """The ``conditions`` block of ``metrics.json``.

    Parameters
    ----------
    tables : dict of str to pandas.DataFrame
        Detector name -> :func:`completeness_purity_by_condition`.
    conditions : pandas.DataFrame
        :func:`conditions_table` of the evaluated galaxies.
    truth_set : str
        Truth set counted in completeness ('detectable' or 'all').
    threshold : float
        The score threshold used.

    Returns
    -------
    dict
        ``threshold``, ``truth_set``, ``nominal_sky_sigma_r``, the tier,
        seeing and wing definitions, ``n_galaxies`` per axis and bin, and per
        detector ``{axis: {bin: row without axis/bin/threshold}}``.
    """
    block = {
        "threshold": float(threshold),
        "truth_set": truth_set,
        "measured_from": "cutouts (r band): sky noise outside the host segment, PSF_FWHM, PSF_R image",
        "nominal_sky_sigma_r": NOMINAL_SKY_SIGMA_R,
        "sky_noise_tiers": list(SKY_NOISE_TIERS),
        "seeing_edges_arcsec": list(SEEING_EDGES),
        "psf_wing": {
            "measure": f"fraction of light beyond {PSF_WING_RADIUS_FWHM} x FWHM minus a Gaussian's",
            "edges": list(PSF_WING_EDGES),
            "shapes": list(PSF_SHAPES),
        },
        "n_galaxies": {
            axis: {k: int(v) for k, v in conditions[axis].astype(str).value_counts().items()}
            for axis in CONDITION_AXES
        },
    }
    drop = ("axis", "bin", "threshold")
    for name, table in tables.items():
        block[name] = {
            axis: {
                r["bin"]: {k: v for k, v in r.items() if k not in drop}
                for r in table[table["axis"] == axis].to_dict(orient="records")
            }
            for axis in CONDITION_AXES
        }
    return block
