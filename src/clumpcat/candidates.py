"""Clump candidates from raw boxes: NMS and merging within the PSF FWHM.

Pure array functions (paper Section 4.3), used by post-processing and by the
training loop's validation, which must not import a later stage. Positions
are pixel-index coordinates and boxes XYXY pixel edges, in whatever frame the
caller uses (both in the same one).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clumpcat.constants import LABELS, MERGE_FWHM, NMS_IOU

__all__ = ["LINKAGES", "MergedCandidates", "merge_within_fwhm", "nms_across_labels"]

#: How candidates are grouped for merging (see merge_within_fwhm).
LINKAGES = ("seed", "components")


# --------------------------------------------------------------------------- NMS


def nms_across_labels(boxes: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU) -> np.ndarray:
    """Non-maximum suppression over every box, whatever its label (Section 4.3.1).

    Parameters
    ----------
    boxes : array_like, shape (n, 4)
        XYXY boxes in pixels (any one frame; here the cutout frame).
    scores : array_like, shape (n,)
        Detection scores.
    iou : float
        A box is removed when its IoU with a higher-scoring kept box exceeds
        this (Section 4.3.1: 0.2).

    Returns
    -------
    ndarray of int64
        Indices of the kept boxes, by decreasing score.

    Raises
    ------
    ValueError
        If ``boxes`` is not (n, 4), the lengths differ, or ``iou`` is outside
        [0, 1].

    Notes
    -----
    The released code applied ``torchvision.ops.nms`` to all boxes at once,
    so a ``normal`` and an ``odd`` box on the same clump suppress each other;
    this function does the same, with the same rule (boxes visited by
    decreasing score, ties in input order; a box goes when its IoU with a
    kept one is strictly above ``iou``) and the same result. It is numpy:
    importing torch and torchvision for it would cost a post-processing job
    seconds of start-up, more than its NMS takes over a whole shard.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) if np.size(boxes) else np.zeros((0, 4))
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if boxes.shape[0] != scores.shape[0]:
        raise ValueError(f"boxes ({boxes.shape[0]}) and scores ({scores.shape[0]}) differ in length")
    if not 0.0 <= iou <= 1.0:
        raise ValueError(f"iou must lie in [0, 1], got {iou!r}")
    if boxes.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    x0, y0, x1, y1 = boxes.T
    areas = (x1 - x0) * (y1 - y0)
    suppressed = np.zeros(len(boxes), dtype=bool)
    keep = []
    for i in np.argsort(-scores, kind="stable"):
        if suppressed[i]:
            continue
        keep.append(i)
        width = np.maximum(0.0, np.minimum(x1[i], x1) - np.maximum(x0[i], x0))
        height = np.maximum(0.0, np.minimum(y1[i], y1) - np.maximum(y0[i], y0))
        overlap = width * height
        with np.errstate(invalid="ignore", divide="ignore"):
            # Two empty boxes have IoU 0/0: NaN, never above the threshold.
            suppressed |= overlap / (areas[i] + areas - overlap) > iou
    return np.asarray(keep, dtype=np.int64)


# ----------------------------------------------------------------------- merging


@dataclass(frozen=True)
class MergedCandidates:
    """Candidates after merging within the PSF FWHM (cutout frame).

    Attributes
    ----------
    x, y : ndarray of float
        Centroid of the merged candidates' box centres (pixels).
    score : ndarray of float
        Maximum score of the merged candidates.
    score_min : ndarray of float
        Minimum score of the merged candidates.
    label : ndarray of str
        ``odd`` if any merged candidate is ``odd``, else ``normal``.
    boxes : ndarray, shape (m, 4)
        XYXY box with the members' mean width and height, placed on
        ``(x, y)`` with the members' mean offset between box centre and
        centre (0.5 pixel for pixel-edge boxes), so that ``(x, y)`` keeps
        its relation to the box. A single candidate keeps its box.
    n_merged : ndarray of int
        Number of input candidates in each output candidate.
    groups : list of ndarray
        Input indices of each output candidate's members.
    """

    x: np.ndarray
    y: np.ndarray
    score: np.ndarray
    score_min: np.ndarray
    label: np.ndarray
    boxes: np.ndarray
    n_merged: np.ndarray
    groups: list[np.ndarray]


def _groups(x, y, scores, radius, linkage):
    """Member indices of each merge group, groups ordered by best score."""
    n = x.size
    order = np.lexsort((np.arange(n), -scores))  # by score, ties by index
    dist = np.hypot(x[:, None] - x[None, :], y[:, None] - y[None, :])
    close = dist <= radius
    if linkage == "seed":
        free = np.ones(n, dtype=bool)
        groups = []
        for i in order:
            if not free[i]:
                continue
            members = np.flatnonzero(close[i] & free)
            free[members] = False
            groups.append(members[np.argsort(-scores[members], kind="stable")])
        return groups
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    _n, comp = connected_components(csr_matrix(close), directed=False)
    groups, seen = [], set()
    for i in order:
        if comp[i] in seen:
            continue
        seen.add(comp[i])
        members = np.flatnonzero(comp == comp[i])
        groups.append(members[np.argsort(-scores[members], kind="stable")])
    return groups


