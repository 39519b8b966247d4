"""Observing conditions of the synthetic survey: sky noise, seeing and the PSF it carries."""

from __future__ import annotations

import argparse
import dataclasses

import galsim
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from astropy.stats import mad_std

from clumpcat.cli import main
from clumpcat.constants import SDSS_BANDS, SDSS_PIXEL_SCALE, SDSS_SKY_SIGMA_R
from clumpcat.errors import InputError
from clumpcat.settings import SimulateSettings
from clumpcat.survey.cutouts import read_cutout, write_cutout
from clumpcat.survey.psf import PSF_FAMILIES, encircled_energy, measure_fwhm
from clumpcat.survey.simulate import cli as sim_cli
from clumpcat.survey.simulate import conditions as cond
from clumpcat.survey.simulate import observe
from clumpcat.survey.simulate.psfs import PsfShape, matched_psf, psf_profile
from clumpcat.survey.simulate.sources import Source
from clumpcat.survey.simulate.survey import draw_galaxy, galaxy_psfs, render_galaxy, source_fluxes


def _quiet(model):
    """The galaxy without background galaxies (their light is not empty sky)."""
    return dataclasses.replace(model, background=())


@pytest.mark.parametrize("scale", [cond.COADD_NOISE_SCALE, 1.0, 2.2])
def test_empty_sky_scatter_is_the_drawn_noise_and_the_ivar(scale):
    model = _quiet(draw_galaxy(2, 5, sky_noise_scale=scale))
    assert model.conditions.sky_noise_scale == scale
    rendered = render_galaxy(model)
    for band in ("u", "r"):
        sigma = observe.sky_sigma(band) * scale
        empty = rendered.model_images[band] < 0.01 * sigma
        assert empty.sum() > 10_000
        scatter = mad_std(rendered.cutout.images[band][empty])
        assert scatter == pytest.approx(sigma, rel=0.03), band
        ivar_sigma = 1.0 / np.sqrt(rendered.cutout.ivar[band][empty])
        assert np.median(ivar_sigma) == pytest.approx(scatter, rel=0.03), band


def test_nominal_sky_noise_is_sdss_measured_noise():
    # The simulator's x1 is the r-band noise of a real SDSS frame (issue 10).
    assert observe.sky_sigma("r") == pytest.approx(SDSS_SKY_SIGMA_R, rel=0.05)


def test_coadds_lower_the_source_poisson_noise_with_the_sky():
    model = draw_galaxy(2, 5)
    single = render_galaxy(
        dataclasses.replace(model, conditions=cond.draw_conditions(2, 5, sky_noise_scale=1.0))
    )
    coadd = render_galaxy(
        dataclasses.replace(model, conditions=cond.draw_conditions(2, 5, sky_noise_scale=0.3))
    )
    assert coadd.galaxy["sky_noise_scale"] == 0.3
    centre = (model.side - 1) // 2
    # A coadd of 1/0.3^2 exposures: every variance term falls by 0.3^2.
    ratio = single.cutout.ivar["r"][centre, centre] / coadd.cutout.ivar["r"][centre, centre]
    assert ratio == pytest.approx(0.3**2, rel=1e-3)
    # ... while a bright single-epoch sky adds sky noise only.
    bright = render_galaxy(
        dataclasses.replace(model, conditions=cond.draw_conditions(2, 5, sky_noise_scale=2.0))
    )
    var_single = 1.0 / single.cutout.ivar["r"][centre, centre]
    var_bright = 1.0 / bright.cutout.ivar["r"][centre, centre]
    assert var_bright - var_single == pytest.approx(3.0 * observe.sky_sigma("r") ** 2, rel=1e-3)


@pytest.mark.parametrize("family", PSF_FAMILIES)
def test_a_point_source_has_the_shape_of_the_psf_hdu(family, tmp_path):
    model = _quiet(draw_galaxy(2, 7, psf_family=family))
    c = (model.side - 1) / 2
    star = Source("star", "odd", c + 40.0, c - 35.0, -0.5, (1.0, 0.4, 0.2, 0.1))
    with_star = render_galaxy(dataclasses.replace(model, sources=(star,)), noise=False)
    without = render_galaxy(dataclasses.replace(model, sources=()), noise=False)
    path = tmp_path / "c.fits"
    write_cutout(path, with_star.cutout)
    cutout = read_cutout(path)
    _host, flux = source_fluxes(dataclasses.replace(model, sources=(star,)))
    for b, band in enumerate(SDSS_BANDS):
        psf = cutout.psf[band]
        h = psf.shape[0] // 2
        ix, iy = int(star.x), int(star.y)
        diff = with_star.cutout.images[band].astype(float) - without.cutout.images[band]
        stamp = diff[iy - h : iy + h + 1, ix - h : ix + h + 1] / flux[0, b]
        assert np.abs(stamp - psf).max() < 1e-4 * psf.max(), band
        assert stamp.sum() == pytest.approx(1.0, abs=1e-4)
        # the header's FWHM is the half-maximum FWHM of this image
        assert measure_fwhm(psf) * cutout.pixel_scale == pytest.approx(cutout.psf_fwhm[band], rel=1e-3)
        assert cutout.psf_fwhm[band] == pytest.approx(model.psf_fwhm[band], rel=0.02)


