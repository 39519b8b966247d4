"""Each candidate's own detection S/N (postprocess.min_snr; issue 10)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from astropy.stats import gaussian_fwhm_to_sigma

from clumpcat.constants import ANNULUS_FWHM, APERTURE_RADIUS_FWHM
from clumpcat.postprocess.clumps import postprocess_galaxy
from clumpcat.postprocess.significance import band_snr, candidate_snr, combine_snr
from clumpcat.survey.segments import segment_galaxy

FWHM = 3.5
SIGMA = 0.05
N = 200


def expected_snr(flux: float, sigma: float, fwhm: float) -> float:
    """Gaussian PSF: enclosed flux over the aperture's pixel noise and the annulus-median error."""
    s = fwhm * gaussian_fwhm_to_sigma
    radius = APERTURE_RADIUS_FWHM * fwhm
    enclosed = 1.0 - np.exp(-(radius**2) / (2 * s**2))
    area = np.pi * radius**2
    n_annulus = np.pi * fwhm**2 * (ANNULUS_FWHM[1] ** 2 - ANNULUS_FWHM[0] ** 2)
    return flux * enclosed / (sigma * np.sqrt(area + (np.pi / 2) * area**2 / n_annulus))


def point_source(flux: float, x: float, y: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:N, :N]
    s = FWHM * gaussian_fwhm_to_sigma
    source = flux / (2 * np.pi * s**2) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * s**2))
    return source + rng.normal(0.0, SIGMA, (N, N))


@pytest.mark.parametrize("with_ivar", [True, False])
def test_snr_of_a_known_source_matches_the_expected(with_ivar):
    flux = 4.0  # nanomaggies: expected S/N ~ 9
    ivar = np.full((N, N), SIGMA**-2) if with_ivar else None
    got = [
        band_snr(point_source(flux, 100.3, 99.6, seed), [100.3], [99.6], FWHM, ivar)[0] for seed in range(8)
    ]
    assert np.mean(got) == pytest.approx(expected_snr(flux, SIGMA, FWHM), rel=0.2)


def test_noise_only_positions_scatter_as_unit_normal():
    image = point_source(0.0, 0.0, 0.0, seed=3)
    rng = np.random.default_rng(1)
    x, y = rng.uniform(15, N - 15, 400), rng.uniform(15, N - 15, 400)
    for ivar in (np.full((N, N), SIGMA**-2), None):
        snr = band_snr(image, x, y, FWHM, ivar)
        assert abs(np.mean(snr)) < 0.2 and np.std(snr) == pytest.approx(1.0, rel=0.2)


def test_a_smooth_host_is_not_signal():
    yy, xx = np.mgrid[:N, :N]
    disc = 2.0 * np.exp(-np.hypot(xx - 100, yy - 100) / 25.0)  # ~0.3 nmgy/px at the positions below
    image = disc + np.random.default_rng(2).normal(0.0, SIGMA, (N, N))
    snr = band_snr(image, [150.0, 60.0, 100.0], [100.0, 130.0, 55.0], FWHM, np.full((N, N), SIGMA**-2))
    assert np.all(np.abs(snr) < 3.5)


def test_combination_ignores_negative_and_missing_bands():
    got = combine_snr({"g": np.array([3.0, -4.0, np.nan]), "r": np.array([4.0, 1.0, np.nan])})
    np.testing.assert_allclose(got[:2], [5.0, 1.0])
    assert np.isnan(got[2])


def test_missing_band_gives_nan_but_the_others_count(make_cutout):
    cutout = make_cutout(bands=("g", "r"), sources=((20.0, 40.0, 3.0),))
    snr = candidate_snr(cutout, [20.0], [40.0])
    assert np.isnan(snr["snr_i"][0]) and snr["snr_g"][0] > 10
    assert snr["detection_snr"][0] == pytest.approx(np.hypot(snr["snr_g"][0], snr["snr_r"][0]))


def test_min_snr_drops_candidates_on_empty_sky(make_cutout):
    cutout = make_cutout(
        shape=(96, 96), sources=((40.0, 50.0, 4.0),), disc_scale_px=14.0,
        disc_flux={"g": 150.0, "r": 250.0, "i": 300.0}, bands=("g", "r", "i"),
    )  # fmt: skip
    segment = segment_galaxy(cutout)
    positions = [(40.0, 50.0), (62.0, 40.0), (35.0, 66.0), (58.0, 60.0)]  # a clump, then empty disc
    det = pd.DataFrame(
        {
            "objid": "gal0",
            "x": [p[0] for p in positions],
            "y": [p[1] for p in positions],
            "box_x0": [p[0] - 4 for p in positions],
            "box_y0": [p[1] - 4 for p in positions],
            "box_x1": [p[0] + 5 for p in positions],
            "box_y1": [p[1] + 5 for p in positions],
            "score": [0.9, 0.8, 0.7, 0.6],
            "label": "normal",
        }
    )
    assert segment.mask[[50, 40, 66, 60], [40, 62, 35, 58]].all()
    everything = postprocess_galaxy(det, cutout, segment=segment, min_snr=0.0)
    assert len(everything) == 4 and everything["detection_snr"].iloc[0] > 20
    assert (everything["detection_snr"].iloc[1:] < 3).all()
    cut = postprocess_galaxy(det, cutout, segment=segment, min_snr=3.0)
    assert cut["x"].tolist() == [40.0]
