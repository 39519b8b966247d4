"""Photometry with the PSF at hand (issue 11): aperture corrections from the
cutout's PSF image, the analytic fallback and its flag, errors that hold."""

from __future__ import annotations

import numpy as np
import pytest

from clumpcat.photometry.aperture_correction import band_psf, encircled_energy
from clumpcat.photometry.apertures import PHOT_FLAGS, PhotometrySettings, measure_band
from clumpcat.survey.psf import draw_psf, measure_fwhm
from clumpcat.survey.psf import encircled_energy as image_encircled_energy

#: PSF families of the tests: draw_psf arguments.
FAMILIES = {
    "gaussian": {"family": "gaussian"},
    "moffat2.5": {"family": "moffat", "beta": 2.5},
    "double_gaussian": {"family": "double_gaussian", "wing_fraction": 0.15, "wing_ratio": 2.0},
}
FWHM_PRE = 3.3  # pixels, before pixel integration: SDSS-like sampling
HALF = 20  # PSF stamp half width: 6 FWHM


def _psf(name: str, offset=(0.0, 0.0)) -> np.ndarray:
    kwargs = dict(FAMILIES[name])
    return draw_psf(kwargs.pop("family"), FWHM_PRE, half_width=HALF, offset=offset, **kwargs)


def _scene(rng, name, fluxes, sigma=0.05, sky=0.3, size=64):
    """Point sources of ``fluxes`` at sub-pixel positions on a flat noisy sky, one per 64-px cell."""
    n = len(fluxes)
    image = np.full((size, size * n), sky)
    xs, ys = [], []
    for k, flux in enumerate(fluxes):
        x, y = k * size + 32 + rng.uniform(-0.5, 0.5), 32 + rng.uniform(-0.5, 0.5)
        ix, iy = int(np.rint(x)), int(np.rint(y))
        image[iy - HALF : iy + HALF + 1, ix - HALF : ix + HALF + 1] += flux * _psf(name, (x - ix, y - iy))
        xs.append(x)
        ys.append(y)
    image += rng.normal(0.0, sigma, image.shape)
    ivar = np.full(image.shape, 1.0 / sigma**2 if sigma > 0 else 1e6)
    return image, ivar, np.array(xs), np.array(ys)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_point_source_recovered_with_its_psf_image(name):
    rng = np.random.default_rng(7)
    psf = _psf(name)
    fwhm = measure_fwhm(psf)  # the cutout contract's PSF_FWHM
    image, ivar, x, y = _scene(rng, name, [40.0])
    res = measure_band(image, x, y, fwhm, ivar=ivar, psf=psf)
    assert res["apcorr_source"][0] == "psf"
    assert res["flag"][0] == 0
    assert abs(res["flux"][0] - 40.0) < 2.5 * res["flux_err"][0], (res["flux"][0], res["flux_err"][0])
    # Noiseless: the PSF image's correction and the wing removal are exact to 0.3%.
    clean, _, x, y = _scene(np.random.default_rng(8), name, [40.0], sigma=0.0)
    exact = measure_band(clean, x, y, fwhm, psf=psf, settings=PhotometrySettings(background="median"))
    assert exact["flux"][0] == pytest.approx(40.0, rel=3e-3)
    assert exact["bkg"][0] == pytest.approx(0.3, abs=1e-3)  # the clump's own wing removed
    # Without the image the analytic fallback is used and flagged; a
    # Gaussian fallback misses a broad-winged PSF's light.
    fallback = measure_band(clean, x, y, fwhm, settings=PhotometrySettings(correction="gaussian"))
    assert fallback["apcorr_source"][0] == "gaussian"
    if name == "moffat2.5":
        assert fallback["flux"][0] < 0.85 * 40.0
        # ... and says so: its error carries the profile's uncertainty.
        assert fallback["flux_err"][0] > 0.05 * 40.0


def test_pulls_of_injected_point_sources():
    """~200 injections, S/N 5-60, a beta = 2.5 Moffat PSF: pull std 0.8-1.3, no bias."""
    rng = np.random.default_rng(2026)
    psf = _psf("moffat2.5")
    fwhm = measure_fwhm(psf)
    true, flux, err = [], [], []
    for _ in range(12):
        fluxes = np.exp(rng.uniform(np.log(2.0), np.log(25.0), 17))
        image, ivar, x, y = _scene(rng, "moffat2.5", fluxes)
        res = measure_band(image, x, y, fwhm, ivar=ivar, psf=psf)
        true.append(fluxes)
        flux.append(res["flux"])
        err.append(res["flux_err"])
    true, flux, err = np.concatenate(true), np.concatenate(flux), np.concatenate(err)
    pulls = (flux - true) / err
    assert pulls.size == 204 and np.isfinite(pulls).all()
    assert 0.8 <= np.std(pulls) <= 1.3, np.std(pulls)
    assert abs(np.mean(pulls)) < 0.2
    bright = true > 10.0
    assert abs(np.median(flux[bright] / true[bright]) - 1.0) < 0.01