def test_a_point_between_pixels_is_the_psf_drawn_there():
    model = _quiet(draw_galaxy(2, 7, psf_family="moffat"))
    c = (model.side - 1) / 2
    x, y = c + 40.3, c - 35.15
    star = Source("star", "odd", x, y, -0.5, (1.0, 0.4, 0.2, 0.1))
    diff = (
        render_galaxy(dataclasses.replace(model, sources=(star,)), noise=False)
        .cutout.images["r"]
        .astype(float)
        - render_galaxy(dataclasses.replace(model, sources=()), noise=False).cutout.images["r"]
    )
    psf = galaxy_psfs(model)["r"]
    h = psf.image.shape[0] // 2
    ix, iy = int(round(x)), int(round(y))
    image = galsim.ImageD(2 * h + 1, 2 * h + 1, scale=SDSS_PIXEL_SCALE)
    profile = galsim.Convolve(
        psf_profile(model.conditions.psf, psf.profile_fwhm_arcsec), galsim.Pixel(SDSS_PIXEL_SCALE)
    )
    profile.drawImage(image=image, method="no_pixel", offset=(x - ix, y - iy))
    expected = image.array / image.array.sum()
    _host, flux = source_fluxes(dataclasses.replace(model, sources=(star,)))
    stamp = diff[iy - h : iy + h + 1, ix - h : ix + h + 1] / flux[0, 2]
    assert np.abs(stamp - expected).max() < 2e-3 * expected.max()


def test_psf_families_differ_in_their_wings():
    """At the same half-maximum FWHM a Moffat of beta 2.5 has the widest wings, a Gaussian none."""
    shapes = {
        "gaussian": PsfShape("gaussian"),
        "double_gaussian": PsfShape("double_gaussian", wing_fraction=0.15, wing_ratio=2.0),
        "moffat_6": PsfShape("moffat", beta=6.0),
        "moffat_2.5": PsfShape("moffat", beta=2.5),
    }
    fwhm = 1.4
    outside = {}
    for name, shape in shapes.items():
        psf = matched_psf(shape, fwhm)
        assert psf.image.shape[0] % 2 == 1 and psf.image.sum() == pytest.approx(1.0)
        fwhm_px = psf.fwhm_arcsec / SDSS_PIXEL_SCALE
        assert psf.fwhm_arcsec == pytest.approx(fwhm, rel=0.02)
        outside[name] = 1.0 - encircled_energy(psf.image, 2.0 * fwhm_px)
        yy, xx = np.indices(psf.image.shape) - psf.image.shape[0] // 2
        assert abs((xx * psf.image).sum()) < 1e-9 and abs((yy * psf.image).sum()) < 1e-9  # centred
    assert outside["gaussian"] < 1e-3
    assert outside["gaussian"] < outside["moffat_6"] < outside["double_gaussian"] < outside["moffat_2.5"]


def test_nominal_is_the_old_single_condition():
    for index in range(20):
        nominal = draw_galaxy(9, index, conditions="nominal")
        varied = draw_galaxy(9, index)
        assert nominal.conditions.sky_noise_scale == 1.0 and nominal.conditions.exposure == 1.0
        assert nominal.conditions.psf == PsfShape("moffat", beta=4.765)
        # the old seeing draw: r uniform in 1.0-1.8" from the galaxy's stream, after ra, dec, E(B-V)
        rng = np.random.default_rng([9, index, 0])
        rng.uniform(), rng.uniform(), rng.exponential()
        old = observe.draw_psf_fwhm(rng)
        assert nominal.psf_fwhm == old
        # the same galaxy either way, observed differently
        assert nominal.host == varied.host and nominal.ebv == varied.ebv
        assert [(s.x, s.log_ratio) for s in nominal.sources if s.kind != "clump_pair"] == [
            (s.x, s.log_ratio) for s in varied.sources if s.kind != "clump_pair"
        ]
    # its PSF is the nominal Moffat of the old simulator, pixel for pixel
    new = galaxy_psfs(nominal)["r"].image
    old_stamp, _ix, _iy = observe.source_stamp(0.0, 0.0, nominal.psf_fwhm["r"])
    assert new.shape == old_stamp.shape
    assert np.abs(new - old_stamp).max() < 0.03 * old_stamp.max()


