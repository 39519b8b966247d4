"""Tests of clump injection (``clumpcat inject``, Adams et al. 2022; App. F)."""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import pytest

from clumpcat.cli import main
from clumpcat.constants import EXTINCTION_R, HSC_BANDS, SDSS_BANDS
from clumpcat.errors import InputError
from clumpcat.survey import inject
from clumpcat.survey.segments import segment_galaxy
from clumpcat.survey.simulate import observe
from clumpcat.survey.simulate.psfs import PsfShape, matched_psf
from clumpcat.survey.simulate.truth import TRUTH_COLUMNS

BIG_DISC = {"u": 60.0, "g": 150.0, "r": 250.0, "i": 300.0, "z": 320.0, "y": 330.0}


def _cutout(make_cutout, **kw):
    defaults = dict(shape=(96, 96), sources=(), disc_scale_px=14.0, disc_flux=BIG_DISC, seed=1)
    return make_cutout(**{**defaults, **kw})


def test_inject_puts_the_flux_where_the_truth_says(make_cutout):
    cutout = _cutout(make_cutout)
    injected, truth = inject.inject_clumps(cutout, 60.0, np.random.default_rng(0), 3)
    assert tuple(truth.columns) == tuple(TRUTH_COLUMNS) and len(truth) == 3
    assert (truth["kind"] == "injected_clump").all() and (truth["label"] == "normal").all()
    mask = segment_galaxy(cutout).mask
    assert mask[np.rint(truth["y"]).astype(int), np.rint(truth["x"]).astype(int)].all()
    for band in SDSS_BANDS:
        diff = injected.images[band].astype(float) - cutout.images[band]
        assert diff.sum() == pytest.approx(truth[f"flux_{band}"].sum(), rel=2e-3)
        np.testing.assert_array_equal(injected.ivar[band], cutout.ivar[band])
    # each clump's light is centred on its truth position
    one, truth1 = inject.inject_clumps(cutout, 60.0, np.random.default_rng(5), 1)
    diff = one.images["r"].astype(float) - cutout.images["r"]
    yy, xx = np.mgrid[0:96, 0:96]
    x, y = truth1.loc[0, ["x", "y"]]
    near = np.hypot(xx - x, yy - y) < 4 * cutout.fwhm_pixels("r")
    w = diff * near
    assert (w * xx).sum() / w.sum() == pytest.approx(x, abs=0.02)
    assert (w * yy).sum() / w.sum() == pytest.approx(y, abs=0.02)
    ra, dec = cutout.wcs.wcs_pix2world([x], [y], 0)
    assert truth1.loc[0, "ra"] == pytest.approx(ra[0]) and truth1.loc[0, "dec"] == pytest.approx(dec[0])


def test_injected_flux_recovered_by_an_aperture_sum_within_noise(make_cutout):
    cutout = _cutout(make_cutout, disc_scale_px=40.0, noise=0.03, seed=4)
    injected, truth = inject.inject_clumps(cutout, 60.0, np.random.default_rng(2), 1, (-1.0, -1.0))
    x, y = truth.loc[0, ["x", "y"]]
    fwhm = cutout.fwhm_pixels("r")
    image = injected.images["r"]
    yy, xx = np.mgrid[0:96, 0:96]
    dist = np.hypot(xx - x, yy - y)
    aperture, annulus = dist <= 2.0 * fwhm, (dist >= 3.0 * fwhm) & (dist <= 5.0 * fwhm)
    measured = image[aperture].sum() - np.median(image[annulus]) * aperture.sum()
    expected = truth.loc[0, "flux_r"] * observe.moffat_encircled(2.0 * fwhm, fwhm)
    sigma = 0.03 * np.sqrt(aperture.sum()) * 1.2
    assert abs(measured - expected) < 4 * sigma
    assert expected / sigma > 20


