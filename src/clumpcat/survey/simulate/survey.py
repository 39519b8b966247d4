"""The synthetic SDSS-like survey: draw, render and write galaxies.

Each galaxy depends only on ``(seed, index)``: its model is drawn from
``numpy.random.default_rng([seed, index, 0])`` and its noise from
``default_rng([seed, index, 1])``, so any shard ``first..first+count-1``
is made on its own and the union of shards equals the unsharded run.

Its observing conditions (sky noise, PSF shape; :mod:`.conditions`) come from
``default_rng([seed, index, 2])``.

A galaxy is first drawn as numbers (:func:`draw_galaxy`, microseconds), then
rendered (:func:`render_galaxy`): each band's PSF is drawn once with GalSim
(:mod:`.psfs`), the host's components are drawn once and combined per band by
colour, convolved with the band's PSF image, clumps and stars added at exact
sub-pixel positions in Fourier space, Galactic reddening applied and noise
added. The PSF images travel with the cutout (``PSF_<BAND>``) and their
measured half-maximum FWHM is its ``PSF_FWHM``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import galsim
import numpy as np
import pandas as pd
from scipy import ndimage

from clumpcat.constants import APERTURE_RADIUS_FWHM, SDSS_BANDS, SDSS_PIXEL_SCALE
from clumpcat.logs import progress
from clumpcat.paths import objid_path
from clumpcat.survey.cutouts import Cutout, write_cutout
from clumpcat.survey.galaxies import GALAXY_COLUMNS
from clumpcat.survey.psf import encircled_energy, normalise_psf
from clumpcat.survey.simulate import colours, observe
from clumpcat.survey.simulate.conditions import (
    CONDITION_COLUMNS,
    Conditions,
    draw_conditions,
    seeing_range,
)
from clumpcat.survey.simulate.hosts import HostModel, cutout_side, draw_host, host_components
from clumpcat.survey.simulate.psfs import SimulatedPsf, matched_psf
from clumpcat.survey.simulate.sources import BackgroundGalaxy, Source, draw_background, draw_sources
from clumpcat.survey.simulate.truth import DETECTION_SNR, truth_frame

__all__ = [
    "GalaxyModel",
    "RenderedGalaxy",
    "GALAXY_TABLE_COLUMNS",
    "REDSHIFT_RANGE",
    "sim_objid",
    "draw_galaxy",
    "render_galaxy",
    "galaxy_psfs",
    "source_fluxes",
    "simulate_galaxies",
    "simulate_survey",
    "galaxy_docs",
]

log = logging.getLogger(__name__)

#: Redshift range of the synthetic hosts (issue 2, item 3).
REDSHIFT_RANGE = (0.02, 0.15)
#: SDSS-like footprint (northern Galactic cap): RA and Dec ranges in degrees.
FOOTPRINT_RA = (120.0, 250.0)
FOOTPRINT_DEC = (-3.0, 65.0)
#: E(B-V) = 0.005 + Exponential(0.025), capped: typical of high Galactic latitude.
_EBV_MIN, _EBV_SCALE, _EBV_MAX = 0.005, 0.025, 0.25
#: Physical petroR90_r, log-normal (kpc): ties redshift to angular size.
_R90_KPC_MEDIAN, _R90_KPC_SIGMA = 12.0, 0.35
#: Absolute r magnitude of the Sun (Willmer 2018) and the Bell et al. (2003)
#: r-band mass-to-light relation log(M/L_r) = -0.306 + 1.097 (g - r).
_MSUN_R = 4.65
_FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
_BELL_A, _BELL_B = -0.306, 1.097

#: Columns of the galaxy table written by ``simulate``, in order (DESIGN.md).
GALAXY_TABLE_COLUMNS: tuple[str, ...] = (
    "objid",
    "ra",
    "dec",
    "redshift",
    "petro_r90_r",
    "axis_ratio",
    "exp_rad_r",
    *(f"psf_fwhm_{b}" for b in SDSS_BANDS),
    "ebv",
    "log_mstar",
    "log_ssfr",
    *(f"host_mag_{b}" for b in SDSS_BANDS),
    *(f"host_mag_err_{b}" for b in SDSS_BANDS),
    *CONDITION_COLUMNS,
)


@dataclass(frozen=True)
class GalaxyModel:
    """Everything about one synthetic galaxy, before any pixel is drawn.

    Attributes
    ----------
    objid : str
        ``sim{seed}-{index:06d}``.
    seed, index : int
    ra, dec : float
        Galaxy centre, degrees (ICRS).
    redshift : float
    ebv : float
        E(B-V) at the galaxy.
    psf_fwhm : dict of str to float
        Per-band effective PSF FWHM (of the PSF convolved with the pixel,
        as a survey reports it), arcsec: the target the PSF is drawn to; the
        cutout reports the FWHM measured on the drawn PSF image.
    conditions : Conditions
        Sky noise scale, exposure and PSF shape.
    host : HostModel
    sources : tuple of Source
        Truth sources (clumps and stars).
    background : tuple of BackgroundGalaxy
        Contaminating background galaxies.
    log_mstar, log_ssfr : float
    """

    objid: str
    seed: int
    index: int
    ra: float
    dec: float
    redshift: float
    ebv: float
    psf_fwhm: dict[str, float]
    conditions: Conditions
    host: HostModel
    sources: tuple[Source, ...]
    background: tuple[BackgroundGalaxy, ...]
    log_mstar: float
    log_ssfr: float

    @property
    def side(self) -> int:
        """Cutout side in pixels (6 x petroR90_r, App. A.1)."""
        return cutout_side(self.host.petro_r90)


@dataclass
class RenderedGalaxy:
    """A rendered galaxy: its cutout, galaxy-table row and truth rows."""

    cutout: Cutout
    galaxy: dict
    truth: pd.DataFrame
    model_images: dict[str, np.ndarray] = field(default_factory=dict, repr=False)


def sim_objid(seed: int, index: int) -> str:
    """objid of the synthetic galaxy ``index`` of survey ``seed``."""
    return f"sim{seed}-{index:06d}"


@lru_cache(maxsize=1)
def _cosmology_grid() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Redshift grid with kpc/arcsec and distance modulus (flat LCDM, H0=70, Om=0.3)."""
    from astropy.cosmology import FlatLambdaCDM

    cosmo = FlatLambdaCDM(H0=70.0, Om0=0.3)
    z = np.linspace(0.005, 0.2, 400)
    kpc = cosmo.kpc_proper_per_arcmin(z).value / 60.0
    dm = cosmo.distmod(z).value
    return z, kpc, dm


