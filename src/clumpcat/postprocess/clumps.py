"""Post-processing of raw detections into clump candidates (Section 4.3).

Three steps, in the paper's order, per galaxy:

1. Non-maximum suppression on the IoU of the boxes, across labels
   (Section 4.3.1; the released code used ``torchvision.ops.nms`` with an
   IoU of 0.2).
2. Candidates not further apart than one r-band PSF FWHM are merged into
   one at the centroid of their centres; ``odd`` wins the label and the
   score is the maximum (Section 4.3.2).
3. Candidates whose centre lies outside the host galaxy's r-band segment
   are removed (Section 4.3.2). The segment is the galaxy's stored one
   (``clumpcat segment``, :mod:`clumpcat.survey.segments`), the same that
   photometry, injection and the baseline use.
4. Each remaining candidate's own detection S/N is measured in the rendered
   bands (:mod:`clumpcat.postprocess.significance`); candidates below
   ``min_snr`` are dropped (empty sky under a bright sky, DESIGN.md).

Everything here is in the *cutout* frame (FITS pixels, 0-based): the detect
stage maps its rendered-frame boxes to the cutout frame before writing
``detections.parquet``. Positions ``x, y`` are pixel-index coordinates
(pixel ``i`` is centred on ``i``, as for ``WCS.pixel_to_world``); boxes are
XYXY in pixel-edge coordinates (pixel ``i`` spans ``[i, i + 1]``), as
torchvision and the detect stage write them, so a box centre is ``x + 0.5``.
Where a detections table lacks ``x, y``, that is how they are derived.

Scores and thresholds
---------------------
Every candidate above a low ``score_floor`` is kept, so that users choose a
detection threshold later by selecting ``score >= t`` in ``clumps.parquet``.
NMS commutes with such a cut (a box is suppressed only by a higher-scoring
one), but merging does not quite: a high-score candidate merged with a
low-score one inherits the centroid position and, if the low-score one is
``odd``, the ``odd`` label, although at threshold ``t`` above the low score
it would have stayed alone. The merged row keeps the maximum score, and with
the default ``seed`` linkage (groups formed around the highest-scoring
candidates first) a cut ``score >= t`` keeps exactly the clumps that
post-processing at ``t`` would give; only their positions and labels (so,
at the host's edge, their ``in_host``) can differ. (With ``components`` linkage a chain through low-score candidates can
also join two clumps that would stay apart at ``t``: one reason ``seed`` is
the default.) ``score_min`` (the lowest member score) tells
which rows are affected (``score_min < t``). To reproduce post-processing at
one fixed threshold exactly (the paper applied 0.3 before NMS), rerun this
stage with ``--score-floor t``: it reads the stored detections and never
reruns the detector.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from clumpcat.candidates import LINKAGES, MergedCandidates, merge_within_fwhm, nms_across_labels
from clumpcat.constants import LABEL_IDS, LABELS, MERGE_FWHM, NMS_IOU
from clumpcat.errors import CutoutError, InputError
from clumpcat.ledger import LedgerEntry, pending, read_status, write_status
from clumpcat.logs import progress
from clumpcat.paths import objid_path
from clumpcat.postprocess.hostmask import in_mask
from clumpcat.postprocess.significance import SNR_BANDS, candidate_snr
from clumpcat.settings import PostprocessSettings
from clumpcat.survey.cutouts import Cutout
from clumpcat.survey.galaxies import read_galaxies
from clumpcat.survey.segments import (
    DEFAULT_NSIGMA,
    GalaxySegment,
    SegmentSet,
    add_segments_option,
    read_cutout_checked,
    read_segments,
    segment_galaxy,
)
from clumpcat.tables import ColumnDoc, read_table, write_table

__all__ = [
    "DEFAULT_SCORE_FLOOR",
    "DEFAULT_MIN_SNR",
    "HOST_MASK_MODES",
    "LINKAGES",
    "DETECTION_COLUMNS",
    "CLUMP_COLUMNS",
    "MergedCandidates",
    "nms_across_labels",
    "merge_within_fwhm",
    "apply_host_mask",
    "empty_clumps",
    "postprocess_galaxy",
    "postprocess_shard",
    "configure_parser",
    "run",
]

log = logging.getLogger(__name__)

#: Candidates below this score are dropped before NMS; low, so that users
#: can threshold later (issue 3, item 4). The paper's threshold was 0.3.
DEFAULT_SCORE_FLOOR = 0.05
#: The configured default of ``postprocess.min_snr`` (chosen by measurement, settings.py).
DEFAULT_MIN_SNR: float = PostprocessSettings().min_snr
#: What to do with candidates outside the host segment.
HOST_MASK_MODES = ("drop", "flag", "off")

#: Columns a detections table must hold (DESIGN.md, detections contract).
DETECTION_COLUMNS = ("objid", "box_x0", "box_y0", "box_x1", "box_y1", "score", "label")

#: Units and descriptions of the columns of ``clumps.parquet``.
CLUMP_COLUMNS: dict[str, ColumnDoc] = {
    "objid": ("", "Galaxy identifier"),
    "x": ("pix", "Clump centre x, cutout pixel (0-based, pixel centres at integers)"),
    "y": ("pix", "Clump centre y, cutout pixel (0-based, pixel centres at integers)"),
    "ra": ("deg", "Right ascension of the clump centre (ICRS), from the cutout WCS"),
    "dec": ("deg", "Declination of the clump centre (ICRS), from the cutout WCS"),
    "box_x0": ("pix", "Box left edge, cutout frame (XYXY, pixel edges: box centre = x + 0.5)"),
    "box_y0": ("pix", "Box bottom edge, cutout frame (XYXY, pixel edges: box centre = x + 0.5)"),
    "box_x1": ("pix", "Box right edge, cutout frame (XYXY, pixel edges: box centre = x + 0.5)"),
    "box_y1": ("pix", "Box top edge, cutout frame (XYXY, pixel edges: box centre = x + 0.5)"),
    "score": ("", "Detection score; the maximum over merged candidates"),
    "label": ("", "normal or odd; odd if any merged candidate was odd (Section 4.3.2)"),
    "fwhm_r_px": ("pix", "r-band PSF FWHM of the galaxy's cutout, in cutout pixels"),
    "n_merged": ("", "Number of candidates (after NMS) merged into this one"),
    "score_min": ("", "Lowest score among the merged candidates (= score when n_merged is 1)"),
    "in_host": ("", "Centre on the host galaxy's r-band segment (True for every row when the mask is off)"),
    **{
        f"snr_{b}": ("", f"{b}-band S/N of the aperture flux (1.125 x FWHM) above the annulus median")
        for b in SNR_BANDS
    },
    "detection_snr": ("", "Detection S/N: per-band S/N of the rendered bands, positive parts in quadrature"),
}

_FLOAT_COLUMNS = (
    "x",
    "y",
    "ra",
    "dec",
    "box_x0",
    "box_y0",
    "box_x1",
    "box_y1",
    "score",
    "fwhm_r_px",
    "score_min",
    *(f"snr_{b}" for b in SNR_BANDS),
    "detection_snr",
)


# --------------------------------------------------------------------- host mask


def apply_host_mask(x: np.ndarray, y: np.ndarray, host_mask: np.ndarray) -> np.ndarray:
    """Which candidate centres lie on the host galaxy's segment (Section 4.3.2).

    Parameters
    ----------
    x, y : array_like
        Candidate centres in the cutout frame (pixels, 0-based).
    host_mask : ndarray of bool
        Host segment (:mod:`clumpcat.survey.segments`),
        cutout frame ``[y, x]``.

    Returns
    -------
    ndarray of bool
        ``in_host``: True where the centre's pixel is on the host; False
        outside it or outside the image. :func:`postprocess_galaxy` drops the
        False ones by default (the catalogue holds in-host clumps only).
    """
    return in_mask(x, y, host_mask)


# ---------------------------------------------------------------------- galaxies


def empty_clumps() -> pd.DataFrame:
    """An empty clumps table with every column of :data:`CLUMP_COLUMNS` and its dtype."""
    frame = pd.DataFrame({c: pd.Series(dtype="float64") for c in CLUMP_COLUMNS})
    frame["objid"] = pd.Series(dtype="object")
    frame["label"] = pd.Series(dtype="object")
    frame["n_merged"] = pd.Series(dtype="int64")
    frame["in_host"] = pd.Series(dtype="bool")
    return frame[list(CLUMP_COLUMNS)]


def _labels_as_text(values: pd.Series, source: str) -> np.ndarray:
    """Labels as 'normal'/'odd', accepting the class ids 1/2 too."""
    by_id = {str(v): k for k, v in LABEL_IDS.items()}
    text = values.astype(str).str.strip().str.lower().map(lambda v: by_id.get(v, v))
    bad = sorted(set(text[~text.isin(LABELS)]))
    if bad:
        raise InputError(f"{source}: label must be {' or '.join(LABELS)} (or 1/2), got {', '.join(bad[:10])}")
    return text.to_numpy(dtype=object)


def _check_options(score_floor, nms_iou, merge_fwhm, host_mask, linkage, min_snr=0.0) -> None:
    """Raise one InputError (a ValueError) naming every bad option."""
    problems = []
    if not (np.isfinite(min_snr) and min_snr >= 0.0):
        problems.append(f"min_snr must be >= 0, got {min_snr!r}")
    if not np.isfinite(score_floor):
        problems.append(f"score_floor must be finite, got {score_floor!r}")
    if not 0.0 <= nms_iou <= 1.0:
        problems.append(f"nms_iou must lie in [0, 1], got {nms_iou!r}")
    if not (np.isfinite(merge_fwhm) and merge_fwhm >= 0.0):
        problems.append(f"merge_fwhm must be >= 0, got {merge_fwhm!r}")
    if host_mask not in HOST_MASK_MODES:
        problems.append(f"host_mask must be one of {', '.join(HOST_MASK_MODES)}, got {host_mask!r}")
    if linkage not in LINKAGES:
        problems.append(f"linkage must be one of {', '.join(LINKAGES)}, got {linkage!r}")
    if problems:
        raise InputError("; ".join(problems))


def _check_detections(detections: pd.DataFrame, source: str) -> None:
    missing = [c for c in DETECTION_COLUMNS if c not in detections.columns]
    if missing:
        raise InputError(
            f"{source}: missing column(s) {', '.join(missing)}; detections need {', '.join(DETECTION_COLUMNS)}"
        )


def postprocess_galaxy(
    detections: pd.DataFrame,
    cutout: Cutout,
    *,
    score_floor: float = DEFAULT_SCORE_FLOOR,
    nms_iou: float = NMS_IOU,
    merge_fwhm: float = MERGE_FWHM,
    host_mask: str = "drop",
    linkage: str = "seed",
    segment: GalaxySegment | None = None,
    band: str = "r",
    min_snr: float = DEFAULT_MIN_SNR,
) -> pd.DataFrame:
    """Post-process one galaxy's raw detections (Section 4.3).

    Parameters
    ----------
    detections : pandas.DataFrame
        This galaxy's rows of the detections table: ``box_x0, box_y0,
        box_x1, box_y1`` (XYXY, cutout frame, pixels), ``score``, ``label``
        (``normal``/``odd`` or 1/2), and ``x``, ``y`` (pixel-index centres);
        without ``x``, ``y`` the centres are the box midpoints minus 0.5
        (pixel-edge boxes, see the module notes). Other columns are ignored;
        ``ra``, ``dec`` are recomputed.
    cutout : Cutout
        The galaxy's cutout; needs ``band`` (its image for the host mask,
        its PSF FWHM for merging) and its WCS.
    score_floor : float
        Candidates with a lower score are dropped first.
    nms_iou : float
        IoU threshold of the NMS (Section 4.3.1).
    merge_fwhm : float
        Merge radius in units of the r-band FWHM (Section 4.3.2).
    host_mask : {'drop', 'flag', 'off'}
        ``drop`` (default): remove candidates outside the host segment;
        ``flag``: keep them with ``in_host`` False; ``off``: no host mask,
        ``in_host`` True for all.
    linkage : {'seed', 'components'}
        Chain handling of the merge, see :func:`merge_within_fwhm`.
    segment : GalaxySegment, optional
        The galaxy's stored host segment (``clumpcat segment``). Default:
        segmented here at the cutout centre with the default settings.
    band : str
        Band whose PSF FWHM is the merge radius.
    min_snr : float
        Drop candidates whose ``detection_snr`` is below this (0 keeps
        all; a NaN S/N, no measurable background, is kept).

    Returns
    -------
    pandas.DataFrame
        One row per clump candidate, by decreasing score, with the columns of
        :data:`CLUMP_COLUMNS`: ``objid``, ``x``, ``y`` (cutout frame, 0-based,
        centre of the box), ``ra``, ``dec`` (deg, ICRS, through the cutout's
        WCS), ``box_x0``, ``box_y0``, ``box_x1``, ``box_y1`` (cutout frame),
        ``score``, ``label``, ``fwhm_r_px``, ``n_merged``, ``score_min``,
        ``in_host``, ``snr_g``, ``snr_r``, ``snr_i``, ``detection_snr``.

    Raises
    ------
    InputError
        If a required detection column is missing, a label is unknown or an
        option is out of range (``nms_iou`` outside [0, 1], negative
        ``merge_fwhm``, unknown ``host_mask`` or ``linkage``).
    CutoutError
        If the cutout lacks ``band``.

    Notes
    -----
    If no host segment is found, every candidate is outside the host: with
    ``drop`` the galaxy has no clumps (logged as a warning).
    """
    _check_options(score_floor, nms_iou, merge_fwhm, host_mask, linkage, min_snr)
    _check_detections(detections, "detections")
    if band not in cutout.images:
        raise CutoutError(f"{cutout.objid}.fits", f"no {band.upper()} band for the host mask and FWHM")
    fwhm = float(cutout.fwhm_pixels(band))
    det = detections[pd.to_numeric(detections["score"], errors="coerce") >= score_floor]
    if det.empty:
        return empty_clumps()
    boxes = det[["box_x0", "box_y0", "box_x1", "box_y1"]].to_numpy(dtype=np.float64)
    scores = det["score"].to_numpy(dtype=np.float64)
    labels = _labels_as_text(det["label"], "detections")
    if "x" in det.columns and "y" in det.columns:
        xy = det[["x", "y"]].to_numpy(dtype=np.float64)
    else:  # pixel-edge boxes: centre index = midpoint - 0.5
        xy = 0.5 * (boxes[:, 0:2] + boxes[:, 2:4]) - 0.5
    finite = np.isfinite(boxes).all(axis=1) & np.isfinite(scores) & np.isfinite(xy).all(axis=1)
    if not finite.all():
        log.warning(
            "%s: %d detection(s) with non-finite positions, boxes or scores ignored",
            cutout.objid,
            (~finite).sum(),
        )
        boxes, scores, labels, xy = boxes[finite], scores[finite], labels[finite], xy[finite]
    keep = nms_across_labels(boxes, scores, nms_iou)
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    x, y = xy[keep, 0], xy[keep, 1]
    merged = merge_within_fwhm(x, y, scores, labels, boxes, fwhm, merge_fwhm=merge_fwhm, linkage=linkage)

    if host_mask == "off":
        in_host = np.ones(merged.x.size, dtype=bool)
    else:
        if segment is None:
            segment = segment_galaxy(cutout)
        if segment.mask.shape != tuple(cutout.shape):
            raise CutoutError(f"{cutout.objid}.fits", "stored host segment differs in shape from the cutout")
        in_host = apply_host_mask(merged.x, merged.y, segment.mask)
    keep_rows = in_host.copy() if host_mask == "drop" else np.ones(in_host.size, dtype=bool)
    if not keep_rows.any():
        return empty_clumps()
    snr = candidate_snr(cutout, merged.x[keep_rows], merged.y[keep_rows])
    significant = ~(snr["detection_snr"] < min_snr)  # NaN (not measurable) is kept
    if not significant.all():
        log.debug("%s: %d candidate(s) below S/N %s dropped", cutout.objid, (~significant).sum(), min_snr)
    snr = {k: v[significant] for k, v in snr.items()}
    keep_rows[np.flatnonzero(keep_rows)[~significant]] = False
    if not keep_rows.any():
        return empty_clumps()

    mx, my = merged.x[keep_rows], merged.y[keep_rows]
    ra, dec = _sky(cutout, mx, my)
    mb = merged.boxes[keep_rows]
    n = mx.size
    return pd.DataFrame(
        {
            "objid": np.full(n, str(cutout.objid), dtype=object),
            "x": mx,
            "y": my,
            "ra": ra,
            "dec": dec,
            "box_x0": mb[:, 0].copy(),
            "box_y0": mb[:, 1].copy(),
            "box_x1": mb[:, 2].copy(),
            "box_y1": mb[:, 3].copy(),
            "score": merged.score[keep_rows],
            "label": merged.label[keep_rows].astype(object),
            "fwhm_r_px": np.full(n, fwhm, dtype=np.float64),
            "n_merged": merged.n_merged[keep_rows].astype(np.int64),
            "score_min": merged.score_min[keep_rows],
            "in_host": in_host[keep_rows].astype(bool),
            **snr,
        },
        columns=list(CLUMP_COLUMNS),
    )


def _sky(cutout: Cutout, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ICRS ra, dec in degrees of cutout-frame pixel positions, through astropy's WCS."""
    sky = cutout.wcs.pixel_to_world(x, y)
    if sky.frame.name != "icrs":
        sky = sky.icrs
    ra = np.asarray(sky.ra.deg, dtype=np.float64).reshape(-1)
    dec = np.asarray(sky.dec.deg, dtype=np.float64).reshape(-1)
    return ra, dec


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """The clumps table's columns, in order, with their dtypes."""
    out = frame[list(CLUMP_COLUMNS)].copy()
    for c in _FLOAT_COLUMNS:
        out[c] = out[c].astype("float64")
    out["objid"] = out["objid"].astype(str).astype(object)
    out["label"] = out["label"].astype(str).astype(object)
    out["n_merged"] = out["n_merged"].astype("int64")
    out["in_host"] = out["in_host"].astype(bool)
    return out.reset_index(drop=True)


