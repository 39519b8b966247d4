"""Matching detections to true clumps, and completeness and purity.

A detection recovers a true clump when their centres lie closer than
``MATCH_FWHM`` (0.75) times the image's PSF FWHM (Section 4.4.2). Clumps are
unresolved in SDSS, so a centroid distance replaces the IoU of the COCO
metrics (Appendix D; see :mod:`clumpcat.coco_metrics` for those).

The matching is one-to-one and greedy in descending detection score: the
highest-scoring detection takes the nearest free true clump within the radius,
then the next detection, and so on. Because of that order, the matching of the
detections above any score threshold ``t`` is the full matching restricted to
those detections. One matching therefore serves the whole threshold sweep
(Section 4.4.2 uses 0.1 to 0.9): at threshold ``t`` a true clump is recovered
when the detection matched to it has ``score >= t``.

Positions are pixels in the *cutout* frame (FITS pixels, 0-based); the FWHM
is the r-band PSF FWHM in cutout pixels.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from clumpcat.constants import LABELS, MATCH_FWHM
from clumpcat.errors import InputError

__all__ = [
    "DEFAULT_THRESHOLDS",
    "FLUX_RATIO_BINS",
    "match_to_truth",
    "match_catalogues",
    "truth_match_scores",
    "binomial_interval",
    "completeness_purity",
]

log = logging.getLogger(__name__)

#: Score thresholds of the completeness/purity sweep (Section 4.4.1, 4.4.2).
DEFAULT_THRESHOLDS: np.ndarray = np.round(np.arange(0.1, 1.0, 0.1), 2)
#: Edges of the log10 u-band clump/host flux-ratio bins, 0.5 dex wide
#: (Section 4.4.3).
FLUX_RATIO_BINS: np.ndarray = np.array([-2.5, -2.0, -1.5, -1.0, -0.5])

#: One-sigma confidence of the default binomial intervals.
ONE_SIGMA = 0.6826894921370859


def match_to_truth(
    det_x,
    det_y,
    det_score,
    truth_x,
    truth_y,
    fwhm_px: float,
    max_fwhm: float = MATCH_FWHM,
) -> tuple[np.ndarray, np.ndarray]:
    """Match one galaxy's detections to its true clumps, one to one.

    Parameters
    ----------
    det_x, det_y : array_like
        Detection centres in cutout pixels (0-based).
    det_score : array_like
        Detection scores; higher scores are matched first.
    truth_x, truth_y : array_like
        True clump centres in cutout pixels (0-based).
    fwhm_px : float
        The image's PSF FWHM in cutout pixels (r band).
    max_fwhm : float
        Match radius in units of ``fwhm_px``; a pair matches when its
        distance is strictly less than ``max_fwhm * fwhm_px``
        (0.75, Section 4.4.2).

    Returns
    -------
    det_truth : ndarray of int
        For each detection, the index of its true clump, or -1.
    truth_matched : ndarray of bool
        For each true clump, whether a detection took it.

    Raises
    ------
    InputError
        If the arrays of one side differ in length or ``fwhm_px`` is not a
        positive finite number.

    Notes
    -----
    Greedy in descending score (ties keep input order); each detection takes
    the nearest true clump not yet taken. Two detections on one clump give one
    true and one false positive.

    Examples
    --------
    >>> det, found = match_to_truth([10.0, 10.5], [10.0, 10.0], [0.9, 0.8],
    ...                             [10.2], [10.0], fwhm_px=4.0)
    >>> det.tolist(), found.tolist()
    ([0, -1], [True])
    """
    dx = np.asarray(det_x, dtype=float).ravel()
    dy = np.asarray(det_y, dtype=float).ravel()
    ds = np.asarray(det_score, dtype=float).ravel()
    tx = np.asarray(truth_x, dtype=float).ravel()
    ty = np.asarray(truth_y, dtype=float).ravel()
    if not (len(dx) == len(dy) == len(ds)):
        raise InputError(f"det_x, det_y and det_score differ in length ({len(dx)}, {len(dy)}, {len(ds)})")
    if len(tx) != len(ty):
        raise InputError(f"truth_x and truth_y differ in length ({len(tx)}, {len(ty)})")
    fwhm = float(fwhm_px)
    if not np.isfinite(fwhm) or fwhm <= 0:
        raise InputError(f"fwhm_px must be a positive finite number of pixels, got {fwhm_px!r}")
    det_truth = np.full(len(dx), -1, dtype=np.int64)
    truth_matched = np.zeros(len(tx), dtype=bool)
    if len(dx) == 0 or len(tx) == 0:
        return det_truth, truth_matched
    radius = max_fwhm * fwhm
    dist = np.hypot(dx[:, None] - tx[None, :], dy[:, None] - ty[None, :])
    dist[~np.isfinite(dist)] = np.inf
    # Section 4.4.2: centroid distance strictly below 0.75 x PSF FWHM.
    dist[dist >= radius] = np.inf
    order = np.argsort(-np.nan_to_num(ds, nan=-np.inf), kind="stable")
    for i in order:
        row = dist[i]
        j = int(np.argmin(row))
        if np.isfinite(row[j]):
            det_truth[i] = j
            truth_matched[j] = True
            dist[:, j] = np.inf
    return det_truth, truth_matched


def _fwhm_lookup(
    objids: Iterable[str],
    detections: pd.DataFrame,
    truth: pd.DataFrame,
    fwhm_px_by_objid: Mapping | None,
) -> dict[str, float]:
    """Per-galaxy PSF FWHM in pixels.

    Precedence: the mapping; the detections' ``fwhm_r_px`` (the r-band PSF
    FWHM of the galaxy); the smallest ``fwhm_r_px`` of the galaxy's true
    sources (for a resolved source that column may include its own size, so
    the smallest is the closest to the PSF).
    """
    found: dict[str, float] = {}
    if fwhm_px_by_objid is not None:
        for k, v in dict(fwhm_px_by_objid).items():
            if v is not None and np.isfinite(float(v)) and float(v) > 0:
                found[str(k)] = float(v)
    for frame, how in ((detections, "first"), (truth, "min")):
        if "fwhm_r_px" in frame.columns and len(frame):
            values = pd.to_numeric(frame["fwhm_r_px"], errors="coerce")
            values = values.where(values > 0)
            per = values.groupby(frame["objid"].astype(str), sort=False).agg(how)
            for k, v in per.items():
                if np.isfinite(v):
                    found.setdefault(str(k), float(v))
    missing = sorted(o for o in objids if not (o in found and np.isfinite(found[o]) and found[o] > 0))
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise InputError(
            f"no positive PSF FWHM in pixels for galaxies {shown}: pass fwhm_px_by_objid "
            "or give the tables a 'fwhm_r_px' column"
        )
    return found


def _check_columns(frame: pd.DataFrame, needed: Iterable[str], name: str) -> None:
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise InputError(f"{name} table lacks column(s) {', '.join(missing)}")


def match_catalogues(
    detections: pd.DataFrame,
    truth: pd.DataFrame,
    fwhm_px_by_objid: Mapping | None = None,
    *,
    max_fwhm: float = MATCH_FWHM,
) -> pd.DataFrame:
    """Match detections to true clumps galaxy by galaxy.

    Parameters
    ----------
    detections : pandas.DataFrame
        Detections contract: at least ``objid``, ``x``, ``y``, ``score``
        (cutout pixels, 0-based).
    truth : pandas.DataFrame
        True clumps: at least ``objid``, ``x``, ``y`` (cutout pixels).
    fwhm_px_by_objid : mapping, optional
        objid -> r-band PSF FWHM in cutout pixels. Galaxies not in it take
        ``fwhm_r_px`` from the detections, else the smallest of the truth's.
    max_fwhm : float
        Match radius in FWHM (0.75, Section 4.4.2).

    Returns
    -------
    pandas.DataFrame
        The detections (same row order, index reset) with added columns:

        - ``truth_index``: positional row of the matched true clump in
          ``truth`` (after ``reset_index``), -1 when unmatched;
        - ``matched``: bool;
        - ``match_distance_px``: distance to that clump in cutout pixels
          (NaN when unmatched);
        - ``match_label``: the true clump's ``label`` (when truth has one);
        - ``match_source_id``: its ``source_id`` (when truth has one).

    Raises
    ------
    InputError
        If a column is missing or a galaxy has no FWHM.

    See Also
    --------
    truth_match_scores : the truth-side view of the same matching.
    """
    _check_columns(detections, ("objid", "x", "y", "score"), "detections")
    _check_columns(truth, ("objid", "x", "y"), "truth")
    dets = detections.reset_index(drop=True).copy()
    tru = truth.reset_index(drop=True)
    dets["objid"] = dets["objid"].astype(str)
    t_objid = tru["objid"].astype(str).to_numpy()
    both = sorted(set(dets["objid"]) & set(t_objid))
    fwhm = _fwhm_lookup(both, dets, tru.assign(objid=t_objid), fwhm_px_by_objid)
    truth_index = np.full(len(dets), -1, dtype=np.int64)
    dist = np.full(len(dets), np.nan)
    t_groups = pd.Series(np.arange(len(tru))).groupby(t_objid).indices
    tx_all = tru["x"].to_numpy(float)
    ty_all = tru["y"].to_numpy(float)
    dx_all = dets["x"].to_numpy(float)
    dy_all = dets["y"].to_numpy(float)
    ds_all = dets["score"].to_numpy(float)
    for objid, d_rows in dets.groupby("objid", sort=False).indices.items():
        t_rows = t_groups.get(objid)
        if t_rows is None:
            continue
        idx, _ = match_to_truth(
            dx_all[d_rows],
            dy_all[d_rows],
            ds_all[d_rows],
            tx_all[t_rows],
            ty_all[t_rows],
            fwhm[objid],
            max_fwhm,
        )
        ok = idx >= 0
        rows = d_rows[ok]
        truth_index[rows] = t_rows[idx[ok]]
        dist[rows] = np.hypot(
            dx_all[rows] - tx_all[truth_index[rows]], dy_all[rows] - ty_all[truth_index[rows]]
        )
    dets["truth_index"] = truth_index
    dets["matched"] = truth_index >= 0
    dets["match_distance_px"] = dist
    for col, out in (("label", "match_label"), ("source_id", "match_source_id")):
        if col in tru.columns:
            values = tru[col].to_numpy(dtype=object)
            column = np.full(len(dets), None, dtype=object)
            ok = truth_index >= 0
            column[ok] = values[truth_index[ok]]
            dets[out] = column
    return dets


def truth_match_scores(matched_detections: pd.DataFrame, n_truth: int) -> np.ndarray:
    """Score of the detection matched to each true clump (NaN when none).

    Parameters
    ----------
    matched_detections : pandas.DataFrame
        Output of :func:`match_catalogues`.
    n_truth : int
        Number of rows of the truth table given to it.

    Returns
    -------
    ndarray of float
        ``score[k]`` of true clump ``k``; it is recovered at threshold ``t``
        when ``score[k] >= t``.
    """
    out = np.full(int(n_truth), np.nan)
    rows = matched_detections["truth_index"].to_numpy()
    ok = rows >= 0
    out[rows[ok]] = matched_detections["score"].to_numpy(float)[ok]
    return out


def binomial_interval(k, n, confidence: float = ONE_SIGMA) -> tuple[np.ndarray, np.ndarray]:
    """Clopper-Pearson (exact) binomial interval of a fraction ``k / n``.

    Parameters
    ----------
    k, n : array_like of int
        Successes and trials.
    confidence : float
        Coverage of the central interval; the default, 0.6827, gives
        one-sigma error bars.

    Returns
    -------
    lo, hi : ndarray of float
        Bounds in [0, 1]; NaN where ``n == 0``. The interval always holds
        ``k / n`` and narrows as ``n`` grows at fixed ``k / n``.

    Notes
    -----
    ``lo = B(alpha/2; k, n-k+1)`` and ``hi = B(1-alpha/2; k+1, n-k)`` with
    ``B`` the beta quantile and ``alpha = 1 - confidence``; ``lo = 0`` when
    ``k = 0`` and ``hi = 1`` when ``k = n`` (Clopper & Pearson 1934). The
    interval is conservative: it covers at least ``confidence``.
    """
    # scipy.stats costs half a second of start-up to every job that imports
    # this module (detect and train, through the validation loop); only the
    # intervals need it.
    from scipy import stats

    if not 0 < confidence < 1:
        raise InputError(f"confidence must lie in (0, 1), got {confidence}")
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    alpha = 1.0 - confidence
    with np.errstate(invalid="ignore", divide="ignore"):
        lo = np.where(k > 0, stats.beta.ppf(alpha / 2, np.maximum(k, 1e-300), n - k + 1), 0.0)
        hi = np.where(k < n, stats.beta.ppf(1 - alpha / 2, k + 1, np.maximum(n - k, 1e-300)), 1.0)
    empty = n <= 0
    lo = np.where(empty, np.nan, lo)
    hi = np.where(empty, np.nan, hi)
    return lo, hi


def _ratio(k, n):
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, k / np.where(n > 0, n, 1), np.nan)


def _sweep(
    truth_scores: np.ndarray,
    truth_count: np.ndarray,
    det_scores: np.ndarray,
    det_matched: np.ndarray,
    thresholds: np.ndarray,
    confidence: float,
    purity_known: bool = True,
) -> pd.DataFrame:
    """Completeness and purity of one subset at every threshold."""
    rows = []
    n_truth = int(truth_count.sum())
    ts = truth_scores[truth_count]
    for t in thresholds:
        n_tp = int(np.sum(ts >= t))
        keep = det_scores >= t
        n_det = int(keep.sum())
        n_det_matched = int(np.sum(det_matched[keep]))
        rows.append((float(t), n_truth, n_tp, n_det, n_det_matched))
    frame = pd.DataFrame(rows, columns=["threshold", "n_truth", "n_tp", "n_det", "n_det_matched"])
    frame["completeness"] = _ratio(frame["n_tp"], frame["n_truth"])
    frame["completeness_lo"], frame["completeness_hi"] = binomial_interval(
        frame["n_tp"], frame["n_truth"], confidence
    )
    if purity_known:
        frame["purity"] = _ratio(frame["n_det_matched"], frame["n_det"])
        frame["purity_lo"], frame["purity_hi"] = binomial_interval(
            frame["n_det_matched"], frame["n_det"], confidence
        )
    else:
        frame["n_det"] = 0
        frame["n_det_matched"] = 0
        for col in ("purity", "purity_lo", "purity_hi"):
            frame[col] = np.nan
    c, p = frame["completeness"].to_numpy(), frame["purity"].to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        frame["f1"] = np.where((c + p) > 0, 2 * c * p / (c + p), 0.0)
    frame.loc[~np.isfinite(c) | ~np.isfinite(p), "f1"] = np.nan
    return frame


def completeness_purity(
    detections: pd.DataFrame,
    truth: pd.DataFrame,
    thresholds=DEFAULT_THRESHOLDS,
    *,
    fwhm_px_by_objid: Mapping | None = None,
    objids: Iterable | None = None,
    max_fwhm: float = MATCH_FWHM,
    confidence: float = ONE_SIGMA,
    by: str | None = None,
    truth_subset: str | None = None,
    flux_ratio_bins=FLUX_RATIO_BINS,
    det_flux_ratio_column: str = "flux_ratio_u",
    matched: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Completeness and purity against the score threshold.

    Parameters
    ----------
    detections : pandas.DataFrame
        Detections contract (``objid, x, y, score``; ``label`` for
        ``by='label'``; ``flux_ratio_u`` — the measured u-band clump/host
        flux ratio, linear — for purity per flux-ratio bin).
    truth : pandas.DataFrame
        True clumps (``objid, x, y``; ``label``, ``flux_ratio_u`` linear,
        ``detectable`` as used).
    thresholds : array_like
        Score thresholds; a detection counts when ``score >= threshold``.
        Default 0.1, 0.2, ..., 0.9 (Section 4.4.1).
    fwhm_px_by_objid : mapping, optional
        objid -> r-band PSF FWHM in cutout pixels (else ``fwhm_r_px``).
    objids : iterable, optional
        The evaluated galaxies. Detections and truth of other galaxies are
        dropped; detections in listed galaxies without truth are false
        positives. Default: every galaxy in either table.
    max_fwhm : float
        Match radius in FWHM (0.75, Section 4.4.2).
    confidence : float
        Coverage of the Clopper-Pearson intervals (default one sigma).
    by : {None, 'label', 'flux_ratio'}
        ``None``: one row per threshold. ``'label'``: rows for each label
        (``normal``, ``odd``); completeness counts true clumps of that label
        found by a detection of any label, purity counts detections of that
        label that match any true clump. ``'flux_ratio'``: rows per bin of
        log10 u-band flux ratio (Section 4.4.3); completeness uses the true
        ratio, purity the detection's ``det_flux_ratio_column`` and is NaN
        when the detections lack it.
    truth_subset : str, optional
        Name of a bool truth column (e.g. ``'detectable'``): only those true
        clumps count in completeness. Every true clump still takes part in
        the matching, so a detection of an excluded clump is not a false
        positive.
    flux_ratio_bins : array_like
        Bin edges in log10 flux ratio (default -2.5 to -0.5 by 0.5 dex).
    det_flux_ratio_column : str
        Detection column with the measured linear u-band flux ratio.
    matched : pandas.DataFrame, optional
        A previous :func:`match_catalogues` result of these same (already
        ``objids``-restricted) tables, to skip the matching.

    Returns
    -------
    pandas.DataFrame
        Group columns (``label``, or ``log_flux_ratio_lo`` and
        ``log_flux_ratio_hi``) then ``threshold``, ``n_truth`` (true clumps
        counted), ``n_tp`` (those recovered), ``n_det`` (detections at or
        above the threshold), ``n_det_matched`` (those matching a true
        clump), ``completeness`` = n_tp / n_truth, ``completeness_lo``,
        ``completeness_hi``, ``purity`` = n_det_matched / n_det,
        ``purity_lo``, ``purity_hi`` and ``f1`` = 2CP / (C + P). Fractions
        with an empty denominator are NaN.

    Raises
    ------
    InputError
        For a missing column, an unknown ``by`` or a galaxy without FWHM.
    """
    if by not in (None, "label", "flux_ratio"):
        raise InputError(f"'by' must be None, 'label' or 'flux_ratio', got {by!r}")
    thresholds = np.atleast_1d(np.asarray(thresholds, dtype=float))
    dets = detections.reset_index(drop=True).copy()
    tru = truth.reset_index(drop=True).copy()
    _check_columns(dets, ("objid", "x", "y", "score"), "detections")
    _check_columns(tru, ("objid", "x", "y"), "truth")
    dets["objid"] = dets["objid"].astype(str)
    tru["objid"] = tru["objid"].astype(str)
    if objids is not None:
        keep = {str(o) for o in objids}
        dets = dets[dets["objid"].isin(keep)].reset_index(drop=True)
        tru = tru[tru["objid"].isin(keep)].reset_index(drop=True)
    if matched is None:
        matched = match_catalogues(dets, tru, fwhm_px_by_objid, max_fwhm=max_fwhm)
    elif len(matched) != len(dets):
        raise InputError("'matched' does not belong to these detections (row counts differ)")
    t_scores = truth_match_scores(matched, len(tru))
    d_scores = matched["score"].to_numpy(float)
    d_matched = matched["matched"].to_numpy(bool)
    counted = np.ones(len(tru), dtype=bool)
    if truth_subset is not None:
        _check_columns(tru, (truth_subset,), "truth")
        counted = tru[truth_subset].fillna(False).to_numpy(bool)

    if by is None:
        return _sweep(t_scores, counted, d_scores, d_matched, thresholds, confidence)

    parts = []
    if by == "label":
        _check_columns(tru, ("label",), "truth")
        _check_columns(dets, ("label",), "detections")
        t_label = tru["label"].astype(str).to_numpy()
        d_label = matched["label"].astype(str).to_numpy()
        for lab in LABELS:
            sel_d = d_label == lab
            part = _sweep(
                t_scores,
                counted & (t_label == lab),
                d_scores[sel_d],
                d_matched[sel_d],
                thresholds,
                confidence,
            )
            part.insert(0, "label", lab)
            parts.append(part)
        return pd.concat(parts, ignore_index=True)

    _check_columns(tru, ("flux_ratio_u",), "truth")
    edges = np.asarray(flux_ratio_bins, dtype=float)
    if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise InputError(f"flux_ratio_bins must be increasing edges, got {edges.tolist()}")
    with np.errstate(divide="ignore", invalid="ignore"):
        t_logr = np.log10(tru["flux_ratio_u"].to_numpy(float))
    have_det_ratio = det_flux_ratio_column in matched.columns
    if have_det_ratio:
        with np.errstate(divide="ignore", invalid="ignore"):
            d_logr = np.log10(matched[det_flux_ratio_column].to_numpy(float))
    else:
        log.info(
            "detections have no %r column: purity per flux-ratio bin is not computed", det_flux_ratio_column
        )
        d_logr = np.full(len(matched), np.nan)
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel_t = (t_logr >= lo) & (t_logr < hi)
        sel_d = (d_logr >= lo) & (d_logr < hi)
        part = _sweep(
            t_scores,
            counted & sel_t,
            d_scores[sel_d],
            d_matched[sel_d],
            thresholds,
            confidence,
            purity_known=have_det_ratio,
        )
        part.insert(0, "log_flux_ratio_hi", hi)
        part.insert(0, "log_flux_ratio_lo", lo)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)
