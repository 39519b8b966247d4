"""Shared test fixtures: tiny synthetic cutouts and galaxy tables.

``synthetic_cutout`` builds an in-memory :class:`clumpcat.survey.cutouts.Cutout`
(exponential disc + Gaussian point sources + Gaussian noise, TAN WCS, IVAR);
the fixtures below wrap it. Keep everything small: tests must run in seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.wcs import WCS

from clumpcat.constants import SDSS_BANDS, SDSS_PIXEL_SCALE
from clumpcat.survey.cutouts import Cutout, write_cutout

#: Per-band disc flux (nanomaggies) of the default test galaxy: bluer bands fainter.
DISC_FLUX = {"u": 20.0, "g": 45.0, "r": 70.0, "i": 90.0, "z": 100.0, "y": 105.0}
#: Per-pixel noise sigma (nanomaggies), SDSS-like.
NOISE_SIGMA = 0.02


def tan_wcs(shape: tuple[int, int], pixel_scale: float, ra: float = 150.0, dec: float = 2.0) -> WCS:
    """North-up TAN WCS centred on the cutout, ``pixel_scale`` arcsec/px."""
    ny, nx = shape
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.crpix = [(nx + 1) / 2, (ny + 1) / 2]
    wcs.wcs.cdelt = [-pixel_scale / 3600.0, pixel_scale / 3600.0]
    wcs.wcs.cunit = ["deg", "deg"]
    return wcs


def gaussian(shape: tuple[int, int], x: float, y: float, fwhm_px: float, flux: float) -> np.ndarray:
    """A normalised 2-D Gaussian of total ``flux`` centred on pixel ``(x, y)``."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    sigma = fwhm_px / 2.3548200450309493
    g = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    return flux * g / (2 * np.pi * sigma**2)


def synthetic_cutout(
    objid: str = "gal0",
    *,
    shape: tuple[int, int] = (64, 64),
    bands: Sequence[str] = SDSS_BANDS,
    pixel_scale: float = SDSS_PIXEL_SCALE,
    psf_fwhm: float = 1.4,
    disc_scale_px: float = 6.0,
    disc_flux: Mapping[str, float] | None = None,
    sources: Sequence[tuple[float, float, float]] = ((20.0, 40.0, 3.0), (45.0, 25.0, 2.0)),
    noise: float = NOISE_SIGMA,
    seed: int = 0,
) -> Cutout:
    """A small galaxy cutout in nanomaggies.

    Parameters
    ----------
    objid : str
    shape : (ny, nx)
    bands : bands to make (SDSS ugriz by default; pass HSC_BANDS for grizy)
    pixel_scale : arcsec per pixel
    psf_fwhm : PSF FWHM in arcsec, the same in every band
    disc_scale_px : exponential disc scale length in pixels
    disc_flux : per-band disc flux in nanomaggies (default :data:`DISC_FLUX`)
    sources : (x, y, flux) of point sources, 0-based pixel centres; the flux
        (nanomaggies) is the same in every band
    noise : per-pixel Gaussian sigma in nanomaggies (IVAR = 1 / noise^2; no IVAR if 0)
    seed : random seed of the noise
    """
    rng = np.random.default_rng(seed)
    ny, nx = shape
    yy, xx = np.mgrid[:ny, :nx]
    radius = np.hypot(xx - (nx - 1) / 2, yy - (ny - 1) / 2)
    disc = np.exp(-radius / disc_scale_px)
    disc /= disc.sum()
    fwhm_px = psf_fwhm / pixel_scale
    images, ivar = {}, {}
    for band in bands:
        img = (DISC_FLUX if disc_flux is None else disc_flux).get(band, 50.0) * disc
        for x, y, flux in sources:
            img = img + gaussian(shape, x, y, fwhm_px, flux)
        img = img + rng.normal(0.0, noise, size=shape)
        images[band] = img.astype(np.float32)
        if noise > 0:
            ivar[band] = np.full(shape, 1.0 / noise**2, dtype=np.float32)
    return Cutout(
        objid=objid,
        images=images,
        wcs=tan_wcs(shape, pixel_scale),
        psf_fwhm={b: psf_fwhm for b in bands},
        ivar=ivar,
    )


@pytest.fixture
def make_cutout() -> Callable[..., Cutout]:
    """The :func:`synthetic_cutout` factory (in memory)."""
    return synthetic_cutout


@pytest.fixture
def cutout_dir(tmp_path: Path) -> Callable[..., Path]:
    """Factory writing cutouts for ``objids`` to ``tmp_path/cutouts``; returns the folder.

    Usage: ``folder = cutout_dir(["gal0", "gal1"], shape=(48, 48))``; keyword
    arguments go to :func:`synthetic_cutout` (each objid gets its own seed).
    """

    def write(objids: Sequence[str] = ("gal0", "gal1"), **kwargs) -> Path:
        folder = tmp_path / "cutouts"
        for i, objid in enumerate(objids):
            kw = {"seed": i, **kwargs}
            write_cutout(folder / f"{objid}.fits", synthetic_cutout(objid, **kw))
        return folder

    return write


@pytest.fixture
def galaxy_table() -> pd.DataFrame:
    """A two-galaxy table in the galaxy-table contract."""
    return pd.DataFrame(
        {
            "objid": ["gal0", "gal1"],
            "ra": [150.0, 150.1],
            "dec": [2.0, 2.1],
            "redshift": [0.05, 0.08],
            "petro_r90_r": [4.2, 4.2],
            "psf_fwhm_r": [1.4, 1.4],
        }
    )


@pytest.fixture(scope="module")
def torch_one_thread():
    """Run a module's torch work on one thread (the CI machine has two cores)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
