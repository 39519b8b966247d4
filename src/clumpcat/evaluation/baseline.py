"""A classical clump finder without training, for comparison with the detector.

In the spirit of Guo et al. (2015) and Mehta et al. (2021), clumps are local
peaks of an unsharp-masked image inside the host galaxy:

1. sum the chosen bands (default g + r, where young clumps are bright) in
   nanomaggies;
2. smooth with a Gaussian of the r-band PSF FWHM (a matched filter for point
   sources) and subtract a median filter three FWHM wide (the smooth disc
   and bulge), leaving a residual of compact structure;
3. divide by a noise made of the residual's sky noise, measured robustly
   (MAD) off the host galaxy, and a contrast floor of 15 per cent of the
   local smooth host brightness, to get a significance map in sigma;
4. keep local maxima of the significance above ``min_snr`` inside the host
   segment (:mod:`clumpcat.survey.segments`, Section 4.3.2; the stored one with
   ``--segments``) with
   photutils ``find_peaks``, at least one FWHM apart (the merge distance of
   Section 4.3.2), leaving out the nucleus at the cutout centre.

The score is a logistic function of the significance, mapped into (0, 1) so
that the score-threshold sweep of Section 4.4.2 applies to the baseline as it
does to Faster R-CNN: by default a 5-sigma peak scores 0.5, 2 sigma 0.12 and
8 sigma 0.88. The baseline knows no ``odd`` class: every candidate is
``normal``.

Positions are in the *cutout* frame (FITS pixels, 0-based); boxes are XYXY
squares of side 2.5 x FWHM (the Clump Scout convention, DESIGN.md) in the
same frame.
"""

from __future__ import annotations

import argparse
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.stats import gaussian_fwhm_to_sigma, mad_std
from photutils.detection import find_peaks
from scipy import ndimage

from clumpcat.constants import LABEL_BOX_FWHM, MERGE_FWHM
from clumpcat.errors import ClumpcatError, CutoutError, InputError
from clumpcat.ledger import LedgerEntry, pending, read_status, write_status
from clumpcat.parallel import add_workers_option, ordered_map
from clumpcat.paths import objid_path
from clumpcat.survey.cutouts import read_cutout
from clumpcat.survey.galaxies import read_galaxies
from clumpcat.survey.segments import (
    SegmentSet,
    add_segments_option,
    preload_segmentation,
    read_segments,
    segment_galaxy,
    segment_shard,
)
from clumpcat.tables import ColumnDoc, write_table

__all__ = [
    "BASELINE_COLUMNS",
    "significance_map",
    "significance_to_score",
    "find_clump_peaks",
    "baseline_cutout",
    "baseline_shard",
    "configure_parser",
    "run",
]

log = logging.getLogger(__name__)


#: Columns of ``baseline.parquet`` (the detections contract plus extras).
BASELINE_COLUMNS: dict[str, ColumnDoc] = {
    "objid": ("", "Galaxy identifier"),
    "x": ("pix", "Candidate centre x, cutout frame, 0-based"),
    "y": ("pix", "Candidate centre y, cutout frame, 0-based"),
    "ra": ("deg", "Right ascension of the candidate (ICRS)"),
    "dec": ("deg", "Declination of the candidate (ICRS)"),
    "box_x0": ("pix", "Box left edge, cutout frame (XYXY)"),
    "box_y0": ("pix", "Box bottom edge, cutout frame (XYXY)"),
    "box_x1": ("pix", "Box right edge, cutout frame (XYXY)"),
    "box_y1": ("pix", "Box top edge, cutout frame (XYXY)"),
    "score": ("", "Logistic function of the peak significance, in (0, 1)"),
    "label": ("", "Always 'normal' (the baseline has no odd class)"),
    "snr": ("", "Peak significance of the unsharp-masked image, in sigma"),
    "fwhm_r_px": ("pix", "r-band PSF FWHM in cutout pixels"),
}


def _odd(n: float) -> int:
    n = max(int(np.ceil(n)), 3)
    return n if n % 2 else n + 1