@pytest.mark.parametrize("beta", [3.0, 4.765])
def test_encircled_energy_of_a_moffat_image_is_the_analytic_one(beta):
    # Well sampled (pixel integration moves EE by < 0.3%) and a stamp
    # reaching 6.4 FWHM (< 0.1% of the light beyond).
    fwhm = 10.0
    psf = draw_psf("moffat", fwhm, beta=beta, half_width=64)
    for k in (0.6, 1.125, 2.0):
        assert image_encircled_energy(psf, k * fwhm) == pytest.approx(
            encircled_energy(k, "moffat", beta), abs=3e-3
        )
    # The fallback draws the profile so that its half-maximum FWHM is the stated one.
    fallback = band_psf(None, 3.5, "moffat", beta)
    assert fallback.source == "moffat"
    assert measure_fwhm(fallback.image) == pytest.approx(3.5, rel=0.01)


def test_masked_pixels_in_the_aperture_are_left_out_of_the_psf_too():
    image, _, x, y = _scene(np.random.default_rng(3), "gaussian", [30.0], sigma=0.0)
    psf = _psf("gaussian")
    fwhm = measure_fwhm(psf)
    ivar = np.ones(image.shape)
    ix, iy = int(np.rint(x[0])), int(np.rint(y[0]))
    ivar[iy, ix + 1] = 0.0  # one pixel next to the peak
    res = measure_band(image, x, y, fwhm, ivar=ivar, psf=psf)
    assert res["flag"][0] & PHOT_FLAGS["bad_pixels"]
    assert res["flux"][0] == pytest.approx(30.0, rel=3e-3)
    assert res["correction"][0] > 1.0 / image_encircled_energy(psf, 1.125 * fwhm) * 1.03
    ivar[iy - 2 : iy + 3, ix - 2 : ix + 3] = 0.0  # the core: most of the light
    res = measure_band(image, x, y, fwhm, ivar=ivar, psf=psf)
    assert res["flag"][0] & PHOT_FLAGS["bad_pixels"] and np.isnan(res["flux"][0])


def test_noise_correction_scales_the_ivar_errors():
    image, ivar, x, y = _scene(np.random.default_rng(4), "gaussian", [5.0])
    psf = _psf("gaussian")
    fwhm = measure_fwhm(psf)
    settings = PhotometrySettings(structure_error=False, psf_width_err_image=0.0, psf_width_err_analytic=0.0)
    one = measure_band(image, x, y, fwhm, ivar=ivar, psf=psf, settings=settings)
    two = measure_band(image, x, y, fwhm, ivar=ivar, psf=psf, settings=settings, noise_scale=2.0)
    assert two["flux"][0] == pytest.approx(one["flux"][0], rel=1e-6)
    assert two["flux_err"][0] == pytest.approx(2.0 * one["flux_err"][0], rel=0.02)


@pytest.mark.parametrize("background", ["quadratic", "joint"])
def test_width_uncertainty_follows_the_psf_source(background):
    """A PSF image brings the survey model's width error, the fallback its own."""
    image, ivar, x, y = _scene(np.random.default_rng(5), "gaussian", [200.0])
    psf = _psf("gaussian")
    fwhm = measure_fwhm(psf)

    def err(psf_image, image_err, analytic_err):
        settings = PhotometrySettings(
            background=background,
            structure_error=False,
            psf_width_err_image=image_err,
            psf_width_err_analytic=analytic_err,
        )
        res = measure_band(image, x, y, fwhm, ivar=ivar, psf=psf_image, settings=settings)
        return res["flux"][0], res["flux_err"][0]

    flux, base = err(psf, 0.0, 0.0)
    # With the PSF image only psf_width_err_image counts ...
    assert err(psf, 0.0, 0.05)[1] == pytest.approx(base, rel=1e-9)
    _, wide = err(psf, 0.01, 0.0)
    width_term = np.sqrt(wide**2 - base**2) / flux
    # ... and it is linear in the width error and of the order of EE's
    # (annulus-only) or the joint fit's (~4x) sensitivity to the width.
    _, wider = err(psf, 0.02, 0.0)
    assert np.sqrt(wider**2 - base**2) / flux == pytest.approx(2.0 * width_term, rel=0.02)
    assert 0.001 < width_term < 0.05
    # Without it the analytic one does, and the image's no longer.
    fb_flux, fb_base = err(None, 0.05, 0.0)
    _, fb_wide = err(None, 0.05, 0.03)
    assert fb_wide > fb_base * 1.001
    assert err(None, 0.0, 0.0)[1] == pytest.approx(fb_base, rel=1e-9)