def test_drawn_conditions_span_real_surveys():
    models = [draw_galaxy(13, i) for i in range(200)]
    rows = pd.DataFrame([m.conditions.columns() for m in models])
    scale = rows["sky_noise_scale"].to_numpy()
    coadd = scale == cond.COADD_NOISE_SCALE
    assert 0.06 <= coadd.mean() <= 0.2  # P_COADD = 0.125
    single = scale[~coadd]
    assert single.min() >= 0.6 and single.max() <= 2.2
    assert single.min() < 0.66 and single.max() > 2.0
    # log-uniform: the median is the geometric mean of the range
    assert np.median(single) == pytest.approx(np.sqrt(0.6 * 2.2), rel=0.12)
    seeing = np.array([m.psf_fwhm["r"] for m in models])
    assert seeing.min() >= 0.9 and seeing.max() <= 2.2
    assert seeing.min() < 0.97 and seeing.max() > 2.13
    share = rows["psf_family"].value_counts(normalize=True)
    for family, p in cond.FAMILY_PROBABILITIES.items():
        assert share[family] == pytest.approx(p, abs=0.08), family
    moffat = rows[rows["psf_family"] == "moffat"]
    assert moffat["psf_beta"].between(2.5, 6.0).all()
    assert moffat["psf_beta"].min() < 2.8 and moffat["psf_beta"].max() > 5.7
    assert moffat[["psf_wing_fraction", "psf_wing_ratio"]].isna().all().all()
    double = rows[rows["psf_family"] == "double_gaussian"]
    assert double["psf_wing_fraction"].between(0.08, 0.20).all()
    assert double["psf_wing_ratio"].between(1.8, 2.5).all()
    assert double["psf_beta"].isna().all()
    assert rows.loc[rows["psf_family"] == "gaussian", ["psf_beta", "psf_wing_fraction"]].isna().all().all()


def test_fixing_one_condition_keeps_the_others():
    for index in range(10):
        free = cond.draw_conditions(4, index)
        fixed = cond.draw_conditions(4, index, psf_family="double_gaussian")
        assert fixed.sky_noise_scale == free.sky_noise_scale
        assert fixed.psf.family == "double_gaussian"
        noise = cond.draw_conditions(4, index, sky_noise_scale=1.6)
        assert noise.psf == free.psf and noise.sky_noise_scale == 1.6 and noise.exposure == 1.0


def test_bad_conditions_are_named():
    with pytest.raises(ValueError, match="conditions must be one of"):
        cond.draw_conditions(1, 0, "cloudy")
    with pytest.raises(ValueError, match="sky_noise_scale must be > 0"):
        cond.draw_conditions(1, 0, sky_noise_scale=0.0)
    with pytest.raises(ValueError, match="psf_family must be one of"):
        cond.draw_conditions(1, 0, psf_family="airy")
    assert SimulateSettings.__dataclass_fields__["psf_family"].metadata["choices"] == PSF_FAMILIES
    assert SimulateSettings.__dataclass_fields__["conditions"].metadata["choices"] == cond.CONDITION_MODES


def test_cli_fixes_conditions_and_writes_them(tmp_path):
    argv = ["simulate", "--n", "2", "--seed", "3", "--out", str(tmp_path)]
    assert main([*argv, "--sky-noise-scale", "1.6", "--psf-family", "gaussian"]) == 0
    galaxies = pd.read_parquet(tmp_path / "galaxies.parquet")
    assert (galaxies["sky_noise_scale"] == 1.6).all() and (galaxies["psf_family"] == "gaussian").all()
    assert galaxies["psf_beta"].isna().all()
    meta = pq.read_table(tmp_path / "galaxies.parquet").schema.metadata
    assert meta[b"psf_family"] == b"gaussian" and meta[b"conditions"] == b"varied"
    parser = argparse.ArgumentParser()
    sim_cli.configure_parser(parser)
    with pytest.raises(InputError, match="sky_noise_scale .--sky-noise-scale. must be > 0"):
        sim_cli.run(parser.parse_args([*argv[1:], "--sky-noise-scale", "0"]))


def test_truth_snr_follows_the_sky_noise():
    """A faint clump on the outskirts, sky-dominated: twice the sky noise halves its S/N."""
    model = _quiet(draw_galaxy(3, 0, conditions="nominal"))
    c = (model.side - 1) / 2
    clump = Source(
        "clump", "normal", c + 1.2 * model.host.petro_r90 / SDSS_PIXEL_SCALE, c, -1.5, (0.6, 0.1, 0, 0)
    )
    model = dataclasses.replace(model, sources=(clump,))
    snr = {}
    for scale in (1.0, 2.0):
        observed = dataclasses.replace(
            model, conditions=dataclasses.replace(model.conditions, sky_noise_scale=scale)
        )
        snr[scale] = render_galaxy(observed, noise=False).truth.loc[0, "snr_g"]
    assert snr[1.0] > 3.0
    assert snr[2.0] / snr[1.0] == pytest.approx(0.5, rel=0.05)
