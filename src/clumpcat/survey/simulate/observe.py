"""Observing a model scene as SDSS would: PSF, reddening, noise, WCS.

Pixels are in nanomaggies (AB zero point 22.5) at 0.396 arcsec/px
(App. A.1). A galaxy's PSF has one shape in every band (Gaussian, Moffat or
double Gaussian: :mod:`.psfs`, drawn per galaxy by :mod:`.conditions`; the
nominal survey's is a Moffat with the atmospheric-turbulence index
beta = 4.765, Trujillo et al. 2001), its FWHM per band scaled from the r band
by SDSS's median seeing ratios. Every PSF FWHM in the simulator (the model's
``psf_fwhm``, the cutouts' ``PSF_FWHM``, the galaxy table's
``psf_fwhm_<band>``, the truth's ``fwhm_r_px``) is the *effective* FWHM of
the PSF convolved with the pixel, the width a survey measures on its images;
the cutouts and tables give the half-maximum FWHM measured on the PSF image
the cutout carries. Noise is sky-limited Gaussian noise set by SDSS 5-sigma
point-source depths, times the galaxy's sky noise scale, plus Poisson noise
of the sources, and the images are sky-subtracted, like SDSS ``frame`` files.

All positions are in the *cutout* frame: FITS pixels, 0-based, ``[y, x]``
indexing, pixel centres at integer coordinates.
"""

from __future__ import annotations

from functools import lru_cache

import galsim
import numpy as np
from astropy.wcs import WCS
from scipy import fft
from scipy.optimize import brentq

from clumpcat.constants import EXTINCTION_R, NANOMAGGY_ZEROPOINT, SDSS_BANDS, SDSS_PIXEL_SCALE

__all__ = [
    "PSF_BETA",
    "PSF_FWHM_RATIO",
    "DEPTH_5SIGMA",
    "ELECTRONS_PER_NMGY",
    "PSF_HALF_WIDTH_FWHM",
    "draw_psf_fwhm",
    "effective_fwhm",
    "moffat_fwhm_for",
    "moffat_alpha",
    "moffat_encircled",
    "psf_profile",
    "source_stamp",
    "shifted_psf",
    "add_stamp",
    "convolve",
    "extinction_factors",
    "sky_sigma",
    "noise_variance",
    "add_noise",
    "tan_wcs",
    "nmgy_to_mag",
    "mag_to_nmgy",
    "aperture_snr",
]

#: Moffat index of the synthetic PSF (Trujillo et al. 2001, Kolmogorov turbulence).
PSF_BETA = 4.765
#: Median SDSS PSF FWHM per band relative to r (DR7 field statistics:
#: u 1.53", g 1.44", r 1.32", i 1.26", z 1.29").
PSF_FWHM_RATIO: dict[str, float] = {"u": 1.16, "g": 1.09, "r": 1.00, "i": 0.955, "z": 0.977}
#: r-band PSF FWHM range of the synthetic survey in arcsec (issue 2, item 3).
PSF_FWHM_R_RANGE = (1.0, 1.8)
#: SDSS 5-sigma point-source depths (AB) at the median seeing of each band.
DEPTH_5SIGMA: dict[str, float] = {"u": 22.15, "g": 23.13, "r": 22.70, "i": 22.20, "z": 20.71}
#: Median seeing (arcsec) at which :data:`DEPTH_5SIGMA` holds.
_DEPTH_FWHM: dict[str, float] = {"u": 1.53, "g": 1.44, "r": 1.32, "i": 1.26, "z": 1.29}
#: Photo-electrons per nanomaggy in a 53.9 s SDSS exposure (gain / calibration,
#: SDSS DR7 typical values); sets the Poisson noise of the sources.
ELECTRONS_PER_NMGY: dict[str, float] = {"u": 160.0, "g": 1050.0, "r": 900.0, "i": 740.0, "z": 145.0}
#: PSF stamps and kernels extend this many FWHM from their centre
#: (99.99% of a beta = 4.765 Moffat's flux).
PSF_HALF_WIDTH_FWHM = 4.0

_FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


