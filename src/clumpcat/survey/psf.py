"""The point-spread function that travels with a cutout (DESIGN.md, cutout contract).

A cutout may carry, per band, the PSF at the galaxy as a ``PSF_<BAND>`` image:
odd side, sampled on the cutout's pixel grid (pixel-integrated), centred on
its central pixel, summing to 1. This module checks such images, measures
their half-maximum FWHM (the FWHM the paper's apertures, boxes and merge radii
are scaled to, App. E and 4.3.2) one way for every survey, and draws the
analytic profiles used where a survey gives no PSF image.

Everything here works in pixels and plain numpy arrays.
"""

from __future__ import annotations

import numpy as np
from astropy.stats import gaussian_fwhm_to_sigma

__all__ = [
    "PSF_FAMILIES",
    "draw_psf",
    "encircled_energy",
    "measure_fwhm",
    "normalise_psf",
    "stamp_half_width",
]

#: Analytic PSF families: a Gaussian, a Moffat of index ``beta``, and a
#: double Gaussian (core plus a wider wing, as SDSS photo models the PSF).
PSF_FAMILIES: tuple[str, ...] = ("gaussian", "moffat", "double_gaussian")

#: Sub-pixel sampling used to integrate analytic profiles over a pixel and to
#: find the half-maximum contour of a sampled PSF.
_OVERSAMPLE = 8


def stamp_half_width(fwhm_px: float, extent_fwhm: float = 4.0) -> int:
    """Half width (pixels) of a stamp reaching ``extent_fwhm`` FWHM from its centre."""
    return max(int(np.ceil(extent_fwhm * float(fwhm_px))), 2)


def normalise_psf(psf: np.ndarray, *, what: str = "PSF image") -> np.ndarray:
    """Check a PSF image against the contract and scale it to unit sum.

    Parameters
    ----------
    psf : ndarray
        2-D image of odd side whose central pixel holds the PSF centre.
    what : str
        How to name the image in an error message (file and band).

    Returns
    -------
    ndarray
        ``float64`` copy summing to 1; non-finite pixels are an error.

    Raises
    ------
    ValueError
        If the image is not 2-D, has an even side, holds non-finite values,
        or has a non-positive sum.
    """
    image = np.asarray(psf, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"{what}: {image.ndim}-D, expected a 2-D image")
    if image.shape[0] % 2 == 0 or image.shape[1] % 2 == 0:
        raise ValueError(
            f"{what}: shape {image.shape}; the contract asks for odd sides centred on the middle pixel"
        )
    if not np.isfinite(image).all():
        raise ValueError(f"{what}: holds NaN or infinite pixels")
    total = image.sum()
    if not total > 0:
        raise ValueError(f"{what}: sums to {total:g}, not a PSF")
    return image / total


def measure_fwhm(psf: np.ndarray) -> float:
    """Half-maximum FWHM of a sampled PSF image, in pixels.

    The image is interpolated (bicubic spline) onto a grid ``8x`` finer and
    the area ``A`` above half the peak is counted; ``FWHM = 2 sqrt(A / pi)``,
    the diameter of the circle of the same area. Unlike second moments this
    ignores the wings (which carry a large share of the second moment of real
    PSFs), and unlike a fit it assumes no profile.

    Parameters
    ----------
    psf : ndarray
        2-D PSF image (any normalisation), peak near the centre.

    Returns
    -------
    float
        FWHM in pixels of ``psf``.
    """
    image = np.asarray(psf, dtype=np.float64)
    if image.ndim != 2 or not np.isfinite(image).all():
        raise ValueError("measure_fwhm needs a finite 2-D image")
    from scipy import ndimage  # here: every cutout reader imports this module, few measure a FWHM

    fine = ndimage.zoom(image, _OVERSAMPLE, order=3, mode="nearest", grid_mode=True)
    peak = fine.max()
    if not peak > 0:
        raise ValueError("measure_fwhm: the image has no positive peak")
    # Keep only the connected region around the peak: a neighbour or a noisy
    # wing pixel above half maximum is not part of the core.
    above = fine >= 0.5 * peak
    labels, _ = ndimage.label(above)
    core = labels == labels[np.unravel_index(np.argmax(fine), fine.shape)]
    area = core.sum() / _OVERSAMPLE**2
    return float(2.0 * np.sqrt(area / np.pi))


def _radius2(half: int, dx: float, dy: float) -> np.ndarray:
    # Squared distance of sub-pixel sample points from (dx, dy), per sample,
    # grouped by pixel: shape (side, n, side, n).
    n = _OVERSAMPLE
    offsets = (np.arange(n) + 0.5) / n - 0.5
    pix = np.arange(-half, half + 1, dtype=np.float64)
    x = (pix[:, None] + offsets[None, :]).reshape(-1) - dx
    y = (pix[:, None] + offsets[None, :]).reshape(-1) - dy
    return (y[:, None] ** 2 + x[None, :] ** 2).reshape(pix.size, n, pix.size, n)