def significance_map(
    image: np.ndarray,
    fwhm_px: float,
    host_mask: np.ndarray | None = None,
    *,
    median_fwhm: float = 3.0,
    contrast: float = 0.15,
    return_residual: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Unsharp-masked image divided by its noise, in sigma.

    Parameters
    ----------
    image : ndarray
        2-D image (nanomaggies, sky-subtracted), cutout frame; NaN pixels
        allowed.
    fwhm_px : float
        PSF FWHM in cutout pixels.
    host_mask : ndarray of bool, optional
        True on the host galaxy. The sky noise is measured on the pixels
        outside it (on all pixels when fewer than 50 lie outside).
    median_fwhm : float
        Width of the median filter that models the smooth host, in FWHM.
        Clumps narrower than about half of it survive the subtraction.
    contrast : float
        Fraction of the local smooth host brightness added in quadrature to
        the sky noise. A median filter leaves residuals of several per cent
        on a bulge, a bar or spiral arms; with this floor a peak must also
        stand out against its surroundings (a contrast criterion, as in
        Guo et al. 2015), not only against the sky. The default, 0.15, was
        chosen on two small synthetic surveys (seeds 3 and 8, 100 galaxies):
        0.05 let arm and bar residuals through (purity 0.2 at score 0.5),
        0.2 began to lose faint clumps.
    return_residual : bool
        Also return the residual ``G * image - M`` (nanomaggies).

    Returns
    -------
    ndarray of float
        ``(G * image - M) / sqrt(sky^2 + (contrast * M)^2)`` with ``G`` a
        Gaussian of the PSF FWHM, ``M`` the median-filtered ``G * image``
        (clipped at 0 in the noise term) and ``sky`` the robust (MAD)
        standard deviation of the residual off the host; NaN where the
        image is NaN. With ``return_residual``, a tuple ``(snr, residual)``.

    Raises
    ------
    InputError
        If the image is not 2-D, a mask has another shape or ``fwhm_px`` is
        not positive.
    """
    image = np.asarray(image, dtype=float)
    if image.ndim != 2:
        raise InputError(f"image must be 2-D, got {image.ndim}-D")
    if not np.isfinite(fwhm_px) or fwhm_px <= 0:
        raise InputError(f"fwhm_px must be a positive number of pixels, got {fwhm_px}")
    if host_mask is not None and np.shape(host_mask) != image.shape:
        raise InputError(f"host mask shape {np.shape(host_mask)} differs from image shape {image.shape}")
    bad = ~np.isfinite(image)
    if bad.all():
        empty = np.full(image.shape, np.nan)
        return (empty, empty.copy()) if return_residual else empty
    filled = np.where(bad, np.nanmedian(image), image)
    smooth = ndimage.gaussian_filter(filled, fwhm_px * gaussian_fwhm_to_sigma, mode="nearest")
    host_model = ndimage.median_filter(smooth, size=_odd(median_fwhm * fwhm_px), mode="nearest")
    residual = smooth - host_model
    outside = ~bad if host_mask is None else (~np.asarray(host_mask, dtype=bool) & ~bad)
    if outside.sum() < 50:
        outside = ~bad
    sky = float(mad_std(residual[outside]))
    if not np.isfinite(sky) or sky <= 0:
        sky = float(np.std(residual[~bad]))
    sky = sky if np.isfinite(sky) and sky > 0 else 1.0
    level = float(np.median(host_model[outside]))  # a sky pedestal, if any
    noise = np.hypot(sky, contrast * np.clip(host_model - level, 0.0, None))
    snr = residual / noise
    snr[bad] = np.nan
    if return_residual:
        return snr, residual
    return snr


def significance_to_score(snr, snr_half: float = 5.0, snr_scale: float = 1.4) -> np.ndarray:
    """Map a significance in sigma to a score in (0, 1), monotonically.

    ``score = 1 / (1 + exp(-(snr - snr_half) / snr_scale))``: ``snr_half``
    scores 0.5; the sweep 0.1 to 0.9 spans ``snr_half -/+ 2.2 snr_scale``.
    """
    snr = np.asarray(snr, dtype=float)
    return 1.0 / (1.0 + np.exp(-(snr - snr_half) / snr_scale))


def find_clump_peaks(
    image: np.ndarray,
    fwhm_px: float,
    host_mask: np.ndarray | None,
    *,
    min_snr: float = 2.0,
    median_fwhm: float = 3.0,
    contrast: float = 0.15,
    nucleus_fwhm: float = 1.0,
    snr_half: float = 5.0,
    snr_scale: float = 1.4,
    max_peaks: int = 50,
) -> pd.DataFrame:
    """Peaks of the unsharp-masked image inside the host galaxy.

    Parameters
    ----------
    image : ndarray
        2-D image (nanomaggies), cutout frame.
    fwhm_px : float
        PSF FWHM in cutout pixels.
    host_mask : ndarray of bool or None
        True on the host galaxy; peaks elsewhere are dropped. None searches
        the whole image.
    min_snr : float
        Lowest significance reported (sigma).
    median_fwhm, contrast : float
        See :func:`significance_map`.
    nucleus_fwhm : float
        Peaks closer than this many FWHM to the cutout centre (the galaxy's
        nucleus or bulge, which an unsharp mask always leaves as a peak)
        are dropped, as Guo et al. (2015) leave out the central clump.
        0 keeps them.
    snr_half, snr_scale : float
        Parameters of :func:`significance_to_score`.
    max_peaks : int
        Most peaks kept, most significant first.

    Returns
    -------
    pandas.DataFrame
        Columns ``x``, ``y`` (cutout frame, 0-based; intensity-weighted
        centroid of the unsharp-masked image in the 3x3 pixels around the
        peak), ``snr``, ``score``,
        ``box_x0``, ``box_y0``, ``box_x1``, ``box_y1`` (XYXY, side
        2.5 x FWHM), ``label`` (``normal``), sorted by decreasing score.
    """
    snr, residual = significance_map(
        image, fwhm_px, host_mask, median_fwhm=median_fwhm, contrast=contrast, return_residual=True
    )
    mask = ~np.isfinite(snr)
    if nucleus_fwhm > 0:
        yy, xx = np.indices(snr.shape)
        ny, nx = snr.shape
        mask |= np.hypot(xx - (nx - 1) / 2, yy - (ny - 1) / 2) < nucleus_fwhm * fwhm_px
    if host_mask is not None:
        host_mask = np.asarray(host_mask, dtype=bool)
        if host_mask.shape != snr.shape:
            raise InputError(f"host mask shape {host_mask.shape} differs from image shape {snr.shape}")
        mask |= ~host_mask
    columns = ["x", "y", "snr", "score", "box_x0", "box_y0", "box_x1", "box_y1", "label"]
    if mask.all():
        return pd.DataFrame(columns=columns).astype({"x": float, "y": float, "snr": float, "score": float})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # photutils' NoDetectionsWarning
        # Peaks at least one FWHM apart, the merge distance of Section 4.3.2.
        peaks = find_peaks(
            np.nan_to_num(snr, nan=0.0),
            threshold=min_snr,
            box_size=_odd(MERGE_FWHM * fwhm_px),
            mask=mask,
            npeaks=max_peaks,
        )
    if peaks is None or len(peaks) == 0:
        return pd.DataFrame(columns=columns).astype({"x": float, "y": float, "snr": float, "score": float})
    px = np.asarray(peaks["x_peak"], dtype=int)
    py = np.asarray(peaks["y_peak"], dtype=int)
    values = np.asarray(peaks["peak_value"], dtype=float)
    ny, nx = snr.shape
    xs, ys = np.empty(len(px)), np.empty(len(px))
    resid = np.nan_to_num(residual, nan=-np.inf)
    for k, (i, j) in enumerate(zip(px, py, strict=True)):
        # The significance peak can sit a pixel off the flux peak where the
        # host brightness (the contrast term) changes fast: climb to the
        # residual's local maximum, then take the 3x3 centroid there.
        for _ in range(3):
            y0, y1, x0, x1 = max(j - 1, 0), min(j + 2, ny), max(i - 1, 0), min(i + 2, nx)
            dj, di = np.unravel_index(np.argmax(resid[y0:y1, x0:x1]), (y1 - y0, x1 - x0))
            if (y0 + dj, x0 + di) == (j, i):
                break
            j, i = y0 + int(dj), x0 + int(di)
        y0, y1, x0, x1 = max(j - 1, 0), min(j + 2, ny), max(i - 1, 0), min(i + 2, nx)
        w = np.clip(np.nan_to_num(residual[y0:y1, x0:x1]), 0, None)
        if w.sum() > 0:
            yy, xx = np.mgrid[y0:y1, x0:x1]
            xs[k], ys[k] = (w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()
        else:
            xs[k], ys[k] = i, j
    half = 0.5 * LABEL_BOX_FWHM * fwhm_px
    frame = pd.DataFrame(
        {
            "x": xs,
            "y": ys,
            "snr": values,
            "score": significance_to_score(values, snr_half, snr_scale),
            # Edge coordinates of a square around the pixel-centre position.
            "box_x0": xs + 0.5 - half,
            "box_y0": ys + 0.5 - half,
            "box_x1": xs + 0.5 + half,
            "box_y1": ys + 0.5 + half,
            "label": "normal",
        }
    )
    return frame.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)


def baseline_cutout(
    cutout,
    host_mask: np.ndarray | None = None,
    *,
    bands: tuple[str, ...] = ("g", "r"),
    **kwargs,
) -> pd.DataFrame:
    """Baseline candidates of one :class:`~clumpcat.survey.cutouts.Cutout`.

    Parameters
    ----------
    cutout : Cutout
        Multi-band cutout (nanomaggies); must hold ``r`` and ``bands``.
    host_mask : ndarray of bool, optional
        Host galaxy mask (the galaxy's stored segment); default: segmented
        here at the cutout centre (:func:`clumpcat.survey.segments.segment_galaxy`).
    bands : tuple of str
        Bands summed before peak finding.
    **kwargs
        Passed to :func:`find_clump_peaks`.

    Returns
    -------
    pandas.DataFrame
        Columns of :data:`BASELINE_COLUMNS`.
    """
    missing = [b for b in (*bands, "r") if b not in cutout.images]
    if missing:
        raise CutoutError(f"{cutout.objid}.fits", f"missing band(s) {', '.join(missing)} for the baseline")
    fwhm = cutout.fwhm_pixels("r")
    if host_mask is None:
        host_mask = segment_galaxy(cutout).mask
    image = np.sum([np.asarray(cutout.images[b], dtype=float) for b in bands], axis=0)
    frame = find_clump_peaks(image, fwhm, host_mask, **kwargs)
    if len(frame):
        ra, dec = cutout.wcs.all_pix2world(frame["x"].to_numpy(), frame["y"].to_numpy(), 0)
    else:
        ra = dec = np.zeros(0)
    frame.insert(0, "objid", str(cutout.objid))
    frame.insert(3, "ra", np.asarray(ra, dtype=float))
    frame.insert(4, "dec", np.asarray(dec, dtype=float))
    frame["fwhm_r_px"] = fwhm
    return frame[list(BASELINE_COLUMNS)]


def _empty() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=float) for c in BASELINE_COLUMNS})
    return frame.astype({"objid": str, "label": str})


def baseline_shard(
    objids,
    cutout_dir: str | Path,
    *,
    bands: tuple[str, ...] = ("g", "r"),
    segments: SegmentSet | None = None,
    workers: int = 1,
    **kwargs,
) -> tuple[pd.DataFrame, list[LedgerEntry]]:
    """Run the baseline over a shard's galaxies.

    Parameters
    ----------
    objids : iterable of str
        Galaxies to process.
    cutout_dir : str or Path
        Folder of ``{objid}.fits`` cutouts.
    bands : tuple of str
        Bands summed before peak finding.
    segments : SegmentSet, optional
        The shard's stored host segments; a galaxy without one fails with
        the reason. Default: each cutout segmented at its centre.
    workers : int
        Processes measuring the galaxies (the output does not depend on it).
    **kwargs
        Passed to :func:`find_clump_peaks`.

    Returns
    -------
    detections : pandas.DataFrame
        Columns of :data:`BASELINE_COLUMNS`, every galaxy's candidates.
    failures : list of LedgerEntry
        Galaxies whose cutout could not be used, with the reason.
    """
    job = _BaselineJob(str(cutout_dir), tuple(bands), segments, dict(kwargs))
    if segments is None:
        preload_segmentation()
    parts, failures = [], []
    for part, failure in ordered_map(
        _baseline_one, job, [str(o) for o in objids], workers=workers, desc="baseline"
    ):
        if failure is None:
            parts.append(part)
        else:
            failures.append(failure)
    parts = [p for p in parts if len(p)]
    frame = pd.concat(parts, ignore_index=True) if parts else _empty()
    return frame, failures


@dataclass(frozen=True)
class _BaselineJob:
    """What every galaxy of a shard's baseline shares."""

    cutout_dir: str
    bands: tuple[str, ...]
    segments: SegmentSet | None
    options: dict


def _baseline_one(job: _BaselineJob, objid: str) -> tuple[pd.DataFrame | None, LedgerEntry | None]:
    """One galaxy's baseline candidates, or its failure."""
    try:
        cutout = read_cutout(objid_path(job.cutout_dir, objid, ".fits"))
        mask = job.segments.mask_for(cutout) if job.segments is not None else None
        return baseline_cutout(cutout, mask, bands=job.bands, **job.options), None
    except (ClumpcatError, ValueError) as exc:
        reason = getattr(exc, "reason", str(exc))
        log.warning("baseline: galaxy %s failed: %s", objid, reason)
        return None, LedgerEntry(objid, "failed", "baseline", reason)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``clumpcat baseline``."""
    parser.add_argument("--galaxies", required=True, help="the shard's galaxy table (Parquet or CSV)")
    parser.add_argument("--cutouts", required=True, help="folder of {objid}.fits cutouts")
    parser.add_argument("--status-in", help="previous stage's status table; only 'ok' galaxies run")
    parser.add_argument("--out", required=True, help="output Parquet of baseline candidates")
    parser.add_argument("--status-out", help="write this stage's status table here")
    parser.add_argument(
        "--bands", nargs="+", default=["g", "r"], help="bands summed into the detection image (default g r)"
    )
    parser.add_argument("--min-snr", type=float, default=2.0, help="lowest peak significance kept (sigma)")
    parser.add_argument(
        "--median-fwhm", type=float, default=3.0, help="median filter width for the host, in FWHM"
    )
    parser.add_argument(
        "--contrast", type=float, default=0.15, help="fraction of the host brightness added to the noise"
    )
    parser.add_argument(
        "--nucleus-fwhm", type=float, default=1.0, help="drop peaks this many FWHM from the cutout centre"
    )
    parser.add_argument("--snr-half", type=float, default=5.0, help="significance that scores 0.5")
    parser.add_argument("--snr-scale", type=float, default=1.4, help="logistic width of the score (sigma)")
    add_segments_option(parser)
    add_workers_option(parser)


def run(args: argparse.Namespace) -> int:
    """Run ``clumpcat baseline`` on one shard."""
    galaxies = read_galaxies(args.galaxies)
    objids = galaxies["objid"].tolist()
    upstream = read_status(args.status_in)
    todo = pending(objids, upstream)
    bands = tuple(b.strip().lower() for b in args.bands if b.strip())
    if not bands:
        raise InputError("--bands must name at least one band, e.g. '--bands g r'")
    segments = (
        read_segments(args.segments)
        if args.segments
        else segment_shard(galaxies, args.cutouts, status=upstream)
    )
    frame, failures = baseline_shard(
        todo,
        args.cutouts,
        bands=bands,
        segments=segments,
        min_snr=args.min_snr,
        median_fwhm=args.median_fwhm,
        contrast=args.contrast,
        nucleus_fwhm=args.nucleus_fwhm,
        snr_half=args.snr_half,
        snr_scale=args.snr_scale,
        workers=args.workers,
    )
    write_table(frame, args.out, BASELINE_COLUMNS, {"clumpcat_stage": "baseline"})
    if args.status_out:
        write_status(args.status_out, objids, failures, upstream=upstream)
    log.info(
        "baseline: %d candidates in %d galaxies (%d failed) -> %s",
        len(frame),
        len(todo) - len(failures),
        len(failures),
        args.out,
    )
    return 0
