"""Using the host-galaxy segment: candidates on the host, photometry masks.

The segment itself (r band smoothed with a Gaussian of the r-band PSF FWHM,
photutils segmentation, Section 4.3.2) is made once per galaxy by the
``segment`` stage (:mod:`clumpcat.survey.hostsegment`,
:mod:`clumpcat.survey.segments`). Here: whether positions fall on it
(:func:`in_mask`), and the pixels the photometry ignores, the area outside
the host and the other clumps (:func:`photometry_mask`, App. E).

Every array here is in the *cutout* frame: FITS pixels, 0-based, ``[y, x]``
indexing, pixel centres at integer coordinates.
"""

from __future__ import annotations

import numpy as np

__all__ = ["in_mask", "clump_exclusion_mask", "photometry_mask"]


def in_mask(x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Whether positions fall on True pixels of a mask.

    Parameters
    ----------
    x, y : array_like
        Positions in the mask's frame (cutout frame, 0-based; pixel ``i``
        covers ``i - 0.5 <= x < i + 0.5``).
    mask : ndarray of bool
        2-D mask indexed ``[y, x]``.

    Returns
    -------
    ndarray of bool
        False for positions outside the image or non-finite.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    ny, nx = mask.shape
    ok = np.isfinite(x) & np.isfinite(y)
    ix = np.floor(np.where(ok, x, -1.0) + 0.5).astype(np.int64)
    iy = np.floor(np.where(ok, y, -1.0) + 0.5).astype(np.int64)
    ok &= (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
    out = np.zeros(x.shape, dtype=bool)
    out[ok] = mask[iy[ok], ix[ok]]
    return out


def clump_exclusion_mask(
    shape: tuple[int, int],
    x: np.ndarray,
    y: np.ndarray,
    radius_px: float | np.ndarray,
    *,
    exclude: int | None = None,
) -> np.ndarray:
    """Mask of discs around clumps, optionally leaving one clump out.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)`` of the cutout.
    x, y : array_like
        Clump centres in the cutout frame (0-based pixels).
    radius_px : float or array_like
        Disc radius in pixels (one value, or one per clump).
    exclude : int, optional
        Index of the clump whose own disc is not masked (the clump being
        measured).

    Returns
    -------
    ndarray of bool
        True within ``radius_px`` of any clump other than ``exclude``.
    """
    x = np.atleast_1d(np.asarray(x, dtype=np.float64))
    y = np.atleast_1d(np.asarray(y, dtype=np.float64))
    radius = np.broadcast_to(np.asarray(radius_px, dtype=np.float64), x.shape)
    ny, nx = shape
    out = np.zeros(shape, dtype=bool)
    for i in range(x.size):
        if i == exclude or not (np.isfinite(x[i]) and np.isfinite(y[i])):
            continue
        r = radius[i]
        x0, x1 = max(0, int(np.floor(x[i] - r))), min(nx, int(np.ceil(x[i] + r)) + 1)
        y0, y1 = max(0, int(np.floor(y[i] - r))), min(ny, int(np.ceil(y[i] + r)) + 1)
        if x0 >= x1 or y0 >= y1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        out[y0:y1, x0:x1] |= (xx - x[i]) ** 2 + (yy - y[i]) ** 2 <= r * r
    return out


def photometry_mask(
    host_mask: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    radius_px: float | np.ndarray,
    index: int,
) -> np.ndarray:
    """Pixels to ignore when measuring clump ``index`` (App. E).

    Parameters
    ----------
    host_mask : ndarray of bool
        Host-galaxy mask (:mod:`clumpcat.survey.segments`; cutout frame).
    x, y : array_like
        Every clump centre of the galaxy, cutout frame (0-based pixels).
    radius_px : float or array_like
        Radius in pixels of the disc masked around each other clump
        (e.g. the aperture radius).
    index : int
        The clump being measured; its own disc stays unmasked.

    Returns
    -------
    ndarray of bool
        True outside the host galaxy and within ``radius_px`` of every other
        clump: the area outside the galaxy and the other clumps, as masked
        by the paper's photometry.
    """
    host_mask = np.asarray(host_mask, dtype=bool)
    return ~host_mask | clump_exclusion_mask(host_mask.shape, x, y, radius_px, exclude=index)
