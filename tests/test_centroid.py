"""Clump centres refined by a PSF fit before the apertures (photometry.centroid)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from astropy.wcs import WCS

from clumpcat.photometry.aperture_correction import band_psf
from clumpcat.photometry.apertures import PhotometrySettings, measure_galaxy
from clumpcat.photometry.centroid import refine_centres
from clumpcat.survey.cutouts import Cutout
from clumpcat.survey.psf import draw_psf

SIDE = 80
SKY_SIGMA = 0.1
HALF = 15


def _scene(rng, sources, family="moffat", fwhm=3.5, **kwargs):
    """A curved, sloped host with point sources ``(x, y, flux)`` and Gaussian noise."""
    yy, xx = np.mgrid[0:SIDE, 0:SIDE]
    image = 2.0 + 0.02 * (xx - 40) - 0.01 * (yy - 40) + 0.0005 * (yy - 40) ** 2
    for x, y, flux in sources:
        ix, iy = int(np.rint(x)), int(np.rint(y))
        stamp = draw_psf(family, fwhm, half_width=HALF, offset=(x - ix, y - iy), **kwargs)
        image[iy - HALF : iy + HALF + 1, ix - HALF : ix + HALF + 1] += flux * stamp
    image = image + rng.normal(0.0, SKY_SIGMA, image.shape)
    psf = draw_psf(family, fwhm, half_width=HALF, **kwargs)
    return image, psf


@pytest.mark.parametrize(("family", "kwargs"), [("gaussian", {}), ("moffat", {"beta": 2.5})])
def test_offset_centres_come_back_to_the_source(family, kwargs):
    rng = np.random.default_rng(3)
    fwhm = 3.5
    before, after = [], []
    for _ in range(30):
        tx, ty = 40 + rng.uniform(-0.5, 0.5), 40 + rng.uniform(-0.5, 0.5)
        image, psf = _scene(rng, [(tx, ty, 60.0)], family, fwhm, **kwargs)
        # Detector-like errors: ~0.3 FWHM, inside the accepted one FWHM.
        sx, sy = tx + rng.uniform(-1.0, 1.0), ty + rng.uniform(-1.0, 1.0)
        fit = refine_centres(
            image, [sx], [sy], band_psf(psf, fwhm), fwhm, sigma=np.full(image.shape, SKY_SIGMA)
        )
        assert fit.refined[0] and fit.snr[0] > 20
        before.append(np.hypot(sx - tx, sy - ty))
        after.append(np.hypot(fit.x[0] - tx, fit.y[0] - ty))
    # The photon-limited centroid error here is ~0.05 px per axis.
    assert np.median(after) < 0.1 < 0.5 < np.median(before)
    assert np.max(after) < 0.3


def test_faint_or_far_clumps_keep_the_detector_centre():
    rng = np.random.default_rng(4)
    fwhm = 3.5
    image, psf = _scene(rng, [(30.2, 40.1, 2.0), (50.3, 40.4, 80.0)], "gaussian", fwhm)
    # The first is at S/N ~1.5; the second starts 1 FWHM from its source.
    fit = refine_centres(image, [30.9, 50.3 + fwhm], [40.5, 40.4], band_psf(psf, fwhm), fwhm)
    assert not fit.refined.any()
    assert fit.x.tolist() == [30.9, 50.3 + fwhm] and fit.y.tolist() == [40.5, 40.4]


def test_a_close_neighbour_does_not_pull_the_centre():
    rng = np.random.default_rng(5)
    fwhm = 3.5
    truth = [(38.0, 40.0, 60.0), (38.0 + 2.0 * fwhm, 40.3, 120.0)]
    image, psf = _scene(rng, truth, "gaussian", fwhm)
    start_x = np.array([38.6, 38.0 + 2.0 * fwhm - 0.5])
    start_y = np.array([39.6, 40.7])
    fit = refine_centres(
        image, start_x, start_y, band_psf(psf, fwhm), fwhm, sigma=np.full(image.shape, SKY_SIGMA)
    )
    assert fit.refined.all()
    for k, (tx, ty, _) in enumerate(truth):
        assert np.hypot(fit.x[k] - tx, fit.y[k] - ty) < 0.15, k


def test_photometry_at_refined_centres_recovers_the_flux():
    """An aperture 0.8 px off reads a point source low; measured at the refined centre it does not."""
    rng = np.random.default_rng(6)
    fwhm = 3.0
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.cdelt = [-0.396 / 3600, 0.396 / 3600]
    wcs.wcs.crpix = [40, 40]
    wcs.wcs.crval = [150.0, 2.0]
    rows = {True: [], False: []}
    for _ in range(25):
        tx, ty = 40 + rng.uniform(-0.5, 0.5), 40 + rng.uniform(-0.5, 0.5)
        image, psf = _scene(rng, [(tx, ty, 200.0)], "moffat", fwhm, beta=3.0)
        ivar = np.full(image.shape, SKY_SIGMA**-2)
        cutout = Cutout("g", {"r": image}, wcs, {"r": fwhm * 0.396}, {"r": ivar}, {"r": psf})
        angle = rng.uniform(0, 2 * np.pi)
        clumps = pd.DataFrame(
            {"objid": ["g"], "x": [tx + 0.8 * np.cos(angle)], "y": [ty + 0.8 * np.sin(angle)]}
        )
        for recentre in (True, False):
            settings = PhotometrySettings(background="joint", recentre=recentre)
            out = measure_galaxy(cutout, clumps, bands=("r",), settings=settings)
            assert bool(out["recentred"].iloc[0]) is recentre
            assert out["x_det"].iloc[0] == clumps["x"].iloc[0]
            rows[recentre].append((out["flux_nmgy_r"].iloc[0], out["flux_nmgy_err_r"].iloc[0]))
    for recentre, values in rows.items():
        flux, err = np.array(values).T
        ratio = np.median(flux / 200.0 - 1)
        if recentre:
            assert abs(ratio) < 0.01, ratio
            assert np.std((flux - 200.0) / err) < 1.3
        else:
            assert ratio < -0.02, ratio
