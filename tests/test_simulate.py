"""Tests of the synthetic survey (``clumpcat simulate``)."""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from astropy.io import fits

from clumpcat.cli import main
from clumpcat.constants import EXTINCTION_R, SDSS_BANDS, SDSS_PIXEL_SCALE
from clumpcat.errors import InputError
from clumpcat.paths import OBJID_PATTERN
from clumpcat.survey.cutouts import read_cutout
from clumpcat.survey.galaxies import read_galaxies
from clumpcat.survey.psf import PSF_FAMILIES, measure_fwhm
from clumpcat.survey.simulate import cli as sim_cli
from clumpcat.survey.simulate import observe
from clumpcat.survey.simulate.conditions import COADD_NOISE_SCALE, SEEING_RANGE, SKY_NOISE_RANGE
from clumpcat.survey.simulate.hosts import cutout_side
from clumpcat.survey.simulate.sources import LOG_FLUX_RATIO_RANGE, Source, centre_distance_render_px
from clumpcat.survey.simulate.survey import (
    GALAXY_TABLE_COLUMNS,
    draw_galaxy,
    render_galaxy,
    sim_objid,
    source_fluxes,
)
from clumpcat.survey.simulate.truth import TRUTH_COLUMNS
from clumpcat.tables import field_metadata


def _simulate(*argv) -> None:
    assert main(["simulate", *map(str, argv)]) == 0


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    """A 4-galaxy survey, its rerun, and the same galaxies made in two shards."""
    root = tmp_path_factory.mktemp("sim")
    _simulate("--n", 4, "--seed", 11, "--out", root / "a")
    _simulate("--n", 4, "--seed", 11, "--out", root / "b")
    for first in (0, 2):
        shard = root / "shards" / str(first)
        _simulate(
            "--seed", 11, "--first", first, "--count", 2,
            "--galaxies", shard / "galaxies.parquet", "--truth", shard / "truth.parquet",
            "--cutouts", root / "shards" / "cutouts", "--status-out", shard / "status.parquet",
        )  # fmt: skip
    return root


def test_outputs_meet_the_contracts(survey):
    galaxies = read_galaxies(survey / "a" / "galaxies.parquet")
    assert tuple(galaxies.columns) == GALAXY_TABLE_COLUMNS
    assert list(galaxies["objid"]) == [sim_objid(11, i) for i in range(4)]
    docs = field_metadata(pq.read_table(survey / "a" / "galaxies.parquet"))
    assert docs["petro_r90_r"][0] == "arcsec" and docs["host_mag_u"][0] == "mag(AB)"
    assert galaxies["redshift"].between(0.02, 0.15).all()
    assert galaxies["petro_r90_r"].between(5.0, 25.0).all()
    # r-band seeing of the varied survey; measured on the PSF image, in steps of ~1.6%
    lo, hi = SEEING_RANGE
    assert galaxies["psf_fwhm_r"].between(0.98 * lo, 1.02 * hi).all()
    assert set(galaxies["psf_family"]) <= set(PSF_FAMILIES)
    assert galaxies["sky_noise_scale"].between(COADD_NOISE_SCALE, SKY_NOISE_RANGE[1]).all()
    assert docs["sky_noise_scale"][1].startswith("Sky noise")
    truth = pd.read_parquet(survey / "a" / "truth.parquet")
    assert tuple(truth.columns) == tuple(TRUTH_COLUMNS)
    assert (
        pq.read_table(survey / "a" / "truth.parquet").schema.field("flux_u").metadata[b"unit"] == b"nanomaggy"
    )
    assert set(truth["label"]) <= {"normal", "odd"}
    assert set(truth["objid"]) <= set(galaxies["objid"])
    for row in galaxies.itertuples():
        assert OBJID_PATTERN.match(row.objid)
        cutout = read_cutout(survey / "a" / "cutouts" / f"{row.objid}.fits", bands=SDSS_BANDS)
        side = cutout_side(row.petro_r90_r)
        assert cutout.shape == (side, side)
        assert cutout.pixel_scale == pytest.approx(SDSS_PIXEL_SCALE)
        assert set(cutout.ivar) == set(SDSS_BANDS)
        assert set(cutout.psf) == set(SDSS_BANDS)
        for band in SDSS_BANDS:
            assert cutout.psf_fwhm[band] == pytest.approx(getattr(row, f"psf_fwhm_{band}"))
            # PSF_FWHM is the half-maximum FWHM of the PSF the cutout carries
            measured = measure_fwhm(cutout.psf[band]) * cutout.pixel_scale
            assert measured == pytest.approx(cutout.psf_fwhm[band], rel=1e-3)
        centre = cutout.wcs.wcs_pix2world([[(side - 1) / 2, (side - 1) / 2]], 0)[0]
        assert centre == pytest.approx([row.ra, row.dec], abs=1e-9)
        with fits.open(survey / "a" / "cutouts" / f"{row.objid}.fits") as hdul:
            assert hdul["R"].header["BUNIT"] == "nanomaggy"
        rows = truth[truth["objid"] == row.objid]
        assert rows["x"].between(0, side - 1).all() and rows["y"].between(0, side - 1).all()
        ra, dec = cutout.wcs.wcs_pix2world(rows["x"], rows["y"], 0)
        np.testing.assert_allclose(ra, rows["ra"], atol=1e-9)
        np.testing.assert_allclose(dec, rows["dec"], atol=1e-9)