def draw_psf_fwhm(
    rng: np.random.Generator, bands=SDSS_BANDS, fwhm_range: tuple[float, float] = PSF_FWHM_R_RANGE
) -> dict[str, float]:
    """Per-band effective PSF FWHM in arcsec: r uniform in ``fwhm_range``, others scaled with 3% scatter.

    Effective: of the PSF convolved with the pixel, as a survey reports it.
    The same random numbers are drawn whatever the range, so a galaxy keeps
    its seeing quantile (and everything drawn after it) across ranges.
    """
    fwhm_r = rng.uniform(*fwhm_range)
    out = {}
    for band in bands:
        jitter = 1.0 if band == "r" else float(np.exp(rng.normal(0.0, 0.03)))
        out[band] = float(fwhm_r * PSF_FWHM_RATIO[band] * jitter)
    return out


def moffat_alpha(fwhm, beta: float = PSF_BETA):
    """Moffat core radius alpha for a given FWHM (same units)."""
    return np.asarray(fwhm) / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))


#: Gauss-Legendre nodes and weights over one pixel, and azimuths over an
#: octant (the pixel-convolved PSF has the square's 8-fold symmetry).
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(24)
_PIX_U, _PIX_V = np.meshgrid(_GL_NODES / 2.0, _GL_NODES / 2.0, indexing="ij")
_PIX_W = np.outer(_GL_WEIGHTS, _GL_WEIGHTS) / 4.0
_OCTANT = (np.arange(8) + 0.5) * (np.pi / 4.0) / 8.0


def _pixel_moffat(radius_px: float, fwhm_px: float, beta: float) -> float:
    """Azimuthal mean at ``radius_px`` of a Moffat (FWHM ``fwhm_px``) convolved with a unit pixel."""
    alpha2 = float(moffat_alpha(fwhm_px, beta)) ** 2
    dx = radius_px * np.cos(_OCTANT)[:, None, None] - _PIX_U
    dy = radius_px * np.sin(_OCTANT)[:, None, None] - _PIX_V
    values = (1.0 + (dx**2 + dy**2) / alpha2) ** (-beta)
    return float(np.mean((values * _PIX_W).sum(axis=(1, 2))))


def _pixel_convolved_fwhm_px(fwhm_px: float, beta: float) -> float:
    """FWHM (pixels) of the azimuthally averaged Moffat convolved with the pixel."""
    half = 0.5 * _pixel_moffat(0.0, fwhm_px, beta)
    return 2.0 * brentq(lambda r: _pixel_moffat(r, fwhm_px, beta) - half, 0.0, 2.0 * fwhm_px + 2.0, xtol=1e-9)


@lru_cache(maxsize=8)
def _effective_fwhm_table(beta: float) -> tuple[np.ndarray, np.ndarray]:
    """log of Moffat FWHM (pixels) and of the effective FWHM, on a grid (0.5-64 px)."""
    moffat = np.geomspace(0.5, 64.0, 160)
    eff = np.array([_pixel_convolved_fwhm_px(p, beta) for p in moffat])
    return np.log(moffat), np.log(eff)


def effective_fwhm(moffat_fwhm_arcsec, scale: float = SDSS_PIXEL_SCALE, beta: float = PSF_BETA):
    """Effective FWHM (arcsec) of a Moffat PSF after convolution with the pixel.

    Parameters
    ----------
    moffat_fwhm_arcsec : float or array_like
        FWHM of the Moffat profile before the pixel response.
    scale : float
        Pixel scale in arcsec.
    beta : float
        Moffat index.

    Returns
    -------
    float or ndarray
        FWHM of the azimuthally averaged pixel-convolved profile, computed by
        quadrature (tabulated, interpolated in log-log; error < 1e-5). For
        beta = 4.765 it is close to ``sqrt(FWHM^2 + (0.79 px)^2)``: 5% wider
        at 2.5 px, 2% at 4 px.
    """
    log_moffat, log_eff = _effective_fwhm_table(float(beta))
    p = np.log(np.asarray(moffat_fwhm_arcsec, dtype=float) / scale)
    if np.any(p < log_moffat[0]) or np.any(p > log_moffat[-1]):
        raise ValueError(
            f"PSF FWHM must be 0.5-64 pixels, got {moffat_fwhm_arcsec!r} arcsec at {scale} arcsec/px"
        )
    out = np.exp(np.interp(p, log_moffat, log_eff)) * scale
    return float(out) if out.ndim == 0 else out


