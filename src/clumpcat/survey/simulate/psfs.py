"""The simulator's PSF: a GalSim profile per family, drawn to a target FWHM.

A galaxy's PSF has one shape in every band (:class:`PsfShape`: a Gaussian, a
Moffat of index ``beta``, or a double Gaussian with a share of the flux in a
wider wing, as SDSS photo models the PSF) and a per-band size. The size is set
so that the *pixel-integrated* image of the PSF, the image the cutout carries
as ``PSF_<BAND>``, has the requested half-maximum FWHM as
:func:`clumpcat.survey.psf.measure_fwhm` measures it (DESIGN.md, cutout
contract). The same image is the kernel the scene is convolved with, so the
cutout's PSF is the PSF of its pixels by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import galsim
import numpy as np
from scipy.optimize import brentq

from clumpcat.constants import SDSS_PIXEL_SCALE
from clumpcat.survey.psf import PSF_FAMILIES, measure_fwhm, normalise_psf, stamp_half_width

__all__ = ["PsfShape", "SimulatedPsf", "psf_profile", "draw_kernel", "matched_psf", "EE_STAMP"]

#: Share of the PSF's flux the stamp holds at least (Moffat wings of beta
#: ~2.5 need ~5 FWHM for it; every other shape is inside 4 FWHM).
EE_STAMP = 0.995
#: Pixel-integration widens a profile by about this much in quadrature
#: (pixels): the first guess of the profile's own FWHM.
_PIXEL_FWHM_PX = 0.8
#: Target accuracy of the pixel-integrated FWHM. ``measure_fwhm`` counts the
#: area above half maximum on an 8x finer grid, in steps of 8 sub-pixels for a
#: centred PSF (its 8-fold symmetry), so its FWHM moves in steps of
#: ``1 / (4 pi FWHM)`` pixels: 1.6% at 2.2 px, 0.2% at 6.4 px.
_FWHM_RTOL = 0.004
_MAX_ITERATIONS = 5


@dataclass(frozen=True)
class PsfShape:
    """The shape of a galaxy's PSF, shared by its bands.

    Attributes
    ----------
    family : str
        One of :data:`clumpcat.survey.psf.PSF_FAMILIES`.
    beta : float
        Moffat index (NaN for the other families).
    wing_fraction : float
        Double Gaussian: share of the flux in the wing (NaN otherwise).
    wing_ratio : float
        Double Gaussian: wing sigma / core sigma (NaN otherwise).
    """

    family: str
    beta: float = float("nan")
    wing_fraction: float = float("nan")
    wing_ratio: float = float("nan")

    def __post_init__(self) -> None:
        if self.family not in PSF_FAMILIES:
            raise ValueError(f"PSF family must be one of {', '.join(PSF_FAMILIES)}, got {self.family!r}")
        if self.family == "moffat" and not self.beta > 1.5:
            raise ValueError(f"Moffat beta must be > 1.5 (finite flux and FWHM), got {self.beta}")
        if self.family == "double_gaussian" and not (
            0.0 < self.wing_fraction < 1.0 and self.wing_ratio > 1.0
        ):
            raise ValueError(
                "double Gaussian needs 0 < wing_fraction < 1 and wing_ratio > 1, got "
                f"{self.wing_fraction}, {self.wing_ratio}"
            )


@dataclass(frozen=True)
class SimulatedPsf:
    """One band's PSF as drawn: the kernel, its measured FWHM and its profile.

    Attributes
    ----------
    image : ndarray
        Pixel-integrated, centred, odd-side image summing to 1.
    fwhm_arcsec : float
        Half-maximum FWHM measured on ``image`` times the pixel scale.
    profile_fwhm_arcsec : float
        FWHM of the profile before the pixel response.
    """

    image: np.ndarray
    fwhm_arcsec: float
    profile_fwhm_arcsec: float


def _double_gaussian_fwhm_per_sigma(wing_fraction: float, wing_ratio: float) -> float:
    """FWHM of core + wing in units of the core sigma."""
    w, k = wing_fraction, wing_ratio

    def value(r: float) -> float:
        return (1.0 - w) * np.exp(-0.5 * r * r) + w / k**2 * np.exp(-0.5 * r * r / k**2)

    peak = value(0.0)
    return 2.0 * brentq(lambda r: value(r) - 0.5 * peak, 0.0, 10.0 * k)


def psf_profile(shape: PsfShape, fwhm_arcsec: float) -> galsim.GSObject:
    """GalSim profile of unit flux and FWHM ``fwhm_arcsec`` before the pixel response."""
    if shape.family == "gaussian":
        return galsim.Gaussian(fwhm=fwhm_arcsec)
    if shape.family == "moffat":
        return galsim.Moffat(beta=shape.beta, fwhm=fwhm_arcsec)
    sigma = fwhm_arcsec / _double_gaussian_fwhm_per_sigma(shape.wing_fraction, shape.wing_ratio)
    return galsim.Sum(
        galsim.Gaussian(sigma=sigma, flux=1.0 - shape.wing_fraction),
        galsim.Gaussian(sigma=shape.wing_ratio * sigma, flux=shape.wing_fraction),
    )


def _half_width(shape: PsfShape, fwhm_px: float) -> int:
    """Stamp half width (pixels): 4 FWHM, or more where a Moffat wing needs it for :data:`EE_STAMP`."""
    half = stamp_half_width(fwhm_px, 4.0)
    if shape.family == "moffat":
        alpha = fwhm_px / (2.0 * np.sqrt(2.0 ** (1.0 / shape.beta) - 1.0))
        # Moffat encircled energy 1 - (1 + r^2/alpha^2)^(1 - beta), solved for r.
        radius = alpha * np.sqrt((1.0 - EE_STAMP) ** (1.0 / (1.0 - shape.beta)) - 1.0)
        half = max(half, int(np.ceil(radius)))
    return half


def draw_kernel(
    shape: PsfShape, profile_fwhm_arcsec: float, half: int, scale: float = SDSS_PIXEL_SCALE
) -> np.ndarray:
    """Pixel-integrated image ``(2 half + 1)^2`` of the profile, centred, summing to 1."""
    image = galsim.ImageD(2 * half + 1, 2 * half + 1, scale=scale)
    profile = galsim.Convolve(psf_profile(shape, profile_fwhm_arcsec), galsim.Pixel(scale), real_space=False)
    profile.drawImage(image=image, method="no_pixel")
    # Unit sum over the stamp: the stamp is then exactly the PSF of the pixels
    # it convolves (the <0.5% beyond its edge is not drawn anywhere).
    return normalise_psf(image.array, what="simulated PSF")


def _core_fwhm_px(image: np.ndarray, target_px: float) -> float:
    """measure_fwhm on the stamp's core: the same value, a fraction of the time."""
    c = image.shape[0] // 2
    h = min(c, int(np.ceil(target_px)) + 3)
    return measure_fwhm(image[c - h : c + h + 1, c - h : c + h + 1])


