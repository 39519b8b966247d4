"""Tests of clumpcat.render.rgb: composites, geometry, the shard driver and CLI."""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import pytest
from astropy.visualization import LuptonAsinhStretch, ManualInterval, make_lupton_rgb
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from clumpcat.cli import main
from clumpcat.constants import HSC_BANDS, HSC_PIXEL_SCALE, LABEL_BOX_FWHM, RENDER_SIZE
from clumpcat.errors import InputError
from clumpcat.geometry import RenderGeometry, box_centres, boxes_around
from clumpcat.render.rgb import (
    HSC_ASINH_MAXIMUM,
    HSC_ASINH_SOFTENING,
    asinh_rgb,
    lupton_rgb,
    render_cutout,
    render_shard,
)
from clumpcat.render.selection import GALLERY_SIZE, gallery_pngs_in_shard, parse_png, png_objids
from clumpcat.tables import read_table

# -- composites ---------------------------------------------------------------


def test_lupton_equals_astropy_with_paper_parameters(make_cutout):
    images = make_cutout(shape=(50, 70)).images
    # App. A.1: i, r, g -> R, G, B scaled by 0.7, 1.17, 1.818; Q=7, stretch=0.2, minimum=0
    r = images["i"].astype(np.float64) * 0.7
    g = images["r"].astype(np.float64) * 1.17
    b = images["g"].astype(np.float64) * 1.818
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = make_lupton_rgb(
            r,
            g,
            b,
            interval=ManualInterval(vmin=0, vmax=None),
            stretch_object=LuptonAsinhStretch(stretch=0.2, Q=7),
        )
    got = lupton_rgb(images)
    assert got.dtype == np.uint8 and got.shape == (50, 70, 3)
    np.testing.assert_array_equal(got, expected)
    assert got.max() > 100  # the galaxy is visible, not black


def test_lupton_nan_pixels_render_as_empty_sky(make_cutout):
    images = {b: v.copy() for b, v in make_cutout().images.items()}
    for band in ("g", "r", "i"):
        images[band][10:20, 10:20] = np.nan
    rgb = lupton_rgb(images)
    zeroed = {b: np.nan_to_num(v, nan=0.0) for b, v in images.items()}
    np.testing.assert_array_equal(rgb, lupton_rgb(zeroed))
    assert (rgb[10:20, 10:20] == 0).all()


def test_lupton_missing_band_is_named(make_cutout):
    images = make_cutout(bands=("u", "g", "r")).images
    with pytest.raises(ValueError, match="missing i"):
        lupton_rgb(images)


def test_asinh_grey_pixel_follows_lupton_curve():
    # The documented choice: per-band asinh equal to Lupton along the grey axis.
    flux = np.geomspace(1e-3, 5.0, 40).reshape(4, 10)
    unit = {"i": 0.7, "r": 1.17, "g": 1.818}
    images = {b: flux / s for b, s in unit.items()}  # scaled channels all equal to flux
    lup = lupton_rgb(images).astype(int)
    asn = asinh_rgb(images).astype(int)
    assert np.abs(lup - asn).max() <= 1
    assert HSC_ASINH_SOFTENING == pytest.approx(0.2 / 7)
    assert HSC_ASINH_MAXIMUM == pytest.approx(9.75, abs=0.01)


def test_hsc_render_on_grizy(make_cutout):
    cutout = make_cutout(
        shape=(90, 90), bands=HSC_BANDS, pixel_scale=HSC_PIXEL_SCALE, psf_fwhm=0.7, noise=0.002
    )
    rgb, geometry = render_cutout(cutout, "hsc")
    assert rgb.shape == (RENDER_SIZE, RENDER_SIZE, 3) and rgb.dtype == np.uint8
    assert geometry == RenderGeometry(90, 90, 400 / 90, 400 / 90)
    assert rgb.max() > 100
    # surface brightness: the HSC composite is the asinh of flux per SDSS pixel area
    area = (0.396 / cutout.pixel_scale) ** 2
    np.testing.assert_array_equal(
        asinh_rgb(cutout.images, flux_scale=area), asinh_rgb({b: v * area for b, v in cutout.images.items()})
    )