def moffat_fwhm_for(effective_fwhm_arcsec, scale: float = SDSS_PIXEL_SCALE, beta: float = PSF_BETA):
    """FWHM (arcsec) of the Moffat profile whose pixel-convolved FWHM is ``effective_fwhm_arcsec``.

    The inverse of :func:`effective_fwhm`; the simulator draws this profile
    and convolves it with the pixel, so that the image's PSF has the FWHM
    that the cutout reports.
    """
    log_moffat, log_eff = _effective_fwhm_table(float(beta))
    e = np.log(np.asarray(effective_fwhm_arcsec, dtype=float) / scale)
    if np.any(e < log_eff[0]) or np.any(e > log_eff[-1]):
        raise ValueError(
            f"effective PSF FWHM must be {np.exp(log_eff[0]):.2f}-64 pixels, got "
            f"{effective_fwhm_arcsec!r} arcsec at {scale} arcsec/px"
        )
    out = np.exp(np.interp(e, log_eff, log_moffat)) * scale
    return float(out) if out.ndim == 0 else out


def moffat_encircled(radius, fwhm, beta: float = PSF_BETA):
    """Fraction of a Moffat PSF's flux inside ``radius`` (same units as ``fwhm``)."""
    alpha = moffat_alpha(fwhm, beta)
    return 1.0 - (1.0 + (np.asarray(radius) / alpha) ** 2) ** (1.0 - beta)


def psf_profile(fwhm_arcsec: float, size_fwhm_arcsec: float = 0.0) -> galsim.GSObject:
    """GalSim profile of a point (or a Gaussian knot of FWHM ``size``) seen through the PSF.

    ``fwhm_arcsec`` is the Moffat FWHM *before* the pixel response
    (:func:`moffat_fwhm_for` of the effective FWHM).
    """
    psf = galsim.Moffat(beta=PSF_BETA, fwhm=fwhm_arcsec)
    if size_fwhm_arcsec > 0:
        return galsim.Convolve(galsim.Gaussian(fwhm=size_fwhm_arcsec), psf)
    return psf


def _pixel_convolved(profile: galsim.GSObject, scale: float) -> galsim.GSObject:
    # Pixel response by FFT: an untruncated Moffat has no hard edge, so GalSim
    # would not choose slow real-space convolution anyway; say so explicitly.
    return galsim.Convolve(profile, galsim.Pixel(scale), real_space=False)


def source_stamp(
    x: float,
    y: float,
    fwhm_arcsec: float,
    scale: float = SDSS_PIXEL_SCALE,
    size_fwhm_arcsec: float = 0.0,
) -> tuple[np.ndarray, int, int]:
    """Unit-flux image of a point or slightly resolved source at ``(x, y)``.

    Parameters
    ----------
    x, y : float
        Centre in the cutout frame (0-based pixels).
    fwhm_arcsec : float
        Effective PSF FWHM of the band (of the PSF convolved with the pixel,
        as cutouts report it).
    scale : float
        Pixel scale in arcsec.
    size_fwhm_arcsec : float
        Intrinsic Gaussian FWHM of the source (0 for a point).

    Returns
    -------
    stamp : ndarray
        Pixel-integrated image with total flux 1 (minus the far wings).
    ix, iy : int
        Cutout pixel of the stamp's central pixel.
    """
    extent = np.hypot(fwhm_arcsec, size_fwhm_arcsec)
    half = int(np.ceil(PSF_HALF_WIDTH_FWHM * extent / scale))
    ix, iy = int(np.rint(x)), int(np.rint(y))
    image = galsim.ImageD(2 * half + 1, 2 * half + 1, scale=scale)
    profile = _pixel_convolved(psf_profile(moffat_fwhm_for(fwhm_arcsec, scale), size_fwhm_arcsec), scale)
    profile.drawImage(image=image, method="no_pixel", offset=(x - ix, y - iy))
    return image.array, ix, iy


def shifted_psf(psf: np.ndarray, x: float, y: float) -> tuple[np.ndarray, int, int]:
    """A sampled PSF image moved to ``(x, y)``: unit flux, ready for :func:`add_stamp`.

    The sub-pixel shift is a phase ramp in Fourier space, the band-limited
    interpolation :func:`convolve` gives point sources, so a source injected
    with a cutout's ``PSF_<BAND>`` looks like the simulator's own.

    Parameters
    ----------
    psf : ndarray
        Odd-side PSF image centred on its central pixel (unit sum).
    x, y : float
        Centre in the cutout frame (0-based pixels).

    Returns
    -------
    stamp : ndarray
        Same shape as ``psf``, summing to ``psf.sum()``.
    ix, iy : int
        Cutout pixel of the stamp's central pixel.
    """
    ix, iy = int(np.rint(x)), int(np.rint(y))
    half_y, half_x = psf.shape[0] // 2, psf.shape[1] // 2
    stamp = convolve(np.zeros(psf.shape), psf, [(half_x + x - ix, half_y + y - iy, 1.0, 0.0)])
    return stamp, ix, iy


