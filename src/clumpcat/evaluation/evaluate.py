"""Evaluation against truth: COCO metrics, completeness, purity, selection function.

``clumpcat evaluate`` compares the post-processed detections of the model (and
of the classical baseline, when given) with a truth table of the same
galaxies and writes, for both detectors in one set of tables:

- the COCO AP, AR and F1 of the boxes (Section 4.4.1, Appendix D);
- completeness and purity against the score threshold 0.1 to 0.9, with the
  0.75 x PSF-FWHM centroid match (Section 4.4.2), overall, per label and per
  bin of log10 u-band clump/host flux ratio (Section 4.4.3), with binomial
  (Clopper-Pearson, one-sigma) intervals;
- the headline: completeness and purity at score >= 0.5 and at the
  threshold of best F1, against the target of 0.8 for both;
- optionally the injection-recovery selection function: completeness of
  clumps injected into the run's own cutouts against flux ratio and host
  r magnitude, and the photometric pulls of those clumps per band
  (:mod:`clumpcat.evaluation.pulls`);
- completeness and purity at the catalogue's score threshold per sky-noise
  tier, seeing bin and PSF shape measured on each cutout
  (:mod:`clumpcat.evaluation.conditions`).

Completeness is given over all true clumps and over the ``detectable`` ones
(when the truth has that column). The **headline uses the detectable truth**:
clumps injected below the noise cannot be found by any detector, and counting
them measures the simulator, not the detector. Purity is the same for both:
every detection that matches any true clump, detectable or not, is true.

Positions are in the *cutout* frame (FITS pixels, 0-based).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from clumpcat.coco_metrics import coco_ap_ar
from clumpcat.constants import LABEL_BOX_FWHM, MATCH_FWHM, SCORE_THRESHOLD, SDSS_PIXEL_SCALE
from clumpcat.errors import InputError
from clumpcat.evaluation.conditions import (
    completeness_purity_by_condition,
    conditions_block,
    conditions_table,
    stored_host_masks,
)
from clumpcat.evaluation.pulls import pull_bands, pull_summary, pull_table
from clumpcat.manifests import MANIFEST_EPILOG, ManifestPaths, manifest_help
from clumpcat.matching import (
    DEFAULT_THRESHOLDS,
    ONE_SIGMA,
    binomial_interval,
    completeness_purity,
    match_catalogues,
    truth_match_scores,
)
from clumpcat.survey.galaxies import validate_galaxies
from clumpcat.tables import ColumnDoc, read_tables, write_table

__all__ = [
    "HEADLINE_THRESHOLD",
    "TARGET_COMPLETENESS",
    "TARGET_PURITY",
    "SELECTION_FLUX_RATIO_BINS",
    "SWEEP_COLUMNS",
    "truth_boxes",
    "detection_boxes",
    "coco_by_threshold",
    "evaluate_detector",
    "selection_function",
    "snr_cut_cost",
    "evaluate_run",
    "configure_parser",
    "run",
]

log = logging.getLogger(__name__)

#: Score threshold of the headline numbers (Section 5: detections with score >= 0.5).
HEADLINE_THRESHOLD = 0.5
#: Completeness the product aims at, at the headline threshold.
TARGET_COMPLETENESS = 0.8
#: Purity the product aims at, at the headline threshold.
TARGET_PURITY = 0.8
#: Finer log10 flux-ratio bins (0.25 dex) of the injection-recovery curves.
SELECTION_FLUX_RATIO_BINS: np.ndarray = np.round(np.arange(-3.0, 0.001, 0.25), 2)
#: Width of the host r-magnitude bins of the selection function (mag).
HOST_MAG_BIN = 0.5

#: Units and descriptions of the completeness/purity sweep table.
SWEEP_COLUMNS: dict[str, ColumnDoc] = {
    "detector": ("", "'model' (Faster R-CNN) or 'baseline' (classical peak finder)"),
    "truth_set": ("", "'all' true clumps or only the 'detectable' ones in completeness"),
    "group": ("", "'all', 'label' or 'flux_ratio'"),
    "label": ("", "Clump label of the row ('normal', 'odd'; empty for other groups)"),
    "log_flux_ratio_lo": ("dex", "Lower edge of the log10 u-band clump/host flux-ratio bin"),
    "log_flux_ratio_hi": ("dex", "Upper edge of the log10 u-band clump/host flux-ratio bin"),
    "threshold": ("", "Detections with score >= threshold count"),
    "n_truth": ("", "True clumps counted in completeness"),
    "n_tp": ("", "Of those, recovered by a detection within 0.75 PSF FWHM"),
    "n_det": ("", "Detections at or above the threshold"),
    "n_det_matched": ("", "Of those, matching a true clump"),
    "completeness": ("", "n_tp / n_truth"),
    "completeness_lo": ("", "Lower one-sigma Clopper-Pearson bound of completeness"),
    "completeness_hi": ("", "Upper one-sigma Clopper-Pearson bound of completeness"),
    "purity": ("", "n_det_matched / n_det"),
    "purity_lo": ("", "Lower one-sigma Clopper-Pearson bound of purity"),
    "purity_hi": ("", "Upper one-sigma Clopper-Pearson bound of purity"),
    "f1": ("", "2 completeness purity / (completeness + purity)"),
}


# --------------------------------------------------------------------------
# Boxes for the COCO metrics
# --------------------------------------------------------------------------


def truth_boxes(truth: pd.DataFrame, box_fwhm: float = LABEL_BOX_FWHM) -> pd.DataFrame:
    """True clumps with XYXY boxes in the cutout frame.

    Uses ``box_x0, box_y0, box_x1, box_y1`` when the truth has them, else a
    square of side ``box_fwhm`` x ``fwhm_r_px`` around ``x, y`` (the Clump
    Scout boxes are 2.5 x the PSF FWHM, DESIGN.md). Boxes are in edge
    coordinates: a pixel-centre position ``x`` is the box centre ``x + 0.5``.
    """
    out = truth.copy()
    if all(c in out.columns for c in ("box_x0", "box_y0", "box_x1", "box_y1")):
        return out
    if "fwhm_r_px" not in out.columns:
        raise InputError("truth needs box_x0..box_y1 or fwhm_r_px to make boxes for the COCO metrics")
    half = 0.5 * box_fwhm * out["fwhm_r_px"].to_numpy(float)
    x = out["x"].to_numpy(float) + 0.5
    y = out["y"].to_numpy(float) + 0.5
    out["box_x0"], out["box_y0"], out["box_x1"], out["box_y1"] = x - half, y - half, x + half, y + half
    return out


def _boxes_by_image(frame: pd.DataFrame, objids, with_scores: bool) -> dict:
    cols = ["box_x0", "box_y0", "box_x1", "box_y1"]
    groups = frame.groupby("objid", sort=False).indices if len(frame) else {}
    boxes = frame[cols].to_numpy(float) if len(frame) else np.zeros((0, 4))
    out = {}
    for objid in objids:
        rows = groups.get(objid, np.zeros(0, dtype=int))
        entry = {"boxes": boxes[rows]}
        if "label" in frame.columns:
            entry["labels"] = frame["label"].to_numpy(dtype=object)[rows].astype(str)
        if with_scores:
            entry["scores"] = frame["score"].to_numpy(float)[rows]
        out[objid] = entry
    return out


def detection_boxes(detections: pd.DataFrame, objids) -> dict:
    """``{objid: {boxes, scores, labels}}`` of detections for :func:`coco_ap_ar`."""
    missing = [c for c in ("box_x0", "box_y0", "box_x1", "box_y1") if c not in detections.columns]
    if missing:
        raise InputError(f"detections lack box column(s) {', '.join(missing)}")
    return _boxes_by_image(detections, objids, with_scores=True)


def coco_by_threshold(
    detections: pd.DataFrame, truth: pd.DataFrame, objids, thresholds=DEFAULT_THRESHOLDS
) -> pd.DataFrame:
    """COCO AP, AR and F1 (category-agnostic) at each score threshold.

    Returns
    -------
    pandas.DataFrame
        ``threshold`` (NaN for all detections), ``AP``, ``AP50``, ``AP75``,
        ``AR``, ``AR50``, ``F1``, ``F1_50``, ``n_det``.
    """
    objids = [str(o) for o in objids]
    gt = _boxes_by_image(truth_boxes(truth), objids, with_scores=False)
    dt = detection_boxes(detections, objids)
    rows = []
    for t in [None, *np.asarray(thresholds, dtype=float)]:
        m = coco_ap_ar(dt, gt, score_threshold=t)
        rows.append(
            {
                "threshold": np.nan if t is None else float(t),
                **{k: m[k] for k in ("AP", "AP50", "AP75", "AR", "AR50", "F1", "F1_50", "n_det")},
            }
        )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------
# Completeness and purity of one detector
# --------------------------------------------------------------------------


def _clean(value):
    """JSON-safe: NaN -> None, numpy scalars -> Python."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _row_summary(row: pd.Series) -> dict:
    keys = (
        "threshold",
        "n_truth",
        "n_tp",
        "n_det",
        "n_det_matched",
        "completeness",
        "completeness_lo",
        "completeness_hi",
        "purity",
        "purity_lo",
        "purity_hi",
        "f1",
    )
    return {k: (int(row[k]) if k.startswith("n_") else float(row[k])) for k in keys if k in row.index}