@pytest.mark.parametrize("survey", ["sdss", "synthetic"])
def test_render_cutout_is_400_square_uint8(make_cutout, survey):
    cutout = make_cutout(shape=(64, 80))
    rgb, geometry = render_cutout(cutout, survey)
    assert rgb.shape == (400, 400, 3) and rgb.dtype == np.uint8
    assert (geometry.nx, geometry.ny) == (80, 64)
    assert geometry.scale_x == pytest.approx(5.0) and geometry.scale_y == pytest.approx(6.25)


def test_render_cutout_unknown_survey(make_cutout):
    with pytest.raises(ValueError, match=r"'survey' must be one of 'sdss', 'synthetic', 'hsc', got 'des'"):
        render_cutout(make_cutout(), "des")


def test_resize_keeps_point_source_position(make_cutout):
    # A bright point source at cutout (20, 40) peaks at the mapped rendered pixel.
    cutout = make_cutout(shape=(64, 64), sources=[(20.0, 40.0, 8.0)], noise=0.0, disc_flux={})
    rgb, geometry = render_cutout(cutout, "sdss")
    x, y = geometry.cutout_to_render(20.0, 40.0)
    grey = rgb.astype(float).sum(axis=2)
    jy, jx = np.unravel_index(np.argmax(grey[200:400, 0:200]), (200, 200))
    assert abs(jx - x) <= 1.0 and abs(jy + 200 - y) <= 1.0


# -- geometry -----------------------------------------------------------------