def postprocess_shard(
    galaxies: pd.DataFrame,
    detections: pd.DataFrame,
    cutout_dir: str | Path,
    *,
    status: pd.DataFrame | None = None,
    score_floor: float = DEFAULT_SCORE_FLOOR,
    nms_iou: float = NMS_IOU,
    merge_fwhm: float = MERGE_FWHM,
    host_mask: str = "drop",
    linkage: str = "seed",
    host_nsigma: float = DEFAULT_NSIGMA,
    min_snr: float = DEFAULT_MIN_SNR,
    segments: SegmentSet | None = None,
) -> tuple[pd.DataFrame, list[LedgerEntry]]:
    """Post-process every galaxy of a shard; a bad galaxy never stops the shard.

    Parameters
    ----------
    galaxies : pandas.DataFrame
        The shard's galaxy table (``objid``, ``ra``, ``dec``; the host
        segment is looked for at the galaxy's ``ra``, ``dec``).
    detections : pandas.DataFrame
        The shard's detections (boxes in the cutout frame), any number of
        rows per galaxy.
    cutout_dir : str or Path
        Folder of ``{objid}.fits`` cutouts.
    status : pandas.DataFrame, optional
        The detect stage's status table; only its ``ok`` galaxies are
        processed. Default: every galaxy.
    score_floor, nms_iou, merge_fwhm, host_mask, linkage, min_snr
        As in :func:`postprocess_galaxy`.
    host_nsigma : float
        Threshold of the host segment when ``segments`` is not given.
    segments : SegmentSet, optional
        The shard's stored host segments (``clumpcat segment``). A galaxy
        whose segment failed is failed here with that reason. Default: each
        cutout is segmented here at the galaxy's ``ra``, ``dec`` with
        ``host_nsigma``, as the segment stage does.

    Returns
    -------
    clumps : pandas.DataFrame
        Every galaxy's candidates (columns of :data:`CLUMP_COLUMNS`), in the
        shard's galaxy order and by decreasing score within a galaxy.
    failures : list of LedgerEntry
        One ``failed`` entry (stage ``postprocess``) per galaxy whose cutout
        could not be read or processed, with the reason. A galaxy without
        candidates is ``ok`` with no rows (the catalogue calls it
        ``no_clumps``); its cutout is not read. Each cutout is read once.

    Raises
    ------
    InputError
        If the detections table lacks a required column or has unknown
        labels, or an option is out of range; raised before any galaxy is
        processed.
    """
    _check_options(score_floor, nms_iou, merge_fwhm, host_mask, linkage, min_snr)
    _check_detections(detections, "detections table")
    objids = galaxies["objid"].astype(str).tolist()
    todo = set(pending(objids, status))
    det = detections.copy()
    det["objid"] = det["objid"].astype(str)
    det["label"] = _labels_as_text(det["label"], "detections table")
    by_galaxy = {k: g for k, g in det.groupby("objid", sort=False)}
    unknown = set(by_galaxy) - set(objids)
    if unknown:
        log.warning(
            "%d galaxy id(s) in the detections are not in the shard's galaxy table; ignored", len(unknown)
        )
    coords = galaxies.assign(objid=galaxies["objid"].astype(str)).set_index("objid")[["ra", "dec"]]
    pieces, failures = [], []
    for objid in progress([o for o in objids if o in todo], desc="postprocess"):
        rows = by_galaxy.get(objid)
        if segments is not None and host_mask != "off" and objid in segments.failures:
            reason = f"no host segment: {segments.failures[objid]}"
            log.warning("%s: %s", objid, reason)
            failures.append(LedgerEntry(objid, "failed", "postprocess", reason))
            continue
        if rows is None or rows.empty:
            continue  # no candidates: ok, nothing to read
        try:
            cutout = read_cutout_checked(objid_path(cutout_dir, objid, ".fits"))
            if "r" not in cutout.images:
                raise CutoutError(f"{objid}.fits", "missing band(s) R")
            segment = None
            if host_mask == "off":
                pass
            elif segments is not None:
                segment = segments.get(objid)
            else:
                ra, dec = float(coords.at[objid, "ra"]), float(coords.at[objid, "dec"])
                segment = segment_galaxy(cutout, ra, dec, nsigma=host_nsigma)
            clumps = postprocess_galaxy(
                rows,
                cutout,
                score_floor=score_floor,
                nms_iou=nms_iou,
                merge_fwhm=merge_fwhm,
                host_mask=host_mask,
                linkage=linkage,
                segment=segment,
                min_snr=min_snr,
            )
        except CutoutError as exc:
            log.warning("%s: %s", objid, exc)
            failures.append(LedgerEntry(objid, "failed", "postprocess", exc.reason))
            continue
        except Exception as exc:  # a bad galaxy must never stop the shard
            log.warning("%s: post-processing failed", objid, exc_info=True)
            text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            failures.append(LedgerEntry(objid, "failed", "postprocess", f"{type(exc).__name__}: {text}"))
            continue
        if not clumps.empty:
            pieces.append(clumps)
    clumps = pd.concat(pieces, ignore_index=True) if pieces else empty_clumps()
    return _typed(clumps), failures