def test_injected_clumps_carry_the_cutouts_own_psf(make_cutout):
    """With PSF_<BAND> images the clump is that PSF at its position, not the nominal Moffat."""
    cutout = _cutout(make_cutout)
    shape = PsfShape("double_gaussian", wing_fraction=0.2, wing_ratio=2.5)
    cutout.psf = {b: matched_psf(shape, cutout.psf_fwhm[b]).image for b in cutout.images}
    injected, truth = inject.inject_clumps(cutout, 60.0, np.random.default_rng(5), 1)
    x, y = truth.loc[0, ["x", "y"]]
    for band in ("g", "r"):
        diff = injected.images[band].astype(float) - cutout.images[band]
        psf = cutout.psf[band]
        h = psf.shape[0] // 2
        ix, iy = int(np.rint(x)), int(np.rint(y))
        stamp = diff[iy - h : iy + h + 1, ix - h : ix + h + 1] / truth.loc[0, f"flux_{band}"]
        # the PSF image moved by the sub-pixel offset (Fourier shift), as the simulator draws points
        moved = observe.convolve(np.zeros(psf.shape), psf, [(h + x - ix, h + y - iy, 1.0, 0.0)])
        np.testing.assert_allclose(stamp, moved, atol=1e-6 * psf.max() + 1e-7)
        assert stamp.sum() == pytest.approx(1.0, abs=1e-5)
        # a 20% wing at 2.5x the core width: clearly not the nominal Moffat
        moffat, _ix, _iy = observe.source_stamp(x, y, cutout.psf_fwhm[band], cutout.pixel_scale)
        hm = min(h, moffat.shape[0] // 2)
        core = moffat.shape[0] // 2
        assert (
            np.abs(
                stamp[h - hm : h + hm + 1, h - hm : h + hm + 1]
                - moffat[core - hm : core + hm + 1, core - hm : core + hm + 1]
            ).max()
            > 0.02 * psf.max()
        )


def test_flux_ratio_colours_and_reddening(make_cutout):
    cutout = _cutout(make_cutout)
    _, truth = inject.inject_clumps(cutout, 50.0, np.random.default_rng(1), 20, (-2.0, -1.0))
    np.testing.assert_allclose(truth["flux_u"] / 50.0, truth["flux_ratio_u"], rtol=1e-12)
    assert truth["flux_ratio_u"].between(10**-2.0, 10**-1.0).all()
    assert (truth["flux_u"] < truth["flux_r"]).all()  # u-r > 0 but blue: young clumps
    _, clear = inject.inject_clumps(cutout, 50.0, np.random.default_rng(1), 2, ebv=0.0)
    _, dusty = inject.inject_clumps(cutout, 50.0, np.random.default_rng(1), 2, ebv=0.2)
    for band in "griz":
        factor = 10 ** (-0.4 * 0.2 * (EXTINCTION_R[band] - EXTINCTION_R["u"]))
        np.testing.assert_allclose(dusty[f"flux_{band}"] / clear[f"flux_{band}"], factor, rtol=1e-12)


def test_hsc_cutout_uses_its_bluest_band(make_cutout):
    cutout = _cutout(make_cutout, bands=HSC_BANDS, pixel_scale=0.168, psf_fwhm=0.7)
    injected, truth = inject.inject_clumps(cutout, 100.0, np.random.default_rng(3), 2)
    assert set(injected.images) == set(HSC_BANDS)
    assert truth["flux_u"].isna().all()
    np.testing.assert_allclose(truth["flux_g"] / 100.0, truth["flux_ratio_u"])


def test_validation_errors(make_cutout, tmp_path):
    cutout = _cutout(make_cutout)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="n must be >= 0"):
        inject.inject_clumps(cutout, 10.0, rng, -1)
    with pytest.raises(ValueError, match="host_flux_u must be a positive flux"):
        inject.inject_clumps(cutout, float("nan"), rng, 1)
    with pytest.raises(ValueError, match="log_ratio_range must be"):
        inject.inject_clumps(cutout, 10.0, rng, 1, (-0.5, -2.5))
    parser = argparse.ArgumentParser()
    inject.configure_parser(parser)
    same = [
        "--galaxies",
        "g.csv",
        "--cutouts",
        str(tmp_path),
        "--out-cutouts",
        str(tmp_path),
        "--truth",
        "t.parquet",
    ]
    with pytest.raises(InputError, match="--out-cutouts must differ"):
        inject.run(parser.parse_args(same))
    with pytest.raises(InputError, match="--per-galaxy must be >= 0"):
        inject.run(parser.parse_args([*same[:5], str(tmp_path / "o"), *same[6:], "--per-galaxy", "-2"]))