def _draw_redshift(rng: np.random.Generator, r90_arcsec: float) -> float:
    """Redshift at which the host's angular size gives a plausible physical size."""
    z, kpc, _dm = _cosmology_grid()
    for _ in range(30):
        r90_kpc = np.exp(rng.normal(np.log(_R90_KPC_MEDIAN), _R90_KPC_SIGMA))
        zz = float(np.interp(r90_kpc / r90_arcsec, kpc, z))
        if REDSHIFT_RANGE[0] < zz < REDSHIFT_RANGE[1]:
            return zz
    return float(rng.uniform(*REDSHIFT_RANGE))


def draw_galaxy(
    seed: int,
    index: int,
    conditions: str = "varied",
    sky_noise_scale: float | None = None,
    psf_family: str | None = None,
) -> GalaxyModel:
    """Draw galaxy ``index`` of the survey ``seed`` (no pixels).

    Parameters
    ----------
    seed : int
        Survey seed (>= 0).
    index : int
        Galaxy number within the survey (>= 0).
    conditions : {'varied', 'nominal'}
        Observing conditions drawn per galaxy, or the one nominal SDSS
        condition (:func:`clumpcat.survey.simulate.conditions.draw_conditions`).
    sky_noise_scale : float, optional
        Fix the sky noise (units of SDSS's) instead of drawing it.
    psf_family : str, optional
        Fix the PSF family instead of drawing it.

    Returns
    -------
    GalaxyModel
        The host, sources and background are the same whatever the
        conditions, except for what scales with the seeing (pair separations,
        sizes of resolved clumps).
    """
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    observing = draw_conditions(seed, index, conditions, sky_noise_scale, psf_family)
    rng = np.random.default_rng([seed, index, 0])
    ra = float(rng.uniform(*FOOTPRINT_RA))
    sin_lo, sin_hi = np.sin(np.deg2rad(FOOTPRINT_DEC))
    dec = float(np.rad2deg(np.arcsin(rng.uniform(sin_lo, sin_hi))))
    ebv = float(min(_EBV_MIN + rng.exponential(_EBV_SCALE), _EBV_MAX))
    psf = observe.draw_psf_fwhm(rng, fwhm_range=seeing_range(conditions))
    host = draw_host(rng)
    redshift = _draw_redshift(rng, host.petro_r90)
    side = cutout_side(host.petro_r90)
    sources = tuple(draw_sources(rng, host, side, psf["r"]))
    background = tuple(draw_background(rng, side))
    flux = host.flux()
    gr = -2.5 * np.log10(flux[1] / flux[2])
    _z, _kpc, dm = _cosmology_grid()
    abs_r = observe.nmgy_to_mag(flux[2]) - float(np.interp(redshift, _z, dm))
    log_mstar = -0.4 * (abs_r - _MSUN_R) + _BELL_A + _BELL_B * gr
    # colour-sSFR relation of star-forming galaxies (cf. Salim et al. 2007)
    log_ssfr = -9.3 - 2.0 * (gr - 0.4) + rng.normal(0.0, 0.2)
    return GalaxyModel(
        objid=sim_objid(seed, index),
        seed=int(seed),
        index=int(index),
        ra=ra,
        dec=dec,
        redshift=redshift,
        ebv=ebv,
        psf_fwhm=psf,
        conditions=observing,
        host=host,
        sources=sources,
        background=background,
        log_mstar=float(log_mstar),
        log_ssfr=float(log_ssfr),
    )