# --------------------------------------------------------------------------- CLI


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``clumpcat postprocess`` options to ``parser``."""
    parser.add_argument("--galaxies", required=True, help="shard galaxy table (Parquet or CSV)")
    parser.add_argument(
        "--detections", required=True, help="shard detections table (boxes in the cutout frame)"
    )
    parser.add_argument("--cutouts", required=True, help="folder of {objid}.fits cutouts")
    parser.add_argument(
        "--status-in", help="the detect stage's status table; only its ok galaxies are processed"
    )
    parser.add_argument("--status-out", required=True, help="this stage's status table (Parquet)")
    parser.add_argument("--out", required=True, help="clumps table to write (Parquet)")
    parser.add_argument(
        "--score-floor",
        type=float,
        default=DEFAULT_SCORE_FLOOR,
        help="drop candidates scoring below this before NMS (detect.score_floor; default %(default)s)",
    )
    PostprocessSettings.add_options(parser)
    add_segments_option(parser)
    parser.add_argument(
        "--flag-outside-host",
        action="store_true",
        help="keep candidates outside the host galaxy, with in_host False (needs the host mask on)",
    )


def run(args: argparse.Namespace) -> int:
    """Run ``clumpcat postprocess``; returns the exit status."""
    cfg = PostprocessSettings.from_args(args)
    if args.flag_outside_host and not cfg.host_mask:
        raise InputError("--flag-outside-host needs the host mask: drop --no-host-mask")
    mode = "off" if not cfg.host_mask else ("flag" if args.flag_outside_host else "drop")
    _check_options(args.score_floor, cfg.nms_iou, cfg.merge_fwhm, mode, cfg.linkage, cfg.min_snr)
    segments = read_segments(args.segments) if args.segments and mode != "off" else None
    galaxies = read_galaxies(args.galaxies)
    detections = read_table(args.detections)
    status = read_status(args.status_in)
    clumps, failures = postprocess_shard(
        galaxies,
        detections,
        args.cutouts,
        status=status,
        score_floor=args.score_floor,
        nms_iou=cfg.nms_iou,
        merge_fwhm=cfg.merge_fwhm,
        host_mask=mode,
        linkage=cfg.linkage,
        host_nsigma=cfg.host_nsigma,
        min_snr=cfg.min_snr,
        segments=segments,
    )
    write_table(
        clumps,
        args.out,
        CLUMP_COLUMNS,
        table_metadata={
            "stage": "postprocess",
            "frame": "cutout",
            "score_floor": repr(args.score_floor),
            "nms_iou": repr(cfg.nms_iou),
            "merge_fwhm": repr(cfg.merge_fwhm),
            "linkage": cfg.linkage,
            "host_mask": mode,
            "host_nsigma": repr(segments.settings["nsigma"] if segments else cfg.host_nsigma),
            "host_segments": str(args.segments) if segments else "computed here",
            "min_snr": repr(cfg.min_snr),
        },
    )
    write_status(args.status_out, galaxies["objid"].astype(str), failures, upstream=status)
    n_gal = clumps["objid"].nunique()
    log.info(
        "postprocess: %d candidate(s) in %d galaxy(ies); %d galaxy(ies) failed; wrote %s",
        len(clumps),
        n_gal,
        len(failures),
        args.out,
    )
    return 0