def test_same_seed_gives_the_same_files(survey):
    for name in ("galaxies.parquet", "truth.parquet"):
        assert (survey / "a" / name).read_bytes() == (survey / "b" / name).read_bytes()
    for path in sorted((survey / "a" / "cutouts").glob("*.fits")):
        assert path.read_bytes() == (survey / "b" / "cutouts" / path.name).read_bytes()


def test_union_of_shards_equals_the_whole_run(survey):
    for name in ("galaxies.parquet", "truth.parquet"):
        whole = pd.read_parquet(survey / "a" / name)
        parts = [pd.read_parquet(survey / "shards" / str(f) / name) for f in (0, 2)]
        pd.testing.assert_frame_equal(pd.concat(parts, ignore_index=True), whole)
    for path in sorted((survey / "a" / "cutouts").glob("*.fits")):
        a, b = read_cutout(path), read_cutout(survey / "shards" / "cutouts" / path.name)
        for band in SDSS_BANDS:
            np.testing.assert_array_equal(a.images[band], b.images[band])
    status = pd.read_parquet(survey / "shards" / "2" / "status.parquet")
    assert list(status["objid"]) == [sim_objid(11, 2), sim_objid(11, 3)]
    assert (status["status"] == "ok").all()


def _plain_model(seed=3, index=0, conditions="nominal", **source):
    """A galaxy without arms, bar, background galaxies; one source placed by the caller."""
    model = draw_galaxy(seed, index, conditions=conditions)
    host = dataclasses.replace(model.host, arms=None, bar=None)
    return dataclasses.replace(model, host=host, background=(), sources=(Source(**source),))


def test_clump_flux_recovered_by_an_aperture_sum():
    """A clump's r-band flux, aperture sum minus annulus median, agrees within its noise."""
    model = draw_galaxy(3, 0, conditions="nominal")  # the expected flux uses the nominal Moffat
    c = (model.side - 1) / 2
    r90 = model.host.petro_r90 / SDSS_PIXEL_SCALE
    x = c + r90 * np.cos(model.host.pa)
    y = c + r90 * np.sin(model.host.pa)
    colours = (0.6, 0.1, 0.0, 0.0)
    model = _plain_model(kind="clump", label="normal", x=x, y=y, log_ratio=-1.0, colours=colours)
    rendered = render_galaxy(model)
    (_host, fluxes) = source_fluxes(model)
    for b, band in ((1, "g"), (2, "r")):
        image, ivar = rendered.cutout.images[band], rendered.cutout.ivar[band]
        fwhm = model.psf_fwhm[band] / SDSS_PIXEL_SCALE
        yy, xx = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
        dist = np.hypot(xx - x, yy - y)
        aperture = dist <= 1.5 * fwhm
        annulus = (dist >= 3.0 * fwhm) & (dist <= 5.0 * fwhm)
        background = np.median(image[annulus])
        measured = image[aperture].sum() - background * aperture.sum()
        # the fraction of the PSF inside the pixelated aperture, from the PSF stamp itself
        stamp, ix, iy = observe.source_stamp(x, y, model.psf_fwhm[band])
        h = stamp.shape[0] // 2
        sy, sx = np.mgrid[iy - h : iy + h + 1, ix - h : ix + h + 1]
        expected = fluxes[0, b] * stamp[np.hypot(sx - x, sy - y) <= 1.5 * fwhm].sum()
        sigma_bg = 1.2533 * image[annulus].std() / np.sqrt(annulus.sum()) * aperture.sum()
        sigma = np.sqrt((1.0 / ivar[aperture]).sum() + sigma_bg**2)
        assert abs(measured - expected) < 4.0 * sigma, (band, measured, expected, sigma)
        assert expected / sigma > 10  # the test has teeth


def test_reddening_scales_every_flux_by_the_extinction_factor():
    model = draw_galaxy(4, 1)
    clear = render_galaxy(dataclasses.replace(model, ebv=0.0), noise=False)
    dusty = render_galaxy(dataclasses.replace(model, ebv=0.1), noise=False)
    for band in SDSS_BANDS:
        factor = 10.0 ** (-0.4 * EXTINCTION_R[band] * 0.1)
        ratio = dusty.cutout.images[band].sum(dtype=float) / clear.cutout.images[band].sum(dtype=float)
        assert ratio == pytest.approx(factor, rel=1e-5)
        dmag = dusty.galaxy[f"host_mag_{band}"] - clear.galaxy[f"host_mag_{band}"]
        assert dmag == pytest.approx(EXTINCTION_R[band] * 0.1, abs=1e-9)
        np.testing.assert_allclose(
            dusty.truth[f"flux_{band}"] / clear.truth[f"flux_{band}"], factor, rtol=1e-9
        )
    np.testing.assert_allclose(dusty.truth["flux_ratio_u"], clear.truth["flux_ratio_u"], rtol=1e-9)