def add_stamp(target: np.ndarray, stamp: np.ndarray, ix: int, iy: int, weight: float = 1.0) -> None:
    """Add ``weight * stamp`` centred on pixel ``(ix, iy)``, clipped at the edges."""
    half_y, half_x = stamp.shape[0] // 2, stamp.shape[1] // 2
    ny, nx = target.shape
    y0, y1 = iy - half_y, iy + half_y + 1
    x0, x1 = ix - half_x, ix + half_x + 1
    cy0, cx0 = max(y0, 0), max(x0, 0)
    cy1, cx1 = min(y1, ny), min(x1, nx)
    if cy0 >= cy1 or cx0 >= cx1:
        return
    target[cy0:cy1, cx0:cx1] += weight * stamp[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]


def convolve(
    image: np.ndarray,
    kernel: np.ndarray,
    points: list[tuple[float, float, float, float]] | tuple = (),
) -> np.ndarray:
    """Linear (zero-padded) convolution of a scene with a centred odd PSF kernel.

    Parameters
    ----------
    image : ndarray
        Scene before the PSF, sampled at pixel centres.
    kernel : ndarray
        Pixel-integrated, centred, odd-side PSF image (:func:`.psfs.matched_psf`).
    points : sequence of (x, y, flux, sigma_px)
        Sources added to the scene in Fourier space, so that their sub-pixel
        positions are exact: a point (``sigma_px = 0``) or a Gaussian knot of
        standard deviation ``sigma_px`` at ``(x, y)`` in the cutout frame.
        Convolved with the kernel they become pixel-integrated PSF images
        (band-limited interpolation of the kernel: for a FWHM of 2.2 px, the
        sharpest of the survey, within 0.5% (Gaussian) to 1.5% (Moffat
        beta 2.5) of the peak of a PSF drawn directly by GalSim at that
        position; flux and centroid exact).

    Returns
    -------
    ndarray
        Same shape as ``image``.
    """
    ny, nx = image.shape
    ky, kx = kernel.shape
    shape = (fft.next_fast_len(ny + ky - 1, real=True), fft.next_fast_len(nx + kx - 1, real=True))
    spectrum = fft.rfft2(image, s=shape)
    if len(points):
        fy = np.fft.fftfreq(shape[0])
        fx = np.fft.rfftfreq(shape[1])
        for x, y, flux, sigma in points:
            phase_y = np.exp(-2j * np.pi * fy * y)
            phase_x = np.exp(-2j * np.pi * fx * x)
            if sigma > 0:
                phase_y = phase_y * np.exp(-2.0 * (np.pi * sigma * fy) ** 2)
                phase_x = phase_x * np.exp(-2.0 * (np.pi * sigma * fx) ** 2)
            spectrum += flux * np.outer(phase_y, phase_x)
    spectrum *= fft.rfft2(kernel, s=shape)
    full = fft.irfft2(spectrum, s=shape)
    return full[ky // 2 : ky // 2 + ny, kx // 2 : kx // 2 + nx]


def extinction_factors(ebv: float, bands=SDSS_BANDS) -> np.ndarray:
    """Observed/intrinsic flux per band, ``10**(-0.4 R_b E(B-V))`` (App. E, SF11 R_b)."""
    return np.array([10.0 ** (-0.4 * EXTINCTION_R[b] * ebv) for b in bands])


def sky_sigma(band: str, scale: float = SDSS_PIXEL_SCALE) -> float:
    """Per-pixel sky noise (nanomaggies) giving SDSS's 5-sigma point-source depth.

    A point source measured optimally has noise ``sigma * sqrt(4 pi s^2)``
    with ``s`` the PSF's Gaussian sigma in pixels, so
    ``sigma = F_5 / (5 sqrt(4 pi s^2))``.
    """
    f5 = mag_to_nmgy(DEPTH_5SIGMA[band])
    s_px = _DEPTH_FWHM[band] / _FWHM_PER_SIGMA / scale
    return float(f5 / (5.0 * np.sqrt(4.0 * np.pi * s_px**2)))


def noise_variance(
    model: np.ndarray,
    band: str,
    scale: float = SDSS_PIXEL_SCALE,
    sky_noise_scale: float = 1.0,
    exposure: float = 1.0,
) -> np.ndarray:
    """Per-pixel variance (nanomaggy^2): sky plus Poisson noise of the model light.

    Parameters
    ----------
    model : ndarray
        Noiseless image in nanomaggies.
    band : str
    scale : float
        Pixel scale in arcsec.
    sky_noise_scale : float
        Sky noise in units of :func:`sky_sigma`.
    exposure : float
        Exposure in SDSS exposures: the photo-electrons per nanomaggy scale with it.
    """
    sky = sky_sigma(band, scale) * sky_noise_scale
    return sky**2 + np.clip(model, 0.0, None) / (ELECTRONS_PER_NMGY[band] * exposure)


def add_noise(
    model: np.ndarray,
    band: str,
    rng: np.random.Generator,
    scale: float = SDSS_PIXEL_SCALE,
    sky_noise_scale: float = 1.0,
    exposure: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Noisy sky-subtracted image and its inverse variance (:func:`noise_variance`).

    Returns
    -------
    image : ndarray of float32
        ``model + noise`` in nanomaggies.
    ivar : ndarray of float32
        Inverse variance in nanomaggy^-2.
    """
    variance = noise_variance(model, band, scale, sky_noise_scale, exposure)
    noisy = model + np.sqrt(variance) * rng.standard_normal(model.shape)
    return noisy.astype(np.float32), (1.0 / variance).astype(np.float32)


def tan_wcs(ra: float, dec: float, shape: tuple[int, int], scale: float = SDSS_PIXEL_SCALE) -> WCS:
    """North-up, east-left gnomonic (TAN) WCS centred on ``(ra, dec)``.

    The reference pixel is the geometric centre of the image, pixel
    ``((nx - 1) / 2, (ny - 1) / 2)`` in the 0-based cutout frame.
    """
    ny, nx = shape
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.cunit = ["deg", "deg"]
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.crpix = [(nx + 1) / 2.0, (ny + 1) / 2.0]
    wcs.wcs.cdelt = [-scale / 3600.0, scale / 3600.0]
    wcs.wcs.radesys = "ICRS"
    wcs.wcs.equinox = 2000.0
    return wcs


def nmgy_to_mag(flux):
    """AB magnitude of a flux in nanomaggies (NaN for non-positive flux)."""
    flux = np.asarray(flux, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(flux > 0, NANOMAGGY_ZEROPOINT - 2.5 * np.log10(flux), np.nan)


def mag_to_nmgy(mag):
    """Flux in nanomaggies of an AB magnitude."""
    return 10.0 ** (-0.4 * (np.asarray(mag, dtype=float) - NANOMAGGY_ZEROPOINT))


def aperture_snr(
    flux: float,
    x: float,
    y: float,
    fwhm_px: float,
    variance: np.ndarray,
    radius_fwhm: float,
    encircled: float | None = None,
) -> float:
    """S/N of a source in a circular aperture, given the per-pixel variance map.

    Parameters
    ----------
    flux : float
        Total flux of the source (nanomaggies).
    x, y : float
        Centre in the cutout frame.
    fwhm_px : float
        Observed FWHM of the source in pixels (PSF, or PSF and size in quadrature).
    variance : ndarray
        Per-pixel variance of the image: sky, host light and sources.
    radius_fwhm : float
        Aperture radius in units of ``fwhm_px``.
    encircled : float, optional
        Share of the source's light inside the aperture, from its own PSF;
        default: that of the nominal Moffat (:func:`moffat_encircled`).

    Returns
    -------
    float
        ``flux * EE(r) / sqrt(sum of variance in the aperture)``; 0 when the
        aperture is off the image.
    """
    radius = radius_fwhm * fwhm_px
    ny, nx = variance.shape
    y0, y1 = max(int(np.floor(y - radius)), 0), min(int(np.ceil(y + radius)) + 1, ny)
    x0, x1 = max(int(np.floor(x - radius)), 0), min(int(np.ceil(x + radius)) + 1, nx)
    if y0 >= y1 or x0 >= x1:
        return 0.0
    yy, xx = np.mgrid[y0:y1, x0:x1]
    inside = (xx - x) ** 2 + (yy - y) ** 2 <= radius**2
    noise = float(np.sqrt(variance[y0:y1, x0:x1][inside].sum()))
    if noise <= 0:
        return 0.0
    if encircled is None:
        encircled = float(moffat_encircled(radius, fwhm_px))
    return float(flux * encircled / noise)