def test_cli_skips_bad_cutouts_and_is_reproducible(cutout_dir, tmp_path):
    kw = dict(shape=(96, 96), sources=(), disc_scale_px=14.0, disc_flux=BIG_DISC)
    folder = cutout_dir(["gal0", "gal1"], **kw)
    (folder / "gal3.fits").write_bytes(b"SIMPLE  =                    T" + b" " * 50)
    galaxies = pd.DataFrame(
        {
            "objid": ["gal0", "gal1", "gal2", "gal3"],
            "ra": [150.0, 150.1, 150.2, 150.3],
            "dec": [2.0, 2.1, 2.2, 2.3],
            "host_mag_u": [18.0, np.nan, 18.0, 18.0],
        }
    )
    table = tmp_path / "galaxies.csv"
    galaxies.to_csv(table, index=False)
    outs = []
    for run in ("a", "b"):
        argv = [
            "inject", "--galaxies", table, "--cutouts", folder, "--out-cutouts", tmp_path / run / "cutouts",
            "--truth", tmp_path / run / "truth.parquet", "--seed", 9, "--per-galaxy", 2,
            "--status-out", tmp_path / run / "status.parquet",
        ]  # fmt: skip
        assert main([str(a) for a in argv]) == 0
        outs.append(pd.read_parquet(tmp_path / run / "truth.parquet"))
    pd.testing.assert_frame_equal(outs[0], outs[1])
    truth = outs[0]
    assert list(truth["objid"]) == ["gal0", "gal0", "gal1", "gal1"]
    assert sorted(p.name for p in (tmp_path / "a" / "cutouts").iterdir()) == ["gal0.fits", "gal1.fits"]
    # gal0's ratio is relative to the table's host_mag_u; gal1's to the measured host flux
    host0 = observe.mag_to_nmgy(18.0)
    np.testing.assert_allclose(
        truth.loc[truth.objid == "gal0", "flux_u"] / host0, truth.loc[truth.objid == "gal0", "flux_ratio_u"]
    )
    status = pd.read_parquet(tmp_path / "a" / "status.parquet").set_index("objid")
    assert list(status["status"]) == ["ok", "ok", "failed", "failed"]
    assert "file not found" in status.loc["gal2", "reason"]
    assert "unreadable" in status.loc["gal3", "reason"]
    assert (status.loc[["gal2", "gal3"], "stage"] == "inject").all()


def test_injected_clumps_keep_clear_of_the_hosts_own_clumps(make_cutout):
    """The truth of an injected clump lacks the host's clumps: none may lie under it (issue 11)."""
    own = ((40.0, 44.0, 4.0), (55.0, 50.0, 3.0), (47.0, 38.0, 2.0))
    cutout = _cutout(make_cutout, sources=own, noise=0.02)
    fwhm = cutout.fwhm_pixels("r")
    found = inject.host_sources(cutout)
    for x, y, _ in own:
        assert np.min(np.hypot(found[:, 0] - x, found[:, 1] - y)) < 1.0
    _, truth = inject.inject_clumps(cutout, 60.0, np.random.default_rng(3), 12)
    xy = truth[["x", "y"]].to_numpy()
    dist = np.hypot(xy[:, None, 0] - found[None, :, 0], xy[:, None, 1] - found[None, :, 1])
    assert dist.min() >= inject.HOST_SOURCE_FWHM * fwhm - 0.75
    # On a disc without clumps only its nucleus (the exponential's cusp) or
    # the image edge stand out: noise peaks do not take host area away.
    for seed in range(3):
        empty = inject.host_sources(_cutout(make_cutout, noise=0.02, seed=seed))
        edge = fwhm
        inner = empty[((empty >= edge) & (empty <= 95 - edge)).all(axis=1)]
        assert np.all(np.hypot(inner[:, 0] - 47.5, inner[:, 1] - 47.5) < 2.0)