def _with_flux_ratio(detections: pd.DataFrame) -> pd.DataFrame:
    """Accept the catalogue's ``clump_flux_ratio`` as the measured ``flux_ratio_u``."""
    if "flux_ratio_u" not in detections.columns and "clump_flux_ratio" in detections.columns:
        return detections.assign(flux_ratio_u=detections["clump_flux_ratio"])
    return detections


def evaluate_detector(
    detections: pd.DataFrame,
    truth: pd.DataFrame,
    objids,
    *,
    fwhm_px_by_objid: Mapping | None = None,
    thresholds=DEFAULT_THRESHOLDS,
    headline_threshold: float = HEADLINE_THRESHOLD,
    confidence: float = ONE_SIGMA,
    coco: bool = True,
) -> tuple[dict, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """All metrics of one detector on one set of galaxies.

    Parameters
    ----------
    detections : pandas.DataFrame
        Detections contract (cutout frame): objid, x, y, score, label, boxes.
    truth : pandas.DataFrame
        Truth contract: objid, x, y, label, flux_ratio_u, fwhm_r_px and
        optionally detectable, kind.
    objids : iterable of str
        The evaluated galaxies; a galaxy without truth rows contributes only
        false positives, one without detections only misses.
    fwhm_px_by_objid : mapping, optional
        objid -> r-band PSF FWHM in cutout pixels (else ``fwhm_r_px``).
    thresholds : array_like
        Score thresholds of the sweep.
    headline_threshold : float
        Threshold of the headline numbers (0.5).
    confidence : float
        Coverage of the binomial intervals.
    coco : bool
        Compute the COCO metrics (needs boxes).

    Returns
    -------
    summary : dict
        JSON-ready: ``coco`` (AP, AR, F1 over all scores), ``headline``
        (at ``headline_threshold``, per truth set), ``best_f1`` (per truth
        set), ``per_label`` and ``per_flux_ratio`` (at the headline
        threshold, per truth set), ``per_kind`` (completeness per truth
        ``kind``).
    sweep : pandas.DataFrame
        Long table with the columns of :data:`SWEEP_COLUMNS` but
        ``detector``.
    coco_table : pandas.DataFrame
        :func:`coco_by_threshold` (empty when ``coco`` is False).
    matched : pandas.DataFrame
        The detections of the evaluated galaxies with their match
        (:func:`clumpcat.matching.match_catalogues`).
    """
    objids = [str(o) for o in objids]
    thresholds = np.unique(np.append(np.asarray(thresholds, dtype=float), headline_threshold).round(6))
    keep = set(objids)
    dets = _with_flux_ratio(detections).copy()
    dets["objid"] = dets["objid"].astype(str)
    dets = dets[dets["objid"].isin(keep)].reset_index(drop=True)
    tru = truth.copy()
    tru["objid"] = tru["objid"].astype(str)
    tru = tru[tru["objid"].isin(keep)].reset_index(drop=True)
    matched = match_catalogues(dets, tru, fwhm_px_by_objid)
    truth_sets = {"all": None}
    if "detectable" in tru.columns:
        truth_sets["detectable"] = "detectable"
    parts, summary = (
        [],
        {"headline": {}, "best_f1": {}, "per_label": {}, "per_flux_ratio": {}, "per_kind": {}},
    )
    common = {"thresholds": thresholds, "confidence": confidence, "matched": matched}
    for name, subset in truth_sets.items():
        overall = completeness_purity(dets, tru, truth_subset=subset, **common)
        parts.append(overall.assign(truth_set=name, group="all"))
        if "label" in tru.columns and "label" in dets.columns:
            per_label = completeness_purity(dets, tru, by="label", truth_subset=subset, **common)
            parts.append(per_label.assign(truth_set=name, group="label"))
            at = per_label[np.isclose(per_label["threshold"], headline_threshold)]
            summary["per_label"][name] = {r["label"]: _row_summary(r) for _, r in at.iterrows()}
        if "flux_ratio_u" in tru.columns:
            per_bin = completeness_purity(dets, tru, by="flux_ratio", truth_subset=subset, **common)
            parts.append(per_bin.assign(truth_set=name, group="flux_ratio"))
            at = per_bin[np.isclose(per_bin["threshold"], headline_threshold)]
            summary["per_flux_ratio"][name] = [
                {
                    "log_flux_ratio_lo": float(r["log_flux_ratio_lo"]),
                    "log_flux_ratio_hi": float(r["log_flux_ratio_hi"]),
                    **_row_summary(r),
                }
                for _, r in at.iterrows()
            ]
        head = overall[np.isclose(overall["threshold"], headline_threshold)].iloc[0]
        summary["headline"][name] = _row_summary(head)
        f1 = overall["f1"].to_numpy(float)
        if np.isfinite(f1).any():
            summary["best_f1"][name] = _row_summary(overall.iloc[int(np.nanargmax(f1))])
    if "kind" in tru.columns:
        t_scores = truth_match_scores(matched, len(tru))
        kinds = tru["kind"].astype(str).to_numpy()
        for kind in sorted(set(kinds)):
            sel = kinds == kind
            n, k = int(sel.sum()), int(np.sum(t_scores[sel] >= headline_threshold))
            lo, hi = binomial_interval([k], [n], confidence)
            summary["per_kind"][kind] = {
                "threshold": headline_threshold,
                "n_truth": n,
                "n_tp": k,
                "completeness": k / n if n else float("nan"),
                "completeness_lo": float(lo[0]),
                "completeness_hi": float(hi[0]),
            }
    sweep = pd.concat(parts, ignore_index=True)
    for col in ("label", "log_flux_ratio_lo", "log_flux_ratio_hi"):
        if col not in sweep.columns:
            sweep[col] = np.nan if col != "label" else ""
    sweep["label"] = sweep["label"].fillna("").astype(str)
    sweep = sweep[[c for c in SWEEP_COLUMNS if c in sweep.columns and c != "detector"]]
    coco_table = pd.DataFrame()
    if coco:
        coco_table = coco_by_threshold(dets, tru, objids, thresholds)
        allscores = coco_table[coco_table["threshold"].isna()].iloc[0]
        summary["coco"] = {k: allscores[k] for k in ("AP", "AP50", "AP75", "AR", "AR50", "F1", "F1_50")}
        per_class = (
            coco_ap_ar(
                detection_boxes(dets, objids),
                _boxes_by_image(truth_boxes(tru), objids, with_scores=False),
                per_class=True,
            )["per_class"]
            if ("label" in tru.columns and "label" in dets.columns)
            else {}
        )
        summary["coco"]["per_class"] = per_class
    summary["n_det"] = len(dets)
    return summary, sweep, coco_table, matched


# --------------------------------------------------------------------------
# Injection-recovery selection function
# --------------------------------------------------------------------------


def _binned_completeness(scores, values, edges, threshold, confidence, name) -> pd.DataFrame:
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (values >= lo) & (values < hi)
        n, k = int(sel.sum()), int(np.sum(scores[sel] >= threshold))
        rows.append((lo, hi, n, k))
    frame = pd.DataFrame(rows, columns=[f"{name}_lo", f"{name}_hi", "n_injected", "n_recovered"])
    with np.errstate(invalid="ignore", divide="ignore"):
        frame["completeness"] = np.where(
            frame["n_injected"] > 0, frame["n_recovered"] / frame["n_injected"].clip(lower=1), np.nan
        )
    frame["completeness_lo"], frame["completeness_hi"] = binomial_interval(
        frame["n_recovered"], frame["n_injected"], confidence
    )
    frame.insert(0, "threshold", threshold)
    return frame


def selection_function(
    detections: pd.DataFrame,
    injected: pd.DataFrame,
    galaxies: pd.DataFrame,
    *,
    threshold: float = HEADLINE_THRESHOLD,
    fwhm_px_by_objid: Mapping | None = None,
    flux_ratio_bins=SELECTION_FLUX_RATIO_BINS,
    host_mag_bins=None,
    confidence: float = ONE_SIGMA,
) -> dict[str, pd.DataFrame]:
    """Completeness of injected clumps against flux ratio and host magnitude.

    Parameters
    ----------
    detections : pandas.DataFrame
        Detections on the injected cutouts (detections contract).
    injected : pandas.DataFrame
        Truth of the injected cutouts: objid, x, y, flux_ratio_u (linear,
        u band, clump/host). When it has a bool column ``injected``, only
        those rows count (the others, e.g. a synthetic galaxy's own clumps,
        still take part in the matching).
    galaxies : pandas.DataFrame
        objid and ``host_mag_r`` (observed AB), for the magnitude curve.
    threshold : float
        Score threshold of a recovery.
    fwhm_px_by_objid : mapping, optional
        objid -> r-band PSF FWHM in cutout pixels.
    flux_ratio_bins : array_like
        Edges in log10 flux ratio (default -3 to 0 by 0.25 dex).
    host_mag_bins : array_like, optional
        Edges in host r magnitude; default 0.5-mag bins over the range.
    confidence : float
        Coverage of the Clopper-Pearson intervals.

    Returns
    -------
    dict of str to pandas.DataFrame
        ``flux_ratio``: columns threshold, log_flux_ratio_lo,
        log_flux_ratio_hi, n_injected, n_recovered, completeness,
        completeness_lo, completeness_hi; ``host_mag_r``: the same with
        host_mag_r_lo/hi (absent when galaxies lack ``host_mag_r``).
    """
    objids = galaxies["objid"].astype(str).tolist()
    keep = set(objids)
    dets = detections.assign(objid=detections["objid"].astype(str))
    dets = dets[dets["objid"].isin(keep)].reset_index(drop=True)
    inj = injected.assign(objid=injected["objid"].astype(str))
    inj = inj[inj["objid"].isin(keep)].reset_index(drop=True)
    matched = match_catalogues(dets, inj, fwhm_px_by_objid)
    scores = truth_match_scores(matched, len(inj))
    counted = (
        inj["injected"].fillna(False).to_numpy(bool) if "injected" in inj.columns else np.ones(len(inj), bool)
    )
    scores, inj = scores[counted], inj[counted].reset_index(drop=True)
    out = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        logr = np.log10(inj["flux_ratio_u"].to_numpy(float))
    out["flux_ratio"] = _binned_completeness(
        scores, logr, np.asarray(flux_ratio_bins, float), threshold, confidence, "log_flux_ratio"
    )
    if "host_mag_r" in galaxies.columns:
        mags = galaxies.assign(objid=galaxies["objid"].astype(str)).set_index("objid")["host_mag_r"]
        mag = inj["objid"].map(mags).to_numpy(float)
        if host_mag_bins is None:
            finite = mag[np.isfinite(mag)]
            if finite.size:
                lo = math.floor(finite.min() / HOST_MAG_BIN) * HOST_MAG_BIN
                hi = math.floor(finite.max() / HOST_MAG_BIN) * HOST_MAG_BIN + HOST_MAG_BIN
                host_mag_bins = np.round(np.arange(lo, hi + 1e-9, HOST_MAG_BIN), 3)
            else:
                host_mag_bins = np.array([0.0, 1.0])
        out["host_mag_r"] = _binned_completeness(
            scores, mag, np.asarray(host_mag_bins, float), threshold, confidence, "host_mag_r"
        )
    return out


def _above_snr(detections: pd.DataFrame, min_snr: float | None) -> pd.DataFrame:
    """Rows with ``detection_snr >= min_snr`` (all rows without a cut or the column; NaN kept)."""
    if min_snr is None or "detection_snr" not in detections.columns:
        return detections
    snr = pd.to_numeric(detections["detection_snr"], errors="coerce")
    return detections[~(snr < min_snr)].reset_index(drop=True)


def snr_cut_cost(
    detections: pd.DataFrame,
    injected: pd.DataFrame,
    galaxies: pd.DataFrame,
    min_snr: float,
    *,
    threshold: float = HEADLINE_THRESHOLD,
    fwhm_px_by_objid: Mapping | None = None,
    with_cut: pd.DataFrame | None = None,
) -> dict:
    """Completeness of injected clumps per flux-ratio bin with and without the S/N cut.

    Parameters
    ----------
    detections : pandas.DataFrame
        Candidates on the injected cutouts, post-processed without the cut
        (``detection_snr`` column).
    injected, galaxies, threshold, fwhm_px_by_objid
        As in :func:`selection_function`.
    min_snr : float
        The cut, ``detection_snr >= min_snr``.
    with_cut : pandas.DataFrame, optional
        The flux-ratio table of the selection function with the cut, if
        already computed.

    Returns
    -------
    dict
        ``min_snr``, ``threshold`` and ``flux_ratio``: one record per bin
        with ``log_flux_ratio_lo/hi``, ``n_injected``, ``completeness_without_cut``,
        ``completeness_with_cut`` and ``completeness_lost`` (their difference).
    """
    common = {"threshold": threshold, "fwhm_px_by_objid": fwhm_px_by_objid}
    without = selection_function(detections, injected, galaxies, **common)["flux_ratio"]
    if with_cut is None:
        kept = _above_snr(detections, min_snr)
        with_cut = selection_function(kept, injected, galaxies, **common)["flux_ratio"]
    rows = []
    for (_, a), (_, b) in zip(without.iterrows(), with_cut.iterrows(), strict=True):
        rows.append(
            {
                "log_flux_ratio_lo": float(a["log_flux_ratio_lo"]),
                "log_flux_ratio_hi": float(a["log_flux_ratio_hi"]),
                "n_injected": int(a["n_injected"]),
                "completeness_without_cut": a["completeness"],
                "completeness_with_cut": b["completeness"],
                "completeness_lost": a["completeness"] - b["completeness"],
            }
        )
    return {"min_snr": float(min_snr), "threshold": float(threshold), "flux_ratio": rows}


# --------------------------------------------------------------------------
# The whole evaluation
# --------------------------------------------------------------------------


def _fwhm_from_galaxies(galaxies: pd.DataFrame, pixel_scale: float) -> dict[str, float]:
    """objid -> r-band FWHM in pixels from ``fwhm_r_px`` or ``psf_fwhm_r`` (arcsec)."""
    if "fwhm_r_px" in galaxies.columns:
        values = galaxies["fwhm_r_px"].to_numpy(float)
    elif "psf_fwhm_r" in galaxies.columns:
        values = galaxies["psf_fwhm_r"].to_numpy(float) / pixel_scale
    else:
        return {}
    return {
        str(o): float(v) for o, v in zip(galaxies["objid"], values, strict=True) if np.isfinite(v) and v > 0
    }


def evaluate_run(
    clumps: pd.DataFrame,
    truth: pd.DataFrame,
    galaxies: pd.DataFrame,
    out_dir: str | Path,
    *,
    baseline: pd.DataFrame | None = None,
    injected_truth: pd.DataFrame | None = None,
    injected_clumps: pd.DataFrame | None = None,
    injected_photometry: pd.DataFrame | None = None,
    conditions: pd.DataFrame | None = None,
    thresholds=DEFAULT_THRESHOLDS,
    headline_threshold: float = HEADLINE_THRESHOLD,
    score_threshold: float = SCORE_THRESHOLD,
    pixel_scale: float = SDSS_PIXEL_SCALE,
    metrics_path: str | Path | None = None,
    min_snr: float | None = None,
) -> dict:
    """Evaluate the model (and the baseline) and write every table.

    Parameters
    ----------
    clumps : pandas.DataFrame
        The model's post-processed candidates (every score kept).
    truth : pandas.DataFrame
        Truth of the same galaxies.
    galaxies : pandas.DataFrame
        Validated galaxy table: the evaluated galaxies.
    out_dir : str or Path
        Output folder.
    baseline : pandas.DataFrame, optional
        Baseline candidates of the same galaxies.
    injected_truth, injected_clumps : pandas.DataFrame, optional
        Injection-recovery truth and the model's candidates on the injected
        cutouts, for the selection function.
    injected_photometry : pandas.DataFrame, optional
        Photometry of the candidates on the injected cutouts, for the pulls
        (with ``injected_truth``).
    conditions : pandas.DataFrame, optional
        :func:`clumpcat.evaluation.conditions.conditions_table` of the
        galaxies; default: seeing from the galaxy table's ``psf_fwhm_r``
        only, the other conditions unknown.
    thresholds : array_like
        Score thresholds of the sweeps.
    headline_threshold : float
        Threshold of the headline numbers.
    score_threshold : float
        The catalogue's score threshold: that of the per-condition metrics
        and of the photometric pulls.
    pixel_scale : float
        arcsec per pixel, to turn ``psf_fwhm_r`` into pixels when neither
        table has ``fwhm_r_px``.
    metrics_path : str or Path, optional
        Where to write ``metrics.json`` (default ``out_dir/metrics.json``).
    min_snr : float, optional
        The catalogue's detection S/N cut (``postprocess.min_snr``). The
        injected sample is post-processed without it; here it is applied
        to ``injected_clumps`` (their ``detection_snr``) for the selection
        function, and :func:`snr_cut_cost` reports what it costs.

    Returns
    -------
    dict
        The content of ``metrics.json``.

    Notes
    -----
    Files written in ``out_dir``: ``metrics.json``;
    ``completeness_purity.{parquet,csv}`` (every sweep, both detectors, long
    format, columns of :data:`SWEEP_COLUMNS`); ``coco.{parquet,csv}`` (COCO
    metrics per threshold and detector); ``summary.csv`` (one row per
    detector and truth set: completeness, purity, F1 at the headline and the
    best-F1 threshold, COCO AP/AR/F1); ``matched_{detector}.parquet``
    (each detection with its match); with injection,
    ``selection_flux_ratio.{parquet,csv}`` and
    ``selection_host_mag_r.{parquet,csv}``, with injected photometry
    ``photometry_pulls.parquet``; ``conditions.{parquet,csv}`` (metrics per
    condition and detector) and ``conditions_galaxies.parquet`` (the
    condition of each galaxy).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    objids = galaxies["objid"].astype(str).tolist()
    # The PSF FWHM written into each cutout (carried by the detections) comes
    # first; the galaxy table's arcsec value assumes ``pixel_scale``.
    fwhm = {}
    for table in (clumps, baseline):
        if table is not None and "fwhm_r_px" in table.columns and len(table):
            per = table.groupby(table["objid"].astype(str))["fwhm_r_px"].first().dropna()
            for objid, value in per.items():
                fwhm.setdefault(objid, float(value))
    for objid, value in _fwhm_from_galaxies(galaxies, pixel_scale).items():
        fwhm.setdefault(objid, value)
    detectors = {"model": clumps}
    if baseline is not None:
        detectors["baseline"] = baseline
    truth = truth.assign(objid=truth["objid"].astype(str))
    in_run = truth["objid"].isin(set(objids))
    if (~in_run).any():
        log.warning(
            "%d truth rows belong to galaxies outside the galaxy table; ignored", int((~in_run).sum())
        )
    truth = truth[in_run].reset_index(drop=True)
    metrics = {
        "n_galaxies": len(objids),
        "n_truth": len(truth),
        "n_truth_detectable": int(truth["detectable"].fillna(False).astype(bool).sum())
        if "detectable" in truth.columns
        else None,
        "match": {
            "radius_fwhm": MATCH_FWHM,
            "rule": "centroid distance < 0.75 x r-band PSF FWHM, one-to-one, greedy by score (Section 4.4.2)",
        },
        "intervals": "Clopper-Pearson binomial, central one-sigma (68.27%)",
        "headline_truth_set": "detectable" if "detectable" in truth.columns else "all",
        "headline_threshold": headline_threshold,
        "target": {"completeness": TARGET_COMPLETENESS, "purity": TARGET_PURITY},
        "thresholds": [float(t) for t in np.asarray(thresholds, float)],
        "detectors": {},
    }
    sweeps, cocos, summary_rows, matches = [], [], [], {}
    for name, dets in detectors.items():
        log.info("evaluating %s: %d candidates against %d true clumps", name, len(dets), len(truth))
        has_boxes = all(c in dets.columns for c in ("box_x0", "box_y0", "box_x1", "box_y1"))
        summary, sweep, coco_table, matched = evaluate_detector(
            dets,
            truth,
            objids,
            fwhm_px_by_objid=fwhm,
            thresholds=thresholds,
            headline_threshold=headline_threshold,
            coco=has_boxes,
        )
        metrics["detectors"][name] = summary
        sweeps.append(sweep.assign(detector=name))
        if len(coco_table):
            cocos.append(coco_table.assign(detector=name))
        write_table(matched, out_dir / f"matched_{name}.parquet")
        matches[name] = matched
        for truth_set, head in summary["headline"].items():
            best = summary["best_f1"].get(truth_set, {})
            coco = summary.get("coco", {})
            summary_rows.append(
                {
                    "detector": name,
                    "truth_set": truth_set,
                    "threshold": head["threshold"],
                    "completeness": head["completeness"],
                    "completeness_lo": head["completeness_lo"],
                    "completeness_hi": head["completeness_hi"],
                    "purity": head["purity"],
                    "purity_lo": head["purity_lo"],
                    "purity_hi": head["purity_hi"],
                    "f1": head["f1"],
                    "best_f1_threshold": best.get("threshold"),
                    "best_f1": best.get("f1"),
                    "best_f1_completeness": best.get("completeness"),
                    "best_f1_purity": best.get("purity"),
                    "coco_AP": coco.get("AP"),
                    "coco_AR": coco.get("AR"),
                    "coco_F1": coco.get("F1"),
                }
            )
    head_set = metrics["headline_truth_set"]
    model_head = metrics["detectors"]["model"]["headline"][head_set]
    metrics["meets_target"] = bool(
        (model_head["completeness"] or 0) >= TARGET_COMPLETENESS
        and (model_head["purity"] or 0) >= TARGET_PURITY
    )
    sweep_all = pd.concat(sweeps, ignore_index=True)
    sweep_all = sweep_all[["detector"] + [c for c in sweep_all.columns if c != "detector"]]
    write_table(sweep_all, out_dir / "completeness_purity.parquet", SWEEP_COLUMNS)
    sweep_all.to_csv(out_dir / "completeness_purity.csv", index=False)
    if cocos:
        coco_all = pd.concat(cocos, ignore_index=True)
        write_table(coco_all, out_dir / "coco.parquet")
        coco_all.to_csv(out_dir / "coco.csv", index=False)
    pd.DataFrame(summary_rows).to_csv(out_dir / "summary.csv", index=False)

    metrics["conditions"] = _conditions(matches, truth, galaxies, conditions, score_threshold, out_dir)
    if injected_truth is not None and injected_photometry is not None:
        pulls = pull_table(
            injected_photometry,
            injected_truth,
            threshold=score_threshold,
            fwhm_px_by_objid=fwhm,
            host_truth=truth,
        )
        write_table(pulls, out_dir / "photometry_pulls.parquet")
        bands = pull_bands(injected_photometry, injected_truth)
        metrics["photometry_pulls"] = pull_summary(pulls, bands=bands, threshold=score_threshold)

    if injected_truth is not None and injected_clumps is not None:
        inj_fwhm = dict(fwhm)
        kept = _above_snr(injected_clumps, min_snr)
        sel = selection_function(
            kept, injected_truth, galaxies, threshold=headline_threshold, fwhm_px_by_objid=inj_fwhm
        )
        if min_snr is not None and "detection_snr" in injected_clumps.columns:
            metrics["snr_cut_cost"] = snr_cut_cost(
                injected_clumps,
                injected_truth,
                galaxies,
                min_snr,
                threshold=headline_threshold,
                fwhm_px_by_objid=inj_fwhm,
                with_cut=sel["flux_ratio"],
            )
        metrics["selection_function"] = {}
        for key, table in sel.items():
            write_table(table, out_dir / f"selection_{key}.parquet")
            table.to_csv(out_dir / f"selection_{key}.csv", index=False)
            metrics["selection_function"][key] = table.to_dict(orient="records")

    metrics = _clean(metrics)
    path = Path(metrics_path) if metrics_path else out_dir / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(metrics, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    _log_headline(metrics)
    return metrics


def _conditions(matches, truth, galaxies, conditions, threshold, out_dir) -> dict:
    """Metrics per observing condition of every detector; writes the tables."""
    objids = galaxies["objid"].astype(str).tolist()
    if conditions is None:
        conditions = conditions_table(None, objids, galaxies)
    conditions = conditions.assign(objid=conditions["objid"].astype(str))
    conditions = conditions[conditions["objid"].isin(set(objids))].reset_index(drop=True)
    write_table(conditions, out_dir / "conditions_galaxies.parquet")
    truth_set = "detectable" if "detectable" in truth.columns else "all"
    subset = "detectable" if truth_set == "detectable" else None
    tables = {
        name: completeness_purity_by_condition(
            matched, truth, conditions, threshold=threshold, truth_subset=subset
        )
        for name, matched in matches.items()
    }
    long = pd.concat([t.assign(detector=n) for n, t in tables.items()], ignore_index=True)
    long = long[["detector"] + [c for c in long.columns if c != "detector"]]
    write_table(long, out_dir / "conditions.parquet")
    long.to_csv(out_dir / "conditions.csv", index=False)
    return conditions_block(tables, conditions, truth_set=truth_set, threshold=threshold)


def _log_headline(metrics: dict) -> None:
    head_set = metrics["headline_truth_set"]
    for name, det in metrics["detectors"].items():
        h = det["headline"].get(head_set, {})
        log.info(
            "%s at score >= %.2f (%s truth): completeness %s, purity %s, F1 %s; COCO AP %s AR %s",
            name,
            metrics["headline_threshold"],
            head_set,
            _fmt(h.get("completeness")),
            _fmt(h.get("purity")),
            _fmt(h.get("f1")),
            _fmt(det.get("coco", {}).get("AP")),
            _fmt(det.get("coco", {}).get("AR")),
        )


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``clumpcat evaluate``."""
    # Each list option also takes @MANIFEST (clumpcat.manifests), as the workflow passes them.
    many = {"nargs": "+", "metavar": "TABLE", "action": ManifestPaths}
    parser.epilog = MANIFEST_EPILOG
    parser.add_argument(
        "--clumps", required=True, **many, help="the model's post-processed candidates (clumps.parquet)"
    )
    parser.add_argument("--truth", required=True, **many, help="truth table(s) of the same galaxies")
    parser.add_argument("--galaxies", required=True, **many, help="galaxy table(s): the evaluated galaxies")
    parser.add_argument("--baseline", **many, help="baseline candidates of the same galaxies")
    parser.add_argument("--injected-truth", **many, help="truth of the injection-recovery cutouts")
    parser.add_argument("--injected-clumps", **many, help="the model's candidates on the injected cutouts")
    parser.add_argument(
        "--injected-photometry", **many, help="photometry of the candidates on the injected cutouts (pulls)"
    )
    parser.add_argument(
        "--cutouts", help="folder of the evaluated galaxies' cutouts, to measure their observing conditions"
    )
    parser.add_argument(
        "--segments",
        nargs="+",
        metavar="NPZ",
        action=ManifestPaths,
        help=manifest_help("the shards' segments.npz: the host segments the conditions' sky excludes"),
    )
    parser.add_argument("--out-dir", required=True, help="folder for metrics.json and the tables")
    parser.add_argument("--metrics", help="write metrics.json here instead of OUT_DIR/metrics.json")
    parser.add_argument(
        "--threshold", type=float, default=HEADLINE_THRESHOLD, help="score threshold of the headline (0.5)"
    )
    parser.add_argument(
        "--score-threshold",
        type=float,
        default=SCORE_THRESHOLD,
        help=f"the catalogue's score threshold, of the per-condition metrics and the pulls ({SCORE_THRESHOLD})",
    )
    parser.add_argument(
        "--pixel-scale",
        type=float,
        default=SDSS_PIXEL_SCALE,
        help="arcsec per cutout pixel, used only when no table has fwhm_r_px (default 0.396)",
    )
    parser.add_argument(
        "--min-snr",
        type=float,
        help="the catalogue's detection S/N cut (postprocess.min_snr): applied to the injected "
        "candidates (post-processed without it) and its cost reported as snr_cut_cost",
    )


def _read_required(specs, option: str) -> pd.DataFrame:
    table = read_tables(specs)
    if table is None:
        raise InputError(f"{option}: no table given")
    return table


def run(args: argparse.Namespace) -> int:
    """Run ``clumpcat evaluate``."""
    if (args.injected_truth is None) != (args.injected_clumps is None):
        raise InputError("--injected-truth and --injected-clumps go together")
    for option in ("threshold", "score_threshold"):
        if not 0 <= getattr(args, option) <= 1:
            raise InputError(f"--{option.replace('_', '-')} must lie in [0, 1], got {getattr(args, option)}")
    if args.injected_photometry and not args.injected_truth:
        raise InputError("--injected-photometry needs --injected-truth")
    if args.cutouts and not Path(args.cutouts).is_dir():
        raise InputError(f"--cutouts: {args.cutouts} is not a folder")
    galaxies = validate_galaxies(
        _read_required(args.galaxies, "--galaxies"), source=" ".join(map(str, args.galaxies))
    )
    clumps = _read_required(args.clumps, "--clumps")
    truth = _read_required(args.truth, "--truth")
    for frame, name in ((clumps, "clumps"), (truth, "truth")):
        missing = [c for c in ("objid", "x", "y") if c not in frame.columns]
        if missing:
            raise InputError(f"{name} table lacks column(s) {', '.join(missing)}")
    if "score" not in clumps.columns:
        raise InputError("clumps table lacks column 'score'")
    baseline = read_tables(args.baseline) if args.baseline else None
    inj_truth = read_tables(args.injected_truth) if args.injected_truth else None
    inj_clumps = read_tables(args.injected_clumps) if args.injected_clumps else None
    inj_phot = read_tables(args.injected_photometry) if args.injected_photometry else None
    conditions = (
        conditions_table(
            args.cutouts,
            galaxies["objid"].astype(str),
            galaxies,
            host_masks=stored_host_masks(args.segments) if args.segments else None,
        )
        if args.cutouts
        else None
    )
    evaluate_run(
        clumps,
        truth,
        galaxies,
        args.out_dir,
        baseline=baseline,
        injected_truth=inj_truth,
        injected_clumps=inj_clumps,
        injected_photometry=inj_phot,
        conditions=conditions,
        headline_threshold=args.threshold,
        score_threshold=args.score_threshold,
        pixel_scale=args.pixel_scale,
        metrics_path=args.metrics,
        min_snr=args.min_snr,
    )
    return 0
