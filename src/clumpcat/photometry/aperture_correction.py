"""Aperture corrections for point sources measured in small circular apertures.

Clumps are taken as unresolved (App. E), so the flux lost outside an aperture
of radius ``r`` is the part of the PSF beyond ``r``. The correction is the
inverse of the PSF's encircled-energy fraction at ``r``, computed from the
radius in units of the PSF FWHM, for a circular Gaussian (the paper's choice,
App. E) or a circular Moffat profile.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "MOFFAT_BETA",
    "PROFILES",
    "encircled_energy",
    "surface_density",
    "gaussian_aperture_correction",
    "moffat_aperture_correction",
    "aperture_correction",
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


def surface_density(radius_fwhm, profile: str = "gaussian", beta: float = MOFFAT_BETA):
    """Unit-flux circular PSF per unit area, radius and area in FWHM units.

    Parameters
    ----------
    radius_fwhm : float or array_like
        Distance from the PSF centre divided by the FWHM (>= 0).
    profile : {'gaussian', 'moffat'}
    beta : float
        Moffat index (> 1).

    Returns
    -------
    float or ndarray
        Flux per FWHM^2; divide by FWHM^2 in pixels for the flux per pixel.
        Its integral over the plane is 1 (the derivative of
        :func:`encircled_energy` divided by ``2 pi r``).
    """
    r2 = np.asarray(radius_fwhm, dtype=float) ** 2
    if profile == "gaussian":
        sigma2 = 1.0 / (8.0 * np.log(2.0))
        out = np.exp(-r2 / (2.0 * sigma2)) / (2.0 * np.pi * sigma2)
    elif profile == "moffat":
        if not np.isfinite(beta) or beta <= 1.0:
            raise ValueError(f"Moffat beta must be > 1 (finite total flux), got {beta!r}")
        alpha2 = 1.0 / (4.0 * (2.0 ** (1.0 / beta) - 1.0))
        out = (beta - 1.0) / (np.pi * alpha2) * np.power(1.0 + r2 / alpha2, -beta)
    else:
        raise ValueError(f"PSF profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    return out if out.ndim else float(out)


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
