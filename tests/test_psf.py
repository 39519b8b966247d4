"""The PSF module: half-maximum FWHM, analytic profiles, encircled energy."""

import numpy as np
import pytest
from astropy.modeling.models import Moffat2D
from photutils.aperture import CircularAperture, aperture_photometry
from scipy import ndimage

from clumpcat.survey.psf import draw_psf, encircled_energy, measure_fwhm, normalise_psf


@pytest.mark.parametrize("family", ["gaussian", "moffat", "double_gaussian"])
@pytest.mark.parametrize("fwhm", [2.5, 4.0, 6.0])
def test_measured_fwhm_is_the_half_maximum_width(family, fwhm):
    # The expectation comes from the continuous profile convolved with the
    # pixel (box of 1 px), sampled at 1/16 px: the area above half maximum of
    # the light a pixel collects, as a function of pixel position.
    shape = {"beta": 2.5, "wing_fraction": 0.2, "wing_ratio": 2.0}
    psf = draw_psf(family, fwhm, half_width=30, **shape)
    n = 16
    r = np.arange(-6 * fwhm, 6 * fwhm + 1e-9, 1 / n)
    r2 = r[:, None] ** 2 + r[None, :] ** 2
    from clumpcat.survey.psf import _profile

    fine = ndimage.uniform_filter(_profile(r2, family, fwhm, **shape), size=n)
    expected = 2 * np.sqrt((fine >= 0.5 * fine.max()).sum() / n**2 / np.pi)
    assert measure_fwhm(psf) == pytest.approx(expected, rel=0.02)


def test_wings_do_not_widen_the_half_maximum_fwhm():
    # A strong wing doubles the second-moment width but leaves the core alone;
    # the second moments are what made the HSC FWHM 1.6-2.1x too large.
    core = draw_psf("gaussian", 4.0, half_width=30)
    winged = draw_psf("double_gaussian", 4.0, wing_fraction=0.3, wing_ratio=3.0, half_width=30)
    yy, xx = np.mgrid[-30:31, -30:31]
    second = [np.sqrt((p * (xx**2 + yy**2)).sum()) for p in (core, winged)]
    assert second[1] > 1.5 * second[0]
    assert measure_fwhm(winged) == pytest.approx(measure_fwhm(core), rel=0.03)


def test_moffat_matches_astropy_model():
    fwhm, beta = 5.0, 3.0
    alpha = fwhm / (2 * np.sqrt(2 ** (1 / beta) - 1))
    y, x = np.mgrid[-20:21, -20:21] / 1.0
    # Point-sample a finely oversampled astropy Moffat2D and bin it to pixels.
    n = 8
    yf, xf = np.mgrid[-20.5 + 0.5 / n : 20.5 : 1 / n, -20.5 + 0.5 / n : 20.5 : 1 / n]
    fine = Moffat2D(1.0, 0, 0, alpha, beta)(xf, yf)
    binned = fine.reshape(41, n, 41, n).mean(axis=(1, 3))
    binned /= binned.sum()
    np.testing.assert_allclose(draw_psf("moffat", fwhm, beta=beta, half_width=20), binned, atol=2e-6)
    assert x.shape == y.shape


def test_encircled_energy_equals_aperture_sum_of_a_point_source():
    psf = draw_psf("moffat", 3.5, beta=3.0, half_width=15, offset=(0.3, -0.2))
    radius = 1.125 * 3.5
    centre = (15.3, 14.8)
    expected = aperture_photometry(psf, CircularAperture(centre, r=radius), method="exact")["aperture_sum"][0]
    assert encircled_energy(psf, radius, offset=(0.3, -0.2)) == pytest.approx(expected, rel=1e-9)
    mask = np.zeros_like(psf, dtype=bool)
    mask[15, 15] = True
    assert encircled_energy(psf, radius, offset=(0.3, -0.2), mask=mask) < expected


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.ones((4, 5)), "odd"),
        (np.ones((5,)), "2-D"),
        (np.full((5, 5), np.nan), "NaN"),
        (np.zeros((5, 5)), "sums"),
    ],
)
def test_normalise_psf_rejects_contract_breaks(image, message):
    with pytest.raises(ValueError, match=message):
        normalise_psf(image)