def matched_psf(shape: PsfShape, fwhm_arcsec: float, scale: float = SDSS_PIXEL_SCALE) -> SimulatedPsf:
    """The PSF of one band whose pixel-integrated image has half-maximum FWHM ``fwhm_arcsec``.

    The profile's own FWHM is found by a few fixed-point steps assuming the
    pixel adds in quadrature (``m^2 = f^2 + p^2``, ``p`` re-estimated each
    step), until the measured FWHM is within 0.4% of the target or one
    step of ``measure_fwhm``'s resolution; the closest of at most five
    drawings is kept.

    Parameters
    ----------
    shape : PsfShape
    fwhm_arcsec : float
        Target half-maximum FWHM of the pixel-integrated PSF, arcsec.
    scale : float
        Pixel scale, arcsec.

    Returns
    -------
    SimulatedPsf
        Its ``fwhm_arcsec`` is measured on its image (what the cutout's
        ``PSF_FWHM`` says), not the target.
    """
    target = fwhm_arcsec / scale
    if not target > 1.0:
        raise ValueError(f"PSF FWHM must exceed one pixel, got {fwhm_arcsec} arcsec at {scale} arcsec/px")
    half = _half_width(shape, target)
    tolerance = max(_FWHM_RTOL * target, 1.0 / (4.0 * np.pi * target))
    profile_px = np.sqrt(max(target**2 - _PIXEL_FWHM_PX**2, (0.5 * target) ** 2))
    best = None
    for _ in range(_MAX_ITERATIONS):
        image = draw_kernel(shape, profile_px * scale, half, scale)
        measured = _core_fwhm_px(image, target)
        if best is None or abs(measured - target) < abs(best[1] - target):
            best = (image, measured, profile_px)
        if abs(measured - target) <= tolerance:
            break
        pixel2 = measured**2 - profile_px**2
        profile_px = np.sqrt(max(target**2 - pixel2, (0.25 * target) ** 2))
    image, measured, profile_px = best
    return SimulatedPsf(
        image=image, fwhm_arcsec=float(measured * scale), profile_fwhm_arcsec=float(profile_px * scale)
    )