def source_fluxes(model: GalaxyModel) -> tuple[np.ndarray, np.ndarray]:
    """Observed (reddened) ugriz fluxes of the host and of each truth source.

    Returns
    -------
    host : ndarray, shape (5,)
        Host flux in nanomaggies, all components, no clumps or stars.
    sources : ndarray, shape (n_sources, 5)
        Source fluxes in nanomaggies. A clump's u flux is
        ``10**log_ratio x host u flux``; a star's r flux is
        ``10**log_ratio x host r flux``; other bands follow the colours.
    """
    ext = observe.extinction_factors(model.ebv)
    host = model.host.flux() * ext
    out = np.zeros((len(model.sources), len(SDSS_BANDS)))
    for k, src in enumerate(model.sources):
        i = SDSS_BANDS.index(src.ratio_band)
        sed = colours.colours_to_sed(src.colours) * ext
        out[k] = 10.0**src.log_ratio * host[i] * sed / sed[i]
    return host, out


def _background_scene(model: GalaxyModel, side: int, ext: np.ndarray) -> np.ndarray:
    """Pre-PSF images (5, side, side) of the background galaxies, reddened."""
    scene = np.zeros((len(SDSS_BANDS), side, side))
    scale = SDSS_PIXEL_SCALE
    for g in model.background:
        profile = (
            galsim.Exponential(half_light_radius=g.re)
            if g.n == 1.0
            else galsim.DeVaucouleurs(half_light_radius=g.re, trunc=8.0 * g.re)
        )
        profile = profile.shear(q=g.axis_ratio, beta=g.beta * galsim.radians)
        half = int(min(np.ceil(6.0 * g.re / scale) + 2, side))
        ix, iy = int(np.rint(g.x)), int(np.rint(g.y))
        image = galsim.ImageD(2 * half + 1, 2 * half + 1, scale=scale)
        profile.drawImage(image=image, method="no_pixel", offset=(g.x - ix, g.y - iy))
        stamp = image.array / image.array.sum()
        fluxes = observe.mag_to_nmgy(g.mag_r) * colours.colours_to_sed(g.colours) * ext
        for b in range(len(SDSS_BANDS)):
            observe.add_stamp(scene[b], stamp, ix, iy, fluxes[b])
    return scene


def _host_mag_errors(host_flux: np.ndarray, petro_r90: float, conditions: Conditions) -> np.ndarray:
    """Magnitude errors: Poisson noise of the host plus sky inside petroR90_r."""
    npix = np.pi * (petro_r90 / SDSS_PIXEL_SCALE) ** 2
    err = np.empty(len(SDSS_BANDS))
    for b, band in enumerate(SDSS_BANDS):
        electrons = observe.ELECTRONS_PER_NMGY[band] * conditions.exposure
        sky = observe.sky_sigma(band) * conditions.sky_noise_scale
        var = host_flux[b] / electrons + npix * sky**2
        err[b] = 2.5 / np.log(10.0) * np.sqrt(var) / host_flux[b]
    return err


def galaxy_psfs(model: GalaxyModel, scale: float = SDSS_PIXEL_SCALE) -> dict[str, SimulatedPsf]:
    """Each band's PSF of a galaxy: its shape, drawn to the band's FWHM (:func:`.psfs.matched_psf`)."""
    return {band: matched_psf(model.conditions.psf, model.psf_fwhm[band], scale) for band in SDSS_BANDS}