sizes = st.integers(min_value=8, max_value=2000)
coords = st.floats(min_value=-50, max_value=2500, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(nx=sizes, ny=sizes, x=coords, y=coords)
def test_point_round_trip(nx, ny, x, y):
    g = RenderGeometry.for_shape((ny, nx))
    xr, yr = g.cutout_to_render(x, y)
    xc, yc = g.render_to_cutout(xr, yr)
    assert xc == pytest.approx(x, abs=1e-9) and yc == pytest.approx(y, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(nx=sizes, ny=sizes, x=coords, y=coords, w=st.floats(0.1, 100), h=st.floats(0.1, 100))
def test_box_round_trip_and_centre_consistency(nx, ny, x, y, w, h):
    g = RenderGeometry.for_shape((ny, nx))
    box = boxes_around([x], [y], w, h)
    rbox = g.boxes_cutout_to_render(box)
    np.testing.assert_allclose(g.boxes_render_to_cutout(rbox), box, atol=1e-9)
    # the mapped box's centre is the mapped point
    cx, cy = box_centres(rbox)
    px, py = g.cutout_to_render(x, y)
    assert cx[0] == pytest.approx(px, abs=1e-8) and cy[0] == pytest.approx(py, abs=1e-8)
    np.testing.assert_allclose(np.diff(rbox[0, ::2]), w * g.scale_x, rtol=1e-9)
    np.testing.assert_allclose(np.diff(rbox[0, 1::2]), h * g.scale_y, rtol=1e-9)


def test_geometry_known_values():
    g = RenderGeometry.for_shape((100, 200))
    assert g.cutout_to_render(0.0, 0.0) == (0.5, 1.5)  # pixel 0 centre
    np.testing.assert_array_equal(g.boxes_cutout_to_render([0, 0, 200, 100]), [0, 0, 400, 400])
    with pytest.raises(ValueError, match="positive"):
        RenderGeometry.for_shape((0, 5))


# -- shard driver and CLI -----------------------------------------------------


def _truth(objids):
    rows = []
    for objid in objids:
        rows.append(
            dict(
                objid=objid,
                source_id=0,
                x=20.0,
                y=40.0,
                label="normal",
                fwhm_r_px=1.4 / 0.396,
                detectable=True,
            )
        )
        rows.append(
            dict(
                objid=objid, source_id=1, x=45.0, y=25.0, label="odd", fwhm_r_px=1.4 / 0.396, detectable=False
            )
        )
    return pd.DataFrame(rows)


def test_cli_corrupt_cutout_fails_others_render(tmp_path, cutout_dir, galaxy_table):
    folder = cutout_dir(["gal0", "gal1"])
    bad = folder / "gal1.fits"
    bad.write_bytes(bad.read_bytes()[:3000])  # truncated FITS
    shard = tmp_path / "shard"
    shard.mkdir()
    galaxy_table.to_parquet(shard / "galaxies.parquet")
    _truth(["gal0", "gal1"]).to_parquet(shard / "truth.parquet")
    args = [
        "render", "--galaxies", str(shard / "galaxies.parquet"), "--cutouts", str(folder),
        "--rgb-dir", str(tmp_path / "rgb"), "--survey", "synthetic",
        "--status-out", str(shard / "status-render.parquet"), "--out", str(shard / "render.parquet"),
        "--truth", str(shard / "truth.parquet"), "--labels-out", str(shard / "labels.parquet"),
        "--labels-detectable-only",
    ]  # fmt: skip
    assert main(args) == 0
    status = pd.read_parquet(shard / "status-render.parquet").set_index("objid")
    assert status.loc["gal0", "status"] == "ok"
    assert status.loc["gal1", "status"] == "failed" and status.loc["gal1", "stage"] == "render"
    assert "gal1.fits" in status.loc["gal1", "reason"]
    table = pd.read_parquet(shard / "render.parquet")
    assert table["objid"].tolist() == ["gal0"]
    row = table.iloc[0]
    assert (row.nx, row.ny) == (64, 64) and row.scale_x == pytest.approx(6.25)
    assert row.fwhm_r_px == pytest.approx(1.4 / 0.396, rel=1e-6)
    assert row.fwhm_r_render_px == pytest.approx(1.4 / 0.396 * 6.25, rel=1e-6)
    with Image.open(row.png) as im:
        assert im.size == (400, 400) and im.mode == "RGB"
    assert not (tmp_path / "rgb" / "gal1.png").exists()
    assert not list((tmp_path / "rgb").glob(".*tmp"))
    labels = pd.read_parquet(shard / "labels.parquet")
    assert labels["objid"].tolist() == ["gal0"] and labels["label"].tolist() == ["normal"]
    side = LABEL_BOX_FWHM * 1.4 / 0.396 * 6.25
    assert labels.box_x1[0] - labels.box_x0[0] == pytest.approx(side)
    assert (labels.box_x0[0] + labels.box_x1[0]) / 2 - 0.5 == pytest.approx((20 + 0.5) * 6.25 - 0.5)


def test_status_in_failures_carried_and_skipped(tmp_path, cutout_dir, galaxy_table):
    from clumpcat.ledger import LedgerEntry, write_status

    folder = cutout_dir(["gal0", "gal1"])
    write_status(
        tmp_path / "status-prev.parquet",
        ["gal0", "gal1"],
        [LedgerEntry("gal0", "failed", "fetch", "HTTP 500")],
    )
    galaxy_table.to_csv(tmp_path / "galaxies.csv", index=False)
    args = [
        "render", "--galaxies", str(tmp_path / "galaxies.csv"), "--cutouts", str(folder),
        "--rgb-dir", str(tmp_path / "rgb"), "--status-in", str(tmp_path / "status-prev.parquet"),
        "--status-out", str(tmp_path / "status.parquet"), "--out", str(tmp_path / "render.parquet"),
    ]  # fmt: skip
    assert main(args) == 0
    status = pd.read_parquet(tmp_path / "status.parquet").set_index("objid")
    assert tuple(status.loc["gal0", ["status", "stage", "reason"]]) == ("failed", "fetch", "HTTP 500")
    assert status.loc["gal1", "status"] == "ok"
    assert pd.read_parquet(tmp_path / "render.parquet")["objid"].tolist() == ["gal1"]


def test_truth_without_labels_out_is_an_error(tmp_path, galaxy_table, caplog):
    galaxy_table.to_csv(tmp_path / "g.csv", index=False)
    args = ["render", "--galaxies", str(tmp_path / "g.csv"), "--cutouts", str(tmp_path), "--rgb-dir",
            str(tmp_path / "rgb"), "--status-out", str(tmp_path / "s.parquet"), "--out", str(tmp_path / "r.parquet"),
            "--truth", str(tmp_path / "t.parquet")]  # fmt: skip
    assert main(args) == 1
    assert "--truth needs --labels-out" in caplog.text


def test_labels_out_without_truth_writes_an_empty_table(tmp_path, galaxy_table, cutout_dir):
    folder = cutout_dir(galaxy_table["objid"].tolist())
    galaxy_table.to_csv(tmp_path / "g.csv", index=False)
    args = ["render", "--galaxies", str(tmp_path / "g.csv"), "--cutouts", str(folder), "--rgb-dir",
            str(tmp_path / "rgb"), "--survey", "sdss", "--status-out", str(tmp_path / "s.parquet"),
            "--out", str(tmp_path / "r.parquet"), "--labels-out", str(tmp_path / "l.parquet")]  # fmt: skip
    assert main(args) == 0
    labels = read_table(tmp_path / "l.parquet")
    assert len(labels) == 0 and "box_x0" in labels.columns


def test_same_input_same_png_bytes(tmp_path, cutout_dir):
    folder = cutout_dir(["gal0"])
    t1, f1 = render_shard(["gal0"], folder, tmp_path / "a", "sdss")
    t2, f2 = render_shard(["gal0"], folder, tmp_path / "b", "sdss")
    assert not f1 and not f2
    assert (tmp_path / "a" / "gal0.png").read_bytes() == (tmp_path / "b" / "gal0.png").read_bytes()
    pd.testing.assert_frame_equal(t1.drop(columns="png"), t2.drop(columns="png"))


def test_missing_band_becomes_failed_row(tmp_path, make_cutout):
    from clumpcat.survey.cutouts import write_cutout

    write_cutout(tmp_path / "c" / "gal0.fits", make_cutout("gal0", bands=("u", "g", "r", "z")))
    table, failures = render_shard(["gal0", "gal9"], tmp_path / "c", tmp_path / "rgb", "sdss")
    assert table.empty and list(table.columns)[:2] == ["objid", "png"]
    reasons = {f.objid: f.reason for f in failures}
    assert "missing band(s) I" in reasons["gal0"] and "gal0.fits" in reasons["gal0"]
    assert "file not found" in reasons["gal9"]


# -- which galaxies get a PNG ---------------------------------------------------


def _render_cli(tmp_path, folder, name, png):
    """Run `clumpcat render --png PNG` on gal0..gal2 with truth; returns (shard folder, rgb folder)."""
    shard, rgb = tmp_path / name, tmp_path / name / "rgb"
    shard.mkdir()
    galaxies = pd.DataFrame({"objid": ["gal0", "gal1", "gal2"], "ra": [150.0] * 3, "dec": [2.0, 2.1, 2.2]})
    galaxies.to_parquet(shard / "galaxies.parquet")
    _truth(["gal0", "gal1", "gal2"]).to_parquet(shard / "truth.parquet")
    args = [
        "render", "--galaxies", str(shard / "galaxies.parquet"), "--cutouts", str(folder),
        "--rgb-dir", str(rgb), "--png", png, "--survey", "synthetic",
        "--status-out", str(shard / "status.parquet"), "--out", str(shard / "render.parquet"),
        "--truth", str(shard / "truth.parquet"), "--labels-out", str(shard / "labels.parquet"),
    ]  # fmt: skip
    assert main(args) == 0
    return shard, rgb


def test_png_none_writes_no_png_but_the_same_rows(tmp_path, cutout_dir):
    folder = cutout_dir(["gal0", "gal1", "gal2"])
    bad = folder / "gal1.fits"
    bad.write_bytes(bad.read_bytes()[:3000])  # truncated FITS
    every, every_rgb = _render_cli(tmp_path, folder, "all", "all")
    none, none_rgb = _render_cli(tmp_path, folder, "none", "none")
    assert sorted(p.name for p in every_rgb.iterdir()) == ["gal0.png", "gal2.png"]
    assert not none_rgb.exists() or not any(none_rgb.iterdir())
    # The broken cutout fails either way, with its reason; the ledgers are equal.
    status = read_table(none / "status.parquet").set_index("objid")
    assert status.loc["gal1", "status"] == "failed" and "gal1.fits" in status.loc["gal1", "reason"]
    pd.testing.assert_frame_equal(read_table(every / "status.parquet"), read_table(none / "status.parquet"))
    pd.testing.assert_frame_equal(read_table(every / "labels.parquet"), read_table(none / "labels.parquet"))
    with_png, without = read_table(every / "render.parquet"), read_table(none / "render.parquet")
    assert without["objid"].tolist() == ["gal0", "gal2"] and without["png"].isna().all()
    assert with_png["png"].notna().all()
    pd.testing.assert_frame_equal(with_png.drop(columns="png"), without.drop(columns="png"))


def test_png_first_n_counts_shard_rows_not_survivors(tmp_path, cutout_dir):
    folder = cutout_dir(["gal0", "gal2"])  # gal1's cutout is missing
    shard, rgb = _render_cli(tmp_path, folder, "first", "first:2")
    # first:2 is gal0 and gal1 of the shard's table; gal1 fails, gal2 gets no PNG.
    assert [p.name for p in rgb.iterdir()] == ["gal0.png"]
    table = read_table(shard / "render.parquet").set_index("objid")
    assert table.loc["gal0", "png"] == str(rgb / "gal0.png") and pd.isna(table.loc["gal2", "png"])
    assert table.loc["gal2", "scale_x"] == pytest.approx(RENDER_SIZE / 64)


@pytest.mark.parametrize(
    ("value", "expected"), [("all", None), ("none", 0), ("first:12", 12), ("FIRST:0", 0)]
)
def test_parse_png(value, expected):
    assert parse_png(value) == expected


@pytest.mark.parametrize("value", ["some", "first:", "first:-1", "first:two", "last:3"])
def test_parse_png_names_the_allowed_forms(value):
    with pytest.raises(argparse.ArgumentTypeError, match=r"all, none or first:N"):
        parse_png(value)


def test_png_without_rgb_dir_is_an_error(tmp_path, cutout_dir):
    folder = cutout_dir(["gal0"])
    with pytest.raises(InputError, match="--rgb-dir"):
        render_shard(["gal0"], folder, None, "sdss")
    table, failures = render_shard(["gal0"], folder, None, "sdss", pngs=())
    assert not failures and table["png"].isna().all()


def test_gallery_pngs_spread_over_shards():
    # The sample's first 12 rows: 5 + 5 + 2 with shards of 5, none after.
    assert [gallery_pngs_in_shard(k, 5, 12) for k in range(4)] == [5, 5, 2, 0]
    assert gallery_pngs_in_shard(0, 100, GALLERY_SIZE) == GALLERY_SIZE
    objids = [f"g{i}" for i in range(9)]
    chosen = set().union(
        *(png_objids(objids[k * 3 : k * 3 + 3], gallery_pngs_in_shard(k, 3, 4)) for k in range(3))
    )
    assert chosen == {"g0", "g1", "g2", "g3"}