def merge_within_fwhm(
    x: np.ndarray,
    y: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    boxes: np.ndarray,
    fwhm_px: float,
    *,
    merge_fwhm: float = MERGE_FWHM,
    linkage: str = "seed",
) -> MergedCandidates:
    """Merge candidates not further apart than ``merge_fwhm`` x the r-band FWHM (Section 4.3.2).

    Parameters
    ----------
    x, y : array_like, shape (n,)
        Candidate centres in the cutout frame (pixel-index coordinates,
        0-based), e.g. the box midpoints minus 0.5 for pixel-edge boxes.
    scores : array_like, shape (n,)
        Detection scores.
    labels : array_like of str, shape (n,)
        ``normal`` or ``odd``.
    boxes : array_like, shape (n, 4)
        XYXY boxes in the cutout frame (pixels).
    fwhm_px : float
        r-band PSF FWHM in cutout pixels.
    merge_fwhm : float
        Merge radius in units of ``fwhm_px`` (Section 4.3.2: 1). 0 merges
        only coincident centres.
    linkage : {'seed', 'components'}
        How chains are handled. ``seed`` (default): the highest-scoring
        candidate not yet merged takes every other unmerged candidate within
        the radius of it, and so on down the scores; a merged clump thus
        spans at most one radius around its best member, and a chain
        ``A - B - C`` with A, C two radii apart gives two clumps. ``components``:
        every chain of candidates each within the radius of the next becomes
        one clump (connected components of the distance graph), however long.

    Returns
    -------
    MergedCandidates
        Ordered by decreasing score. Position: centroid of the members'
        centres (for two, their midpoint, as in Section 4.3.2). Score: the
        maximum; label: ``odd`` if any member is odd.

    Raises
    ------
    ValueError
        On arrays of different lengths, an unknown label or linkage, or a
        non-positive FWHM.

    Notes
    -----
    The merge runs once; merged centroids are not merged again even if they
    end up within the radius of each other. See the module notes on how
    merging interacts with a later score threshold.
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels, dtype=object).reshape(-1)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) if np.size(boxes) else np.zeros((0, 4))
    n = x.size
    problems = []
    if not all(a.shape[0] == n for a in (y, scores, labels, boxes)):
        problems.append(
            f"x, y, scores, labels, boxes differ in length "
            f"({n}, {y.size}, {scores.size}, {labels.size}, {boxes.shape[0]})"
        )
    if not (np.isfinite(fwhm_px) and fwhm_px > 0):
        problems.append(f"fwhm_px must be positive and finite, got {fwhm_px!r}")
    if not (np.isfinite(merge_fwhm) and merge_fwhm >= 0):
        problems.append(f"merge_fwhm must be >= 0, got {merge_fwhm!r}")
    if linkage not in LINKAGES:
        problems.append(f"linkage must be one of {', '.join(LINKAGES)}, got {linkage!r}")
    bad = sorted({str(v) for v in labels if v not in LABELS})
    if bad:
        problems.append(f"labels must be {' or '.join(LABELS)}, got {', '.join(bad)}")
    if problems:
        raise ValueError("; ".join(problems))
    if n == 0:
        empty = np.zeros(0)
        return MergedCandidates(
            empty, empty, empty, empty, np.zeros(0, dtype=object), np.zeros((0, 4)), np.zeros(0, np.int64), []
        )
    groups = _groups(x, y, scores, merge_fwhm * fwhm_px, linkage)
    m = len(groups)
    out_x, out_y = np.empty(m), np.empty(m)
    out_s, out_smin = np.empty(m), np.empty(m)
    out_l = np.empty(m, dtype=object)
    out_b = np.empty((m, 4))
    out_n = np.empty(m, dtype=np.int64)
    width = boxes[:, 2] - boxes[:, 0]
    height = boxes[:, 3] - boxes[:, 1]
    off_x = 0.5 * (boxes[:, 0] + boxes[:, 2]) - x
    off_y = 0.5 * (boxes[:, 1] + boxes[:, 3]) - y
    for k, g in enumerate(groups):
        cx, cy = x[g].mean(), y[g].mean()
        w, h = width[g].mean(), height[g].mean()
        out_x[k], out_y[k] = cx, cy
        out_s[k], out_smin[k] = scores[g].max(), scores[g].min()
        out_l[k] = "odd" if np.any(labels[g] == "odd") else "normal"
        if g.size == 1:
            out_b[k] = boxes[g[0]]
        else:
            bx, by = cx + off_x[g].mean(), cy + off_y[g].mean()
            out_b[k] = (bx - w / 2, by - h / 2, bx + w / 2, by + h / 2)
        out_n[k] = g.size
    return MergedCandidates(out_x, out_y, out_s, out_smin, out_l, out_b, out_n, groups)