def test_detectable_means_visible_above_the_noise():
    model = draw_galaxy(3, 0)
    c = (model.side - 1) / 2 + 0.6 * model.host.petro_r90 / SDSS_PIXEL_SCALE
    kw = dict(kind="clump", label="normal", x=c, y=(model.side - 1) / 2, colours=(0.6, 0.1, 0.0, 0.0))
    faint = render_galaxy(_plain_model(log_ratio=-4.0, **kw), noise=False).truth.iloc[0]
    bright = render_galaxy(_plain_model(log_ratio=-0.5, **kw), noise=False).truth.iloc[0]
    assert not faint["detectable"] and max(faint["snr_g"], faint["snr_r"]) < 5
    assert bright["detectable"] and bright["snr_r"] > 5
    assert bright["flux_ratio_u"] == pytest.approx(10**-0.5)


@pytest.fixture(scope="module")
def drawn():
    """400 galaxy models: numbers only, no pixels."""
    return [draw_galaxy(21, i) for i in range(400)]


def test_counts_and_labels_match_clump_scout(drawn):
    counts = np.array([len(m.sources) for m in drawn])
    odd = np.array([sum(s.label == "odd" for s in m.sources) for m in drawn])
    assert counts.min() >= 1 and counts.max() <= 9
    assert counts.mean() == pytest.approx(2.31, abs=0.15)
    for k, p in ((1, 0.26), (2, 0.42), (3, 0.18), (4, 0.08)):
        assert np.mean(counts == k) == pytest.approx(p, abs=0.07)
    assert np.mean(counts >= 5) == pytest.approx(0.06, abs=0.04)
    assert odd.sum() / counts.sum() == pytest.approx(0.276, abs=0.05)
    assert np.mean(odd > 0) == pytest.approx(0.5, abs=0.08)
    assert all(s.kind == "star" for m in drawn for s in m.sources if s.label == "odd")
    kinds = {s.kind for m in drawn for s in m.sources}
    assert kinds == {"clump", "clump_pair", "resolved_clump", "star"}


def test_positions_match_clump_scout(drawn):
    dist = np.concatenate(
        [centre_distance_render_px([s.x for s in m.sources], [s.y for s in m.sources], m.side) for m in drawn]
    )
    p5, p50, p95 = np.percentile(dist, [5, 50, 95])
    assert p50 == pytest.approx(52, abs=6)
    assert p5 == pytest.approx(25, abs=6)
    assert p95 == pytest.approx(98, abs=12)
    assert np.mean(dist < 100) > 0.9  # most inside the central 200x200 crop


def test_hosts_sources_and_colours(drawn):
    assert np.mean([m.host.arms is not None for m in drawn]) == pytest.approx(0.8, abs=0.07)
    assert np.mean([m.host.bar is not None for m in drawn]) == pytest.approx(0.3, abs=0.07)
    assert np.mean([len(m.background) > 0 for m in drawn]) > 0.7
    ratios = np.array([s.log_ratio for m in drawn for s in m.sources if s.label == "normal"])
    lo, hi = LOG_FLUX_RATIO_RANGE
    assert ratios.min() >= lo and ratios.max() <= hi
    assert ratios.min() < lo + 0.1 and ratios.max() > hi - 0.1
    for m in drawn[:100]:
        host, fluxes = source_fluxes(m)
        host_ur = -2.5 * np.log10(host[0] / host[2])
        for s, f in zip(m.sources, fluxes, strict=True):
            colour_ur = -2.5 * np.log10(f[0] / f[2])
            if s.label == "normal":
                assert colour_ur < host_ur  # clumps bluer than their host
                assert f[0] / host[0] == pytest.approx(10**s.log_ratio)
            else:
                gr = -2.5 * np.log10(f[1] / f[2]) - (EXTINCTION_R["g"] - EXTINCTION_R["r"]) * m.ebv
                assert 0.25 <= gr <= 1.45  # the stellar locus


def test_models_depend_only_on_seed_and_index():
    assert draw_galaxy(5, 3) == draw_galaxy(5, 3)
    assert draw_galaxy(5, 3) != draw_galaxy(6, 3)
    assert draw_galaxy(5, 3).objid == "sim5-000003"
    with pytest.raises(ValueError, match="must be >= 0"):
        draw_galaxy(-1, 0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--seed", "1", "--out", "x"], "give --n N or --count C"),
        (["--n", "2", "--seed", "-1", "--out", "x"], "--seed must be >= 0"),
        (["--n", "2", "--first", "-3", "--out", "x"], "--first must be >= 0"),
        (["--n", "2", "--truth", "t.parquet"], "give --out DIR or --galaxies PATH"),
        (["--n", "4", "--first", "3", "--count", "2", "--out", "x"], "goes past the survey's --n 4"),
    ],
)
def test_cli_errors_name_the_option(argv, message):
    parser = argparse.ArgumentParser()
    sim_cli.configure_parser(parser)
    with pytest.raises(InputError, match=message):
        sim_cli.run(parser.parse_args(argv))
