"""Host-galaxy segmentation in the r band (Section 4.3.2).

The paper removes clump candidates that lie outside the host galaxy. The
host's extent is the segment, at the galaxy's centre, of the r-band image
smoothed with a Gaussian of the r-band PSF FWHM and thresholded at 0.5 x the
background RMS above the background (Section 4.3.2; the released code used
photutils ``Background2D`` with a median estimator and
``detect_sources(npixels=10)``, DESIGN.md).

Every array here is in the *cutout* frame: FITS pixels, 0-based, ``[y, x]``
indexing, pixel centres at integer coordinates.

The segment is a property of the galaxy's cutout, like its PSF: the
``segment`` stage (:mod:`clumpcat.survey.segments`) computes it once per
galaxy and stores it per shard; injection, post-processing, photometry and
the baseline read that one segment. Using it (candidates on the host, the
photometry's masks) is :mod:`clumpcat.postprocess.hostmask`.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
from astropy.stats import SigmaClip, gaussian_fwhm_to_sigma, mad_std
from photutils.background import Background2D, BkgZoomInterpolator, MedianBackground, StdBackgroundRMS
from photutils.segmentation import SegmentationImage, detect_sources
from photutils.utils import NoDetectionsWarning
from scipy import ndimage

from clumpcat.constants import HOST_MASK_NPIXELS
from clumpcat.errors import ClumpcatWarning
from clumpcat.settings import PostprocessSettings

__all__ = [
    "HostSegment",
    "segment_host",
    "host_galaxy_mask",
    "host_segment_id",
]

log = logging.getLogger(__name__)

#: A smoothed pixel whose Gaussian neighbourhood is more than half NaN is
#: left out of the segmentation (too little data to say it is the galaxy).
_MIN_VALID_WEIGHT = 0.5
#: Background boxes with more than this percentage of masked (NaN or
#: source) pixels are interpolated from their neighbours.
_EXCLUDE_PERCENTILE = 50.0


@dataclass(frozen=True)
class HostSegment:
    """The host galaxy's segment and the quantities that produced it.

    All arrays have the cutout's shape and use the cutout frame (0-based
    ``[y, x]``).

    Attributes
    ----------
    mask : ndarray of bool
        True on the host galaxy's pixels. All False when no host was found.
    segment_id : int
        Label of the host in ``segmentation``; 0 when no host was found.
    segmentation : photutils.segmentation.SegmentationImage or None
        Every segment above the threshold (the host, stars, background
        galaxies); None when nothing was detected.
    background : ndarray of float
        Background estimate in the image's units (nanomaggies).
    background_rms : ndarray of float
        Background RMS per (unsmoothed) pixel, in the image's units.
    centre_offset_px : float
        Distance in pixels from the requested centre to the nearest pixel of
        the host segment: 0 when the centre lies on the host, NaN when no
        host was found.
    """

    mask: np.ndarray
    segment_id: int
    segmentation: SegmentationImage | None
    background: np.ndarray
    background_rms: np.ndarray
    centre_offset_px: float

    @property
    def found(self) -> bool:
        """Whether a host segment was found."""
        return self.segment_id > 0


def _smooth(image: np.ndarray, valid: np.ndarray, fwhm_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian-smooth ``image`` ignoring invalid pixels (normalised convolution).

    Returns the smoothed image and the smoothed weight (fraction of valid
    pixels under the kernel).
    """
    sigma = fwhm_px * gaussian_fwhm_to_sigma
    filled = np.where(valid, image, 0.0)
    smoothed = ndimage.gaussian_filter(filled, sigma, mode="nearest")
    if valid.all():
        return smoothed, np.ones_like(smoothed)
    weight = ndimage.gaussian_filter(valid.astype(np.float64), sigma, mode="nearest")
    with np.errstate(invalid="ignore", divide="ignore"):
        smoothed = np.where(weight > 0, smoothed / weight, 0.0)
    return smoothed, weight