def render_galaxy(model: GalaxyModel, noise: bool = True) -> RenderedGalaxy:
    """Render a galaxy model into a cutout with its galaxy row and truth rows.

    Parameters
    ----------
    model : GalaxyModel
    noise : bool
        Add sky and Poisson noise (default). Without it the images are the
        noiseless model; the IVAR planes are the same either way.

    Returns
    -------
    RenderedGalaxy
        ``cutout`` (ugriz nanomaggies, TAN WCS, PSF images and their
        measured FWHM, IVAR), ``galaxy`` (a dict with
        :data:`GALAXY_TABLE_COLUMNS`) and ``truth`` (the truth table's
        columns, :data:`clumpcat.survey.simulate.truth.TRUTH_COLUMNS`).
    """
    side = model.side
    scale = SDSS_PIXEL_SCALE
    sky = model.conditions
    psfs = galaxy_psfs(model, scale)
    fwhm = {band: psf.fwhm_arcsec for band, psf in psfs.items()}
    ext = observe.extinction_factors(model.ebv)
    components = host_components(model.host, side, scale)
    comp_flux = {name: f * ext for name, f in model.host.component_fluxes().items()}
    host_flux, src_flux = source_fluxes(model)
    background = _background_scene(model, side, ext)
    noise_rng = np.random.default_rng([model.seed, model.index, 1])

    images, ivars, variances, models = {}, {}, {}, {}
    for b, band in enumerate(SDSS_BANDS):
        scene = background[b]
        for name, image in components.items():
            scene = scene + comp_flux[name][b] * image
        points = [
            (src.x, src.y, src_flux[k, b], src.size_fwhm / scale / _FWHM_PER_SIGMA)
            for k, src in enumerate(model.sources)
        ]
        band_model = observe.convolve(scene, psfs[band].image, points)
        variances[band] = observe.noise_variance(band_model, band, scale, sky.sky_noise_scale, sky.exposure)
        if noise:
            images[band], ivars[band] = observe.add_noise(
                band_model, band, noise_rng, scale, sky.sky_noise_scale, sky.exposure
            )
        else:
            images[band] = band_model.astype(np.float32)
            ivars[band] = (1.0 / variances[band]).astype(np.float32)
        models[band] = band_model

    wcs = observe.tan_wcs(model.ra, model.dec, (side, side), scale)
    cutout = Cutout(
        objid=model.objid,
        images=images,
        wcs=wcs,
        psf_fwhm=fwhm,
        ivar=ivars,
        psf={band: psf.image for band, psf in psfs.items()},
    )
    galaxy = _galaxy_row(model, host_flux, fwhm)
    truth = _truth_rows(model, wcs, host_flux, src_flux, variances, psfs)
    return RenderedGalaxy(cutout=cutout, galaxy=galaxy, truth=truth, model_images=models)


def _galaxy_row(model: GalaxyModel, host_flux: np.ndarray, fwhm: dict[str, float]) -> dict:
    host = model.host
    mags = observe.nmgy_to_mag(host_flux)
    errs = _host_mag_errors(host_flux, host.petro_r90, model.conditions)
    row = {
        "objid": model.objid,
        "ra": model.ra,
        "dec": model.dec,
        "redshift": model.redshift,
        "petro_r90_r": host.petro_r90,
        "axis_ratio": host.axis_ratio,
        "exp_rad_r": host.disc_re,
        **{f"psf_fwhm_{b}": fwhm[b] for b in SDSS_BANDS},
        "ebv": model.ebv,
        "log_mstar": model.log_mstar,
        "log_ssfr": model.log_ssfr,
        **{f"host_mag_{b}": float(mags[i]) for i, b in enumerate(SDSS_BANDS)},
        **{f"host_mag_err_{b}": float(errs[i]) for i, b in enumerate(SDSS_BANDS)},
        **model.conditions.columns(),
    }
    return row


def _source_encircled(psf: SimulatedPsf, size_fwhm: float, radius_px: float) -> float:
    """Share of a source's light within ``radius_px``: its PSF image, blurred by its own size."""
    image = psf.image
    if size_fwhm > 0:
        sigma_px = size_fwhm / SDSS_PIXEL_SCALE / _FWHM_PER_SIGMA
        image = normalise_psf(ndimage.gaussian_filter(image, sigma_px, mode="constant"))
    return encircled_energy(image, radius_px)