def _profile(
    r2: np.ndarray, family: str, fwhm_px: float, beta: float, wing_fraction: float, wing_ratio: float
):
    """Unnormalised profile value at squared radius ``r2`` (pixels^2)."""
    if family == "gaussian":
        sigma = fwhm_px * gaussian_fwhm_to_sigma
        return np.exp(-0.5 * r2 / sigma**2)
    if family == "moffat":
        alpha = fwhm_px / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
        return (1.0 + r2 / alpha**2) ** (-beta)
    if family == "double_gaussian":
        from scipy.optimize import brentq  # here, as scipy.ndimage in measure_fwhm

        # Core sigma chosen so the sum of the two has the requested FWHM.
        def value(s_core: float, rr) -> np.ndarray:
            core = (1.0 - wing_fraction) / s_core**2 * np.exp(-0.5 * rr / s_core**2)
            s_wing = wing_ratio * s_core
            return core + wing_fraction / s_wing**2 * np.exp(-0.5 * rr / s_wing**2)

        half = 0.5 * fwhm_px

        def excess(s_core: float) -> float:
            return float(value(s_core, half**2) - 0.5 * value(s_core, 0.0))

        s_core = brentq(excess, 0.05 * fwhm_px, fwhm_px * gaussian_fwhm_to_sigma * 1.0001)
        return value(s_core, r2)
    raise ValueError(f"PSF family must be one of {', '.join(PSF_FAMILIES)}, got {family!r}")


def draw_psf(
    family: str,
    fwhm_px: float,
    *,
    beta: float = 4.765,
    wing_fraction: float = 0.1,
    wing_ratio: float = 2.0,
    half_width: int | None = None,
    offset: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """Pixel-integrated image of an analytic PSF, summing to 1 over the stamp.

    Parameters
    ----------
    family : {'gaussian', 'moffat', 'double_gaussian'}
        Profile shape.
    fwhm_px : float
        FWHM of the profile before pixel integration, in pixels.
    beta : float
        Moffat index (the simulator's nominal 4.765 is Trujillo et al. 2001's
        fit to typical ground-based seeing).
    wing_fraction, wing_ratio : float
        Double Gaussian: share of the flux in the wing and wing/core width.
    half_width : int, optional
        Stamp half width in pixels (default: 4 FWHM).
    offset : (float, float)
        ``(dx, dy)`` of the profile centre from the central pixel's centre.

    Returns
    -------
    ndarray
        ``(2 h + 1, 2 h + 1)`` image summing to 1.
    """
    if not fwhm_px > 0:
        raise ValueError(f"PSF FWHM must be > 0 pixels, got {fwhm_px}")
    half = stamp_half_width(fwhm_px) if half_width is None else int(half_width)
    r2 = _radius2(half, float(offset[0]), float(offset[1]))
    image = _profile(r2, family, float(fwhm_px), beta, wing_fraction, wing_ratio).mean(axis=(1, 3))
    return image / image.sum()


def encircled_energy(
    psf: np.ndarray,
    radius_px: float,
    *,
    offset: tuple[float, float] = (0.0, 0.0),
    mask: np.ndarray | None = None,
) -> float:
    """Fraction of a sampled PSF's light inside a circular aperture.

    The aperture is centred ``offset = (dx, dy)`` pixels from the PSF centre
    and pixels are weighted by the fraction of their area inside it (exact
    geometric overlap, as photutils' ``method='exact'``), so the value is what
    an aperture sum of the same radius collects from a point source on the
    same pixel grid.

    Parameters
    ----------
    psf : ndarray
        Normalised PSF image (:func:`normalise_psf`).
    radius_px : float
        Aperture radius in pixels.
    offset : (float, float)
        Aperture centre relative to the PSF's central pixel.
    mask : ndarray of bool, optional
        Same shape as ``psf``; True pixels are excluded (masked in the image).

    Returns
    -------
    float
        Encircled energy in ``[0, 1]``.
    """
    # Imported here: photutils takes ~0.7 s to import (it scans every installed
    # distribution), and most stages that read cutouts never call this.
    from photutils.aperture import CircularAperture

    ny, nx = psf.shape
    centre = ((nx - 1) / 2.0 + offset[0], (ny - 1) / 2.0 + offset[1])
    weights = CircularAperture(centre, r=float(radius_px)).to_mask(method="exact").to_image((ny, nx))
    if weights is None:
        return 0.0
    if mask is not None:
        weights = np.where(mask, 0.0, weights)
    return float(np.sum(weights * psf))