def _background(image: np.ndarray, mask: np.ndarray, box_size: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Median background and RMS maps from photutils ``Background2D``.

    Returns None when too few boxes hold unmasked pixels.
    """
    try:
        with warnings.catch_warnings():
            # photutils warns about boxes it interpolates over; that is the
            # purpose of the source mask here.
            warnings.simplefilter("ignore")
            bkg = Background2D(
                image,
                box_size,
                mask=mask,
                filter_size=(3, 3),
                exclude_percentile=_EXCLUDE_PERCENTILE,
                sigma_clip=SigmaClip(sigma=3.0, maxiters=5),
                bkg_estimator=MedianBackground(),
                bkg_rms_estimator=StdBackgroundRMS(),
                # bilinear upsampling of the box grid: smooth enough for a
                # threshold map and several times faster than cubic splines
                interpolator=BkgZoomInterpolator(order=1),
            )
            return np.asarray(bkg.background, dtype=np.float64), np.asarray(
                bkg.background_rms, dtype=np.float64
            )
    except ValueError as exc:
        log.debug("Background2D failed (%s); using global sigma-clipped statistics", exc)
        return None


def _global_background(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Constant background and RMS from clipped statistics of the whole image.

    Median and normalised median absolute deviation, clipped at 3 sigma for
    a few iterations, on at most ~40,000 unmasked pixels (a regular subsample
    of larger images): a fast, robust first guess.
    """
    values = image[~mask]
    step = max(1, values.size // 40_000)
    values = values[::step]
    median, std = 0.0, 0.0
    for _ in range(5):
        if values.size == 0:
            break
        median = float(np.median(values))
        std = float(mad_std(values))
        if std <= 0:
            std = float(np.std(values))
            break
        kept = values[np.abs(values - median) < 3.0 * std]
        if kept.size == values.size:
            break
        values = kept
    shape = image.shape
    return np.full(shape, median), np.full(shape, std)


def _default_box_size(shape: tuple[int, int]) -> int:
    """Background box side: an eighth of the shorter side, at least 8 pixels."""
    return int(max(8, min(shape) // 8))


def host_segment_id(
    segmentation: SegmentationImage | np.ndarray,
    centre: tuple[float, float],
    max_offset_px: float | None = None,
) -> tuple[int, float]:
    """Label of the segment at (or nearest to) a centre position.

    Parameters
    ----------
    segmentation : SegmentationImage or ndarray of int
        Segment labels, 0 for background, cutout frame ``[y, x]``.
    centre : tuple of float
        ``(x, y)`` in the cutout frame (0-based pixel coordinates).
    max_offset_px : float, optional
        Ignore segments farther than this from the centre. Default: any.

    Returns
    -------
    segment_id : int
        The segment under the centre pixel; if that pixel is unsegmented, the
        segment whose nearest pixel is closest to the centre; 0 if none.
    offset : float
        Distance in pixels from the centre to that segment (0 when the centre
        lies on it; NaN when none).
    """
    labels = np.asarray(getattr(segmentation, "data", segmentation))
    ny, nx = labels.shape
    cx, cy = float(centre[0]), float(centre[1])
    ix, iy = int(np.floor(cx + 0.5)), int(np.floor(cy + 0.5))
    if 0 <= ix < nx and 0 <= iy < ny and labels[iy, ix] > 0:
        return int(labels[iy, ix]), 0.0
    yy, xx = np.nonzero(labels)
    if yy.size == 0:
        return 0, float("nan")
    d2 = (xx - cx) ** 2 + (yy - cy) ** 2
    best = int(np.argmin(d2))
    offset = float(np.sqrt(d2[best]))
    if max_offset_px is not None and offset > max_offset_px:
        return 0, float("nan")
    return int(labels[yy[best], xx[best]]), offset


def segment_host(
    image_r: np.ndarray,
    fwhm_px: float,
    *,
    nsigma: float = PostprocessSettings.host_nsigma,
    npixels: int = HOST_MASK_NPIXELS,
    box_size: int | None = None,
    centre: tuple[float, float] | None = None,
    max_offset_px: float | None = None,
) -> HostSegment:
    """Segment the r-band image and pick the host galaxy's segment (Section 4.3.2).

    Parameters
    ----------
    image_r : ndarray
        2-D r-band image (nanomaggies), cutout frame. NaN or infinite pixels
        are masked: they never enter the background estimate, are filled by
        the smoothing where at least half of the kernel's weight is valid,
        and are left out of every segment otherwise.
    fwhm_px : float
        r-band PSF FWHM in pixels; the image is smoothed with a Gaussian of
        this FWHM (Section 4.3.2).
    nsigma : float
        Threshold above the background in units of the background RMS
        (Section 4.3.2: 0.5).
    npixels : int
        Minimum number of connected pixels of a segment (released code: 10).
    box_size : int, optional
        Side of the ``Background2D`` boxes in pixels. Default: an eighth of
        the shorter image side, at least 8.
    centre : tuple of float, optional
        ``(x, y)`` of the galaxy in the cutout frame. Default: the image
        centre, ``((nx - 1) / 2, (ny - 1) / 2)``.
    max_offset_px : float, optional
        When the centre pixel is not segmented, accept the nearest segment
        only within this distance. Default: any distance.

    Returns
    -------
    HostSegment
        The host mask (all False when nothing was detected, see Notes) and
        the background, RMS and segmentation behind it.

    Raises
    ------
    ValueError
        If the image is not 2-D, ``fwhm_px`` is not positive and finite,
        ``nsigma`` is negative or ``npixels`` is below 1.

    Notes
    -----
    The background is estimated twice. A first pass with sigma-clipped
    statistics of the whole image (median and MAD) finds the bright sources; these, grown by
    one FWHM, are masked in the second pass, a ``Background2D`` with a median
    estimator (as the released code), so that the galaxy's own light does not
    raise the background under it. Boxes more than half masked are
    interpolated from their neighbours; if too few boxes remain, the global
    sigma-clipped statistics are used.

    When no segment is found (a blank or very faint image) the mask is all
    False and ``segment_id`` is 0: every candidate of that galaxy then lies
    outside the host. :func:`host_galaxy_mask` warns in that case.
    """
    image = np.asarray(image_r, dtype=np.float64)
    problems = []
    if image.ndim != 2:
        problems.append(f"image_r must be 2-D, got {image.ndim}-D")
    if not (np.isfinite(fwhm_px) and fwhm_px > 0):
        problems.append(f"fwhm_px must be a positive finite number, got {fwhm_px!r}")
    if not (np.isfinite(nsigma) and nsigma >= 0):
        problems.append(f"nsigma must be >= 0, got {nsigma!r}")
    if int(npixels) < 1:
        problems.append(f"npixels must be >= 1, got {npixels!r}")
    if problems:
        raise ValueError("; ".join(problems))
    ny, nx = image.shape
    if centre is None:
        centre = ((nx - 1) / 2.0, (ny - 1) / 2.0)
    valid = np.isfinite(image)
    invalid = ~valid
    empty = np.zeros(image.shape, dtype=bool)
    if not valid.any():
        zeros = np.zeros(image.shape)
        return HostSegment(empty, 0, None, zeros, zeros, float("nan"))

    smoothed, weight = _smooth(image, valid, float(fwhm_px))
    seg_mask = weight < _MIN_VALID_WEIGHT

    # Pass 1: global statistics, to find and mask the bright sources.
    bkg0, rms0 = _global_background(image, invalid)
    sources = (smoothed - bkg0) > nsigma * rms0
    sources &= ~seg_mask
    grow = max(1, int(np.ceil(fwhm_px)))
    sources = ndimage.binary_dilation(sources, iterations=grow)

    # Pass 2: Background2D (median) with the sources masked (Section 4.3.2).
    size = int(box_size) if box_size is not None else _default_box_size(image.shape)
    size = max(2, min(size, ny, nx))
    result = _background(image, invalid | sources, size)
    if result is None:
        bkg, rms = _global_background(image, invalid | sources)
    else:
        bkg, rms = result

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoDetectionsWarning)
        segm = detect_sources(smoothed - bkg, nsigma * rms, int(npixels), mask=seg_mask)
    if segm is None:
        return HostSegment(empty, 0, None, bkg, rms, float("nan"))
    sid, offset = host_segment_id(segm, centre, max_offset_px)
    mask = segm.data == sid if sid > 0 else empty
    return HostSegment(mask, sid, segm, bkg, rms, offset)


def host_galaxy_mask(
    image_r: np.ndarray,
    fwhm_px: float,
    *,
    nsigma: float = PostprocessSettings.host_nsigma,
    npixels: int = HOST_MASK_NPIXELS,
    box_size: int | None = None,
    centre: tuple[float, float] | None = None,
    max_offset_px: float | None = None,
) -> np.ndarray:
    """Boolean mask of the host galaxy in the r band (Section 4.3.2).

    Parameters
    ----------
    image_r : ndarray
        2-D r-band image (nanomaggies), cutout frame; NaN pixels allowed.
    fwhm_px : float
        r-band PSF FWHM in pixels of the cutout.
    nsigma, npixels, box_size, centre, max_offset_px
        As in :func:`segment_host`.

    Returns
    -------
    ndarray of bool
        Same shape as ``image_r``; True on the host galaxy's segment. All
        False when no segment was found.

    Warns
    -----
    ClumpcatWarning
        When no host segment was found.

    See Also
    --------
    segment_host : the same, returning the background and segmentation too.

    Examples
    --------
    >>> import numpy as np
    >>> yy, xx = np.mgrid[:101, :101]
    >>> image = 5.0 * np.exp(-np.hypot(xx - 50, yy - 50) / 8.0)
    >>> image += np.random.default_rng(1).normal(0.0, 0.05, image.shape)
    >>> mask = host_galaxy_mask(image, fwhm_px=3.0)
    >>> bool(mask[50, 50]), bool(mask[0, 0])
    (True, False)
    """
    host = segment_host(
        image_r,
        fwhm_px,
        nsigma=nsigma,
        npixels=npixels,
        box_size=box_size,
        centre=centre,
        max_offset_px=max_offset_px,
    )
    if not host.found:
        warnings.warn(
            "no host-galaxy segment found in the r band; the host mask is empty",
            ClumpcatWarning,
            stacklevel=2,
        )
    return host.mask