def _truth_rows(model, wcs, host_flux, src_flux, variances, psfs) -> pd.DataFrame:
    if not model.sources:
        return truth_frame([])
    xs = np.array([s.x for s in model.sources])
    ys = np.array([s.y for s in model.sources])
    ra, dec = wcs.wcs_pix2world(xs, ys, 0)
    rows = []
    u = SDSS_BANDS.index("u")
    for k, src in enumerate(model.sources):
        snr = {}
        for band in ("g", "r"):
            fwhm_px = np.hypot(psfs[band].fwhm_arcsec, src.size_fwhm) / SDSS_PIXEL_SCALE
            snr[band] = observe.aperture_snr(
                src_flux[k, SDSS_BANDS.index(band)],
                src.x,
                src.y,
                fwhm_px,
                variances[band],
                APERTURE_RADIUS_FWHM,
                _source_encircled(psfs[band], src.size_fwhm, APERTURE_RADIUS_FWHM * fwhm_px),
            )
        rows.append(
            {
                "objid": model.objid,
                "source_id": k,
                "x": src.x,
                "y": src.y,
                "ra": float(ra[k]),
                "dec": float(dec[k]),
                "label": src.label,
                "kind": src.kind,
                **{f"flux_{b}": float(src_flux[k, i]) for i, b in enumerate(SDSS_BANDS)},
                "flux_ratio_u": float(src_flux[k, u] / host_flux[u]),
                "fwhm_r_px": float(np.hypot(psfs["r"].fwhm_arcsec, src.size_fwhm) / SDSS_PIXEL_SCALE),
                "snr_g": snr["g"],
                "snr_r": snr["r"],
                "detectable": bool(max(snr.values()) >= DETECTION_SNR),
            }
        )
    return truth_frame(rows)


def simulate_galaxies(seed: int, first: int, count: int, **conditions):
    """Yield :class:`RenderedGalaxy` for galaxies ``first .. first + count - 1``.

    ``conditions`` are :func:`draw_galaxy`'s keywords (``conditions``,
    ``sky_noise_scale``, ``psf_family``).
    """
    for index in range(first, first + count):
        yield render_galaxy(draw_galaxy(seed, index, **conditions))


def simulate_survey(
    seed: int,
    first: int,
    count: int,
    cutout_dir: str | Path,
    conditions: str = "varied",
    sky_noise_scale: float | None = None,
    psf_family: str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Simulate galaxies ``first .. first + count - 1`` and write their cutouts.

    Parameters
    ----------
    seed : int
        Survey seed.
    first, count : int
        The shard: galaxy indices ``first`` to ``first + count - 1``.
    cutout_dir : str or Path
        Folder receiving ``{objid}.fits`` (the cutout contract).
    conditions : {'varied', 'nominal'}
        Observing conditions drawn per galaxy (sky noise x0.6-2.2 of SDSS and
        x0.3 coadds, seeing 0.9-2.2", Gaussian / Moffat / double-Gaussian
        PSFs), or the one nominal SDSS condition (x1, Moffat beta 4.765,
        seeing 1.0-1.8").
    sky_noise_scale : float, optional
        Fix every galaxy's sky noise, in units of SDSS's.
    psf_family : {'gaussian', 'moffat', 'double_gaussian'}, optional
        Fix every galaxy's PSF family (its parameters are still drawn).

    Returns
    -------
    galaxies : pandas.DataFrame
        One row per galaxy, :data:`GALAXY_TABLE_COLUMNS`.
    truth : pandas.DataFrame
        One row per truth source, the truth table's columns.
    """
    if first < 0 or count < 0:
        raise ValueError(f"first and count must be >= 0, got first={first}, count={count}")
    cutout_dir = Path(cutout_dir)
    rows, truths = [], []
    galaxies = simulate_galaxies(
        seed, first, count, conditions=conditions, sky_noise_scale=sky_noise_scale, psf_family=psf_family
    )
    for rendered in progress(galaxies, desc="simulate", total=count):
        write_cutout(objid_path(cutout_dir, rendered.cutout.objid, ".fits"), rendered.cutout)
        rows.append(rendered.galaxy)
        truths.append(rendered.truth)
    galaxy_frame = pd.DataFrame(rows, columns=list(GALAXY_TABLE_COLUMNS))
    galaxy_frame = galaxy_frame.astype(
        {c: "float64" for c in GALAXY_TABLE_COLUMNS if c not in ("objid", "psf_family")}
    )
    galaxy_frame["psf_family"] = galaxy_frame["psf_family"].astype(object)
    truth = truth_frame(pd.concat(truths, ignore_index=True)) if truths else truth_frame([])
    log.info(
        "simulated %d galaxies (%d..%d) with %d truth sources (%d detectable)",
        count,
        first,
        first + count - 1,
        len(truth),
        int(truth["detectable"].sum()),
    )
    return galaxy_frame, truth


def galaxy_docs() -> dict:
    """Units and descriptions of the galaxy table's columns.

    Those of :mod:`clumpcat.survey.galaxies`, and the observing conditions
    (:data:`clumpcat.survey.simulate.conditions.CONDITION_COLUMNS`).
    """
    docs = {**GALAXY_COLUMNS, **CONDITION_COLUMNS}
    return {c: docs[c] for c in GALAXY_TABLE_COLUMNS}
