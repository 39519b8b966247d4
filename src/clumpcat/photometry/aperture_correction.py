"""Aperture corrections for point sources measured in small circular apertures.

Clumps are taken as unresolved (App. E), so the flux lost outside an aperture
of radius ``r`` is the part of the PSF beyond ``r``. The correction is the
inverse of the PSF's encircled-energy fraction at ``r``, computed from the
radius in units of the PSF FWHM, for a circular Gaussian (the paper's choice,
App. E) or a circular Moffat profile.

Where the cutout carries the band's PSF image (``PSF_<BAND>``, DESIGN.md), the
encircled energy is that image's, within the aperture actually used: at the
clump's sub-pixel position and with the measurement's masked pixels left out
(:func:`band_psf`, :func:`shifted_psf`, :func:`clumpcat.survey.psf.encircled_energy`).
Without one, the configured analytic profile is drawn on the pixel grid in its
place, and the flux error carries the spread of plausible profiles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from clumpcat.survey.psf import draw_psf, measure_fwhm, stamp_half_width
from clumpcat.survey.psf import encircled_energy as image_encircled_energy

__all__ = [
    "MOFFAT_BETA",
    "PROFILES",
    "encircled_energy",
    "gaussian_aperture_correction",
    "moffat_aperture_correction",
    "aperture_correction",
    "BandPsf",
    "band_psf",
    "shifted_psf",
    "psf_light",
    "stamp_mask",
    "stamp_gradient",
    "kept_fraction_errors",
]

#: Default Moffat index: 4.765, the value for a Kolmogorov-turbulence seeing
#: profile (Trujillo et al. 2001, MNRAS 328, 977); not a paper constant.
MOFFAT_BETA = 4.765

#: PSF profiles the corrections know.
PROFILES: tuple[str, ...] = ("gaussian", "moffat")


def _check_radius(radius_fwhm) -> np.ndarray:
    radius = np.asarray(radius_fwhm, dtype=float)
    if np.any(~np.isfinite(radius)) or np.any(radius <= 0):
        raise ValueError(f"aperture radius (in FWHM) must be finite and > 0, got {radius_fwhm!r}")
    return radius


def encircled_energy(radius_fwhm, profile: str = "gaussian", beta: float = MOFFAT_BETA):
    """Fraction of a circular PSF's flux inside a radius given in FWHM units.

    Parameters
    ----------
    radius_fwhm : float or array_like
        Aperture radius divided by the PSF FWHM (> 0).
    profile : {'gaussian', 'moffat'}
        PSF profile.
    beta : float
        Moffat index (> 1); ignored for a Gaussian.

    Returns
    -------
    float or ndarray
        Encircled-energy fraction in (0, 1).

    Raises
    ------
    ValueError
        If the radius is not positive, the profile is unknown or ``beta <= 1``.

    Notes
    -----
    Gaussian: ``1 - exp(-r^2 / 2 sigma^2)`` with ``FWHM = 2 sqrt(2 ln 2) sigma``,
    i.e. ``1 - 2**(-4 k^2)`` for ``r = k FWHM``.
    Moffat ``I ~ (1 + (r/alpha)^2)^-beta``: ``1 - (1 + (r/alpha)^2)^(1 - beta)``
    with ``FWHM = 2 alpha sqrt(2^(1/beta) - 1)``.

    Examples
    --------
    >>> round(float(encircled_energy(1.125)), 4)
    0.9701
    """
    radius = _check_radius(radius_fwhm)
    if profile == "gaussian":
        frac = 1.0 - np.power(2.0, -4.0 * radius**2)
    elif profile == "moffat":
        if not np.isfinite(beta) or beta <= 1.0:
            raise ValueError(f"Moffat beta must be > 1 (finite total flux), got {beta!r}")
        r_alpha = radius * 2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0)
        frac = 1.0 - np.power(1.0 + r_alpha**2, 1.0 - beta)
    else:
        raise ValueError(f"PSF profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    return frac if frac.ndim else float(frac)


def gaussian_aperture_correction(radius_fwhm):
    """Multiplicative flux correction for a Gaussian PSF (App. E).

    Parameters
    ----------
    radius_fwhm : float or array_like
        Aperture radius in units of the PSF FWHM.

    Returns
    -------
    float or ndarray
        ``1 / encircled_energy`` (> 1).

    Examples
    --------
    >>> round(gaussian_aperture_correction(1.125), 4)
    1.0308
    """
    return 1.0 / encircled_energy(radius_fwhm, "gaussian")


def moffat_aperture_correction(radius_fwhm, beta: float = MOFFAT_BETA):
    """Multiplicative flux correction for a Moffat PSF of index ``beta``.

    Parameters
    ----------
    radius_fwhm : float or array_like
        Aperture radius in units of the PSF FWHM.
    beta : float
        Moffat index (> 1).

    Returns
    -------
    float or ndarray
        ``1 / encircled_energy`` (> 1); larger than the Gaussian one, since a
        Moffat profile has broader wings.
    """
    return 1.0 / encircled_energy(radius_fwhm, "moffat", beta)


def aperture_correction(
    radius_fwhm,
    profile: str = "gaussian",
    beta: float = MOFFAT_BETA,
    annulus_fwhm: tuple[float, float] | None = None,
):
    """Aperture correction for ``profile`` ('gaussian' or 'moffat').

    Parameters
    ----------
    radius_fwhm : float or array_like
        Aperture radius in FWHM units.
    profile : {'gaussian', 'moffat'}
    beta : float
        Moffat index.
    annulus_fwhm : (float, float), optional
        Inner and outer radii (FWHM units) of the background annulus. When
        given, the correction also restores the PSF light that falls in the
        annulus and is subtracted with the background: the aperture keeps
        ``EE(r) - r^2 / (r_out^2 - r_in^2) x (EE(r_out) - EE(r_in))`` of the
        flux (exact for a mean background; negligible for a Gaussian PSF,
        1.2% for a beta = 4.765 Moffat with the App. E radii).

    Returns
    -------
    float or ndarray

    See Also
    --------
    gaussian_aperture_correction, moffat_aperture_correction
    """
    kept = encircled_energy(radius_fwhm, profile, beta)
    if annulus_fwhm is not None:
        r_in, r_out = annulus_fwhm
        if not 0 < r_in < r_out:
            raise ValueError(f"annulus radii must satisfy 0 < inner < outer, got {annulus_fwhm!r}")
        in_annulus = encircled_energy(r_out, profile, beta) - encircled_energy(r_in, profile, beta)
        kept = kept - np.asarray(radius_fwhm, dtype=float) ** 2 / (r_out**2 - r_in**2) * in_annulus
    return 1.0 / kept


# --------------------------------------------------------------------------- from a PSF image

#: FWHM^2 a square pixel adds to a Gaussian (``8 ln 2 / 12`` pixel^2): the
#: pixel's variance is 1/12 per axis.
_PIXEL_FWHM2 = 8.0 * np.log(2.0) / 12.0

#: Analytic profiles spanning the PSFs of ground-based surveys, as
#: ``(family, beta)``: a Gaussian (narrowest wings) and a beta = 2.5 Moffat
#: (the broad end of observed seeing profiles; Trujillo et al. 2001 find
#: 2.5-4.765). Without a PSF image the true profile is anywhere between them.
_PROFILE_SPAN: tuple[tuple[str, float], ...] = (("gaussian", MOFFAT_BETA), ("moffat", 2.5))


@dataclass(frozen=True)
class BandPsf:
    """The PSF image one band's aperture corrections are computed from.

    Attributes
    ----------
    image : ndarray
        Unit-sum image of odd side on the cutout's pixel grid, centred on its
        central pixel.
    source : str
        ``'psf'`` (the cutout's ``PSF_<BAND>`` HDU) or the analytic profile
        drawn in its place (``'gaussian'`` or ``'moffat'``).
    shape_err : float
        Fractional standard deviation of the kept PSF fraction from not
        knowing the profile: 0 for a PSF image; for an analytic fallback the
        spread of the profiles in :data:`_PROFILE_SPAN` taken as uniform
        (``range / sqrt(12)``).
    """

    image: np.ndarray
    source: str
    shape_err: float = 0.0

    @property
    def half(self) -> int:
        """Half width of the image in pixels."""
        return self.image.shape[0] // 2


def band_psf(
    psf_image: np.ndarray | None,
    fwhm_px: float,
    profile: str = "gaussian",
    beta: float = MOFFAT_BETA,
    radius_fwhm: float = 1.125,
    annulus_fwhm: tuple[float, float] = (1.5, 2.5),
) -> BandPsf:
    """The PSF image at hand, or the analytic profile drawn in its place.

    Parameters
    ----------
    psf_image : ndarray or None
        The cutout's normalised ``PSF_<BAND>`` image (used as given), or None.
    fwhm_px : float
        The band's PSF FWHM in pixels (``PSF_FWHM``): the half-maximum FWHM
        of the pixelated PSF.
    profile : {'gaussian', 'moffat'}
        Analytic profile drawn without an image.
    beta : float
        Its Moffat index.
    radius_fwhm, annulus_fwhm
        Aperture and annulus radii (FWHM units), for the fallback's shape
        uncertainty.

    Returns
    -------
    BandPsf

    Notes
    -----
    The fallback is pixel-integrated (:func:`clumpcat.survey.psf.draw_psf`)
    with its pre-pixel FWHM chosen so that the drawn image has the
    half-maximum FWHM the cutout states (:func:`clumpcat.survey.psf.measure_fwhm`).
    """
    if psf_image is not None:
        return BandPsf(np.asarray(psf_image, dtype=np.float64), "psf", 0.0)
    if profile not in PROFILES:
        raise ValueError(f"PSF profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    pre = float(np.sqrt(max(fwhm_px**2 - _PIXEL_FWHM2, 0.25 * fwhm_px**2)))
    half = stamp_half_width(fwhm_px, max(4.0, annulus_fwhm[1] + 1.0))
    image = draw_psf(profile, pre, beta=beta, half_width=half)
    # One secant step on the measured half-maximum FWHM (the pixel broadens
    # a Moffat's core a little more than a Gaussian's).
    core = max(int(np.ceil(fwhm_px)) + 2, 3)  # the half-maximum contour lies at ~FWHM / 2
    pre *= fwhm_px / measure_fwhm(image[half - core : half + core + 1, half - core : half + core + 1])
    image = draw_psf(profile, pre, beta=beta, half_width=half)
    kept = [
        1.0 / aperture_correction(radius_fwhm, fam, b, annulus_fwhm)
        for fam, b in (*_PROFILE_SPAN, (profile, beta))
    ]
    used = 1.0 / aperture_correction(radius_fwhm, profile, beta, annulus_fwhm)
    return BandPsf(image, profile, float((max(kept) - min(kept)) / np.sqrt(12.0) / used))


def shifted_psf(psf: BandPsf, dx: float, dy: float) -> np.ndarray:
    """The PSF image of a source ``(dx, dy)`` pixels from the central pixel's centre.

    A cubic-spline shift of the pixelated image (|dx|, |dy| <= 0.5), so that
    its pixels line up with the cutout's pixels around the source.
    """
    return ndimage.shift(psf.image, (dy, dx), order=3, mode="constant", cval=0.0, prefilter=True)


def psf_light(stamp: np.ndarray, ix: int, iy: int, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Light of a unit-flux source in cutout pixels ``(px, py)``.

    ``stamp`` is :func:`shifted_psf`'s image of the source, whose central
    pixel is cutout pixel ``(ix, iy)``; pixels off the stamp get 0.
    """
    half = stamp.shape[0] // 2
    sx = np.asarray(px, dtype=int) - ix + half
    sy = np.asarray(py, dtype=int) - iy + half
    inside = (sx >= 0) & (sx < stamp.shape[1]) & (sy >= 0) & (sy < stamp.shape[0])
    out = np.zeros(sx.shape)
    out[inside] = stamp[sy[inside], sx[inside]]
    return out


def stamp_gradient(stamp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(d/dx, d/dy)`` of a PSF stamp by fourth-order central differences (zero beyond its edge).

    The error is ~ k^4 h^4 / 30: 0.4% at the core of a 3-pixel FWHM.
    """
    padded = np.pad(stamp, 2)
    gx = (-padded[2:-2, 4:] + 8.0 * padded[2:-2, 3:-1] - 8.0 * padded[2:-2, 1:-3] + padded[2:-2, :-4]) / 12.0
    gy = (-padded[4:, 2:-2] + 8.0 * padded[3:-1, 2:-2] - 8.0 * padded[1:-3, 2:-2] + padded[:-4, 2:-2]) / 12.0
    return gx, gy


def stamp_mask(bad: np.ndarray, ix: int, iy: int, half: int) -> np.ndarray:
    """The cutout's bad pixels on a ``2 half + 1`` stamp centred on ``(ix, iy)``; off-image is bad."""
    side = 2 * half + 1
    out = np.ones((side, side), dtype=bool)
    ny, nx = bad.shape
    y0, x0 = iy - half, ix - half
    ys, xs = slice(max(y0, 0), min(y0 + side, ny)), slice(max(x0, 0), min(x0 + side, nx))
    out[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0] = bad[ys, xs]
    return out


def kept_fraction_errors(
    stamp: np.ndarray,
    radius_px: float,
    offset: tuple[float, float],
    mask: np.ndarray | None,
    *,
    width_err: float,
    centroid_err_px: float,
) -> tuple[float, float]:
    """Uncertainty of the encircled energy from the PSF width and the centroid.

    Parameters
    ----------
    stamp : ndarray
        The source's PSF image (:func:`shifted_psf`).
    radius_px : float
        Aperture radius.
    offset : (float, float)
        The source's offset from the stamp's central pixel.
    mask : ndarray of bool or None
        Bad pixels on the stamp.
    width_err : float
        Fractional 1-sigma uncertainty of the PSF width.
    centroid_err_px : float
        1-sigma uncertainty of the position per axis, pixels.

    Returns
    -------
    width, centroid : float
        Standard deviations of the encircled energy. A PSF wider by a factor
        ``s`` has the encircled energy of the given one at ``R / s``, so the
        width term is half the difference between ``R / (1 + e)`` and
        ``R / (1 - e)``. A position off by ``d`` (rms ``sqrt(2)`` x the
        per-axis error) loses ``EE(0) - EE(d)``, a one-sided error whose
        mean equals its standard deviation for a 2-D Gaussian offset.
    """

    def ee(radius: float, dx: float = 0.0) -> float:
        return image_encircled_energy(stamp, radius, offset=(offset[0] + dx, offset[1]), mask=mask)

    width = 0.0
    if width_err > 0:
        width = 0.5 * abs(ee(radius_px / (1.0 - width_err)) - ee(radius_px / (1.0 + width_err)))
    centroid = 0.0
    if centroid_err_px > 0:
        shift = min(np.sqrt(2.0) * centroid_err_px, radius_px)
        centroid = abs(ee(radius_px) - ee(radius_px, shift))
    return float(width), float(centroid)
