"""Tests of post-processing: NMS, merging within the FWHM, host mask (Section 4.3)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from astropy.wcs import WCS

from clumpcat.cli import main
from clumpcat.constants import SDSS_PIXEL_SCALE
from clumpcat.errors import InputError
from clumpcat.ledger import write_status
from clumpcat.postprocess.clumps import (
    CLUMP_COLUMNS,
    apply_host_mask,
    empty_clumps,
    merge_within_fwhm,
    nms_across_labels,
    postprocess_galaxy,
    postprocess_shard,
)
from clumpcat.survey.cutouts import Cutout, read_cutout, write_cutout

N = 120
FWHM_ARCSEC = 1.4
FWHM_PX = FWHM_ARCSEC / SDSS_PIXEL_SCALE
CLUMP = (70.0, 62.0)  # on the disc
STAR = (110.0, 10.0)  # a background star far outside the disc


def tan_wcs(ra, dec, n=N):
    """A TAN WCS with north up, east left, at the SDSS pixel scale."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crpix = [(n + 1) / 2, (n + 1) / 2]
    w.wcs.cdelt = [-SDSS_PIXEL_SCALE / 3600, SDSS_PIXEL_SCALE / 3600]
    w.wcs.crval = [ra, dec]
    w.wcs.radesys = "ICRS"
    return w


def galaxy_cutout(objid="g1", ra=150.0, dec=2.0, seed=0):
    """Exponential disc + Gaussian-PSF clump and star + noise, in nanomaggies."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:N, :N].astype(float)
    c = (N - 1) / 2
    disc = np.exp(-np.hypot(xx - c, (yy - c) / 0.7) / 8.0)
    s = FWHM_PX / 2.3548
    images = {}
    for band, scale in (("g", 0.7), ("r", 1.0)):
        image = scale * disc
        for (px, py), flux in ((CLUMP, 3.0), (STAR, 20.0)):
            image = image + flux / (2 * np.pi * s * s) * np.exp(
                -((xx - px) ** 2 + (yy - py) ** 2) / (2 * s * s)
            )
        images[band] = (image + rng.normal(0.0, 0.02, image.shape)).astype(np.float32)
    return Cutout(objid, images, tan_wcs(ra, dec), {"g": FWHM_ARCSEC, "r": FWHM_ARCSEC})


def box_at(x, y, side):
    return [x - side / 2, y - side / 2, x + side / 2, y + side / 2]


def detections(objid, rows):
    """Detections table from (x, y, side, score, label) rows, as the detect stage writes it.

    Cutout frame: x, y pixel-index centres; boxes in pixel-edge coordinates,
    so their midpoints are at x + 0.5, y + 0.5.
    """
    recs = []
    for x, y, side, score, label in rows:
        x0, y0, x1, y1 = box_at(x + 0.5, y + 0.5, side)
        recs.append(
            dict(
                objid=objid,
                x=x,
                y=y,
                ra=0.0,
                dec=0.0,
                box_x0=x0,
                box_y0=y0,
                box_x1=x1,
                box_y1=y1,
                score=score,
                label=label,
            )
        )
    return pd.DataFrame(
        recs,
        columns=["objid", "x", "y", "ra", "dec", "box_x0", "box_y0", "box_x1", "box_y1", "score", "label"],
    )


# --------------------------------------------------------------------------- NMS


def test_nms_drops_contained_low_score_box_keeps_adjacent():
    boxes = np.array(
        [
            box_at(50, 50, 12),  # small, high score
            box_at(50, 50, 20),  # large, lower score, contains it: IoU 0.36
            box_at(62, 50, 16),  # adjacent clump, partly overlapping the large box
            box_at(74, 50, 16),  # its neighbour: IoU 4*16 / (2*256 - 64) = 0.14
        ]
    )
    scores = np.array([0.9, 0.5, 0.8, 0.7])
    keep = nms_across_labels(boxes, scores, iou=0.2)
    assert sorted(keep.tolist()) == [0, 2, 3]
    assert keep.tolist() == [0, 2, 3]  # by decreasing score


def test_nms_is_across_labels_and_handles_empty():
    # the same clump boxed as normal and odd: one survives, whatever its label
    keep = nms_across_labels(np.array([box_at(10, 10, 8), box_at(10.5, 10, 8)]), np.array([0.4, 0.6]))
    assert keep.tolist() == [1]
    assert nms_across_labels(np.zeros((0, 4)), np.zeros(0)).size == 0
    with pytest.raises(ValueError, match="differ in length"):
        nms_across_labels(np.zeros((2, 4)), np.zeros(3))
    with pytest.raises(ValueError, match="iou"):
        nms_across_labels(np.zeros((1, 4)), np.zeros(1), iou=1.5)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("iou", [0.0, 0.2, 0.5, 1.0])
def test_nms_keeps_what_torchvision_keeps(seed, iou):
    # The released code's NMS (Section 4.3.1), on crowded boxes with tied
    # scores, empty boxes and identical boxes among them.
    import torch
    from torchvision.ops import nms

    rng = np.random.default_rng(seed)
    n = 60
    centres = rng.uniform(0, 40, size=(n, 2))
    sizes = rng.uniform(0, 12, size=(n, 2))
    sizes[:4] = 0.0
    boxes = np.column_stack([centres - sizes / 2, centres + sizes / 2])
    boxes[10:13] = boxes[9]
    scores = np.round(rng.uniform(0, 1, n), 1)
    expected = nms(torch.tensor(boxes), torch.tensor(scores), iou).numpy()
    np.testing.assert_array_equal(nms_across_labels(boxes, scores, iou), expected)


# ----------------------------------------------------------------------- merging


def merge(xy, scores, labels, fwhm=4.0, **kw):
    xy = np.asarray(xy, dtype=float)
    boxes = np.array([box_at(x, y, 10) for x, y in xy])
    return merge_within_fwhm(xy[:, 0], xy[:, 1], scores, labels, boxes, fwhm, **kw)


def test_half_fwhm_pair_merges_to_midpoint_odd_max_score():
    m = merge([(20, 20), (22, 20)], [0.9, 0.4], ["normal", "odd"])  # 0.5 FWHM apart
    assert m.x.tolist() == [21.0] and m.y.tolist() == [20.0]
    assert m.label.tolist() == ["odd"] and m.score.tolist() == [0.9] and m.score_min.tolist() == [0.4]
    assert m.n_merged.tolist() == [1 + 1]
    np.testing.assert_allclose(m.boxes[0], box_at(21, 20, 10))  # (x, y) stays the box centre


def test_one_and_a_half_fwhm_pair_stays_separate():
    m = merge([(20, 20), (26, 20)], [0.9, 0.4], ["normal", "odd"])  # 1.5 FWHM apart
    assert m.x.tolist() == [20.0, 26.0]
    assert m.label.tolist() == ["normal", "odd"] and m.n_merged.tolist() == [1, 1]


def test_chain_seed_versus_components():
    # A - B - C, neighbours 0.8 FWHM apart, A to C 1.6 FWHM
    xy = [(10, 10), (13.2, 10), (16.4, 10)]
    # best score at the end: A takes B, C stays alone
    m = merge(xy, [0.9, 0.5, 0.6], ["normal"] * 3, linkage="seed")
    assert m.n_merged.tolist() == [2, 1]
    assert m.x.tolist() == pytest.approx([11.6, 16.4])
    # best score in the middle: B takes both
    m = merge(xy, [0.5, 0.9, 0.6], ["normal"] * 3, linkage="seed")
    assert m.n_merged.tolist() == [3] and m.x[0] == pytest.approx(13.2)
    # components: the whole chain becomes one clump at the centroid
    m = merge(xy, [0.9, 0.5, 0.6], ["normal", "normal", "odd"], linkage="components")
    assert m.n_merged.tolist() == [3] and m.x[0] == pytest.approx(13.2)
    assert m.label.tolist() == ["odd"] and m.score.tolist() == [0.9]


def test_merge_validation_and_empty():
    empty = merge_within_fwhm([], [], [], [], np.zeros((0, 4)), 3.0)
    assert empty.x.size == 0 and empty.groups == []
    with pytest.raises(ValueError, match="labels must be"):
        merge([(0, 0)], [0.5], ["clump"])
    with pytest.raises(ValueError, match="linkage"):
        merge([(0, 0)], [0.5], ["odd"], linkage="single")
    with pytest.raises(ValueError, match="fwhm_px"):
        merge([(0, 0)], [0.5], ["odd"], fwhm=0.0)


# -------------------------------------------------------------- galaxy level


def test_host_mask_removes_star_keeps_disc_clump_and_sky_from_wcs():
    cut = galaxy_cutout()
    side = 2.5 * FWHM_PX
    det = detections("g1", [(*CLUMP, side, 0.8, "normal"), (*STAR, side, 0.95, "odd")])
    out = postprocess_galaxy(det, cut)
    assert list(out.columns) == list(CLUMP_COLUMNS)
    assert len(out) == 1
    row = out.iloc[0]
    assert (row.x, row.y) == pytest.approx(CLUMP)
    assert row.label == "normal" and row.in_host and row.n_merged == 1
    assert row.fwhm_r_px == pytest.approx(FWHM_PX, rel=1e-6)
    sky = cut.wcs.pixel_to_world(out["x"].to_numpy(), out["y"].to_numpy())
    np.testing.assert_allclose(out["ra"], sky.ra.deg, rtol=0, atol=1e-10)
    np.testing.assert_allclose(out["dec"], sky.dec.deg, rtol=0, atol=1e-10)
    # flag mode keeps the star with in_host False; off keeps it unchecked
    flagged = postprocess_galaxy(det, cut, host_mask="flag")
    assert flagged["in_host"].tolist() == [False, True]  # by decreasing score
    assert len(postprocess_galaxy(det, cut, host_mask="off")) == 2


def test_galaxy_pipeline_nms_then_merge_then_floor():
    cut = galaxy_cutout()
    x, y = CLUMP
    det = detections(
        "g1",
        [
            (x, y, 8.0, 0.9, "normal"),
            (x, y, 16.0, 0.3, "normal"),  # contains the first, IoU 0.25: removed by NMS
            (x + 0.5 * FWHM_PX, y, 3.0, 0.2, "odd"),  # 0.5 FWHM away, IoU 0.14: merged
            (x - 12, y, 8.0, 0.01, "normal"),  # below the score floor
        ],
    )
    out = postprocess_galaxy(det, cut)
    assert len(out) == 1
    row = out.iloc[0]
    assert row.x == pytest.approx(x + 0.25 * FWHM_PX) and row.label == "odd"
    assert (row.score, row.score_min, row.n_merged) == (0.9, 0.2, 2)
    # pixel-edge box, centred half a pixel from the pixel-index centre, as detect writes it
    assert (row.box_x0 + row.box_x1) / 2 == pytest.approx(row.x + 0.5)
    assert (row.box_y0 + row.box_y1) / 2 == pytest.approx(row.y + 0.5)
    # at the paper's 0.3 floor, the odd candidate never existed
    strict = postprocess_galaxy(det, cut, score_floor=0.3)
    assert strict["label"].tolist() == ["normal"] and strict["x"].tolist() == [x]


def test_centres_derived_from_pixel_edge_boxes_without_xy():
    det = detections("g1", [(*CLUMP, 9.0, 0.8, "normal")]).drop(columns=["x", "y"])
    out = postprocess_galaxy(det, galaxy_cutout())
    assert (out.x[0], out.y[0]) == pytest.approx(CLUMP)


def test_empty_detections_give_empty_table_with_all_columns():
    out = postprocess_galaxy(detections("g1", []), galaxy_cutout())
    assert out.empty and list(out.columns) == list(CLUMP_COLUMNS)
    assert list(empty_clumps().columns) == list(CLUMP_COLUMNS)


def test_bad_detections_rejected():
    cut = galaxy_cutout()
    with pytest.raises(InputError, match="missing column"):
        postprocess_galaxy(pd.DataFrame({"objid": ["g1"], "score": [0.5]}), cut)
    with pytest.raises(InputError, match="label must be"):
        postprocess_galaxy(detections("g1", [(*CLUMP, 9.0, 0.5, "blob")]), cut)


def test_apply_host_mask_outside_image_is_false():
    mask = np.ones((10, 10), dtype=bool)
    assert apply_host_mask(np.array([5.0, -2.0, 10.0]), np.array([5.0, 5.0, 5.0]), mask).tolist() == [
        True,
        False,
        False,
    ]


# ------------------------------------------------------------------ shard + CLI


@pytest.fixture
def shard(tmp_path):
    """Three galaxies: g1 fine, g2 with a truncated cutout, g3 failed upstream."""
    cut_dir = tmp_path / "cutouts"
    write_cutout(cut_dir / "g1.fits", galaxy_cutout("g1", 150.0, 2.0))
    bad = write_cutout(cut_dir / "g2.fits", galaxy_cutout("g2", 151.0, 2.0, seed=1))
    bad.write_bytes(bad.read_bytes()[:4000])  # truncated
    galaxies = pd.DataFrame({"objid": ["g1", "g2", "g3"], "ra": [150.0, 151.0, 152.0], "dec": [2.0] * 3})
    side = 2.5 * FWHM_PX
    det = pd.concat(
        [
            detections("g1", [(*CLUMP, side, 0.8, 1), (*STAR, side, 0.9, 2)]),  # class ids accepted
            detections("g2", [(*CLUMP, side, 0.8, 1)]),
        ],
        ignore_index=True,
    )
    status_in = tmp_path / "status-detect.parquet"
    from clumpcat.ledger import LedgerEntry

    write_status(status_in, galaxies["objid"], [LedgerEntry("g3", "failed", "render", "all NaN")])
    galaxies.to_parquet(tmp_path / "galaxies.parquet")
    det.to_parquet(tmp_path / "detections.parquet")
    return tmp_path


def test_shard_corrupt_cutout_fails_other_galaxy_completes(shard):
    from clumpcat.tables import read_table

    clumps, failures = postprocess_shard(
        read_table(shard / "galaxies.parquet"),
        read_table(shard / "detections.parquet"),
        shard / "cutouts",
        status=read_table(shard / "status-detect.parquet"),
    )
    assert clumps["objid"].tolist() == ["g1"]
    assert clumps["label"].tolist() == ["normal"]  # the odd star was outside the host
    assert [(f.objid, f.stage) for f in failures] == [("g2", "postprocess")]
    assert "truncated" in failures[0].reason


def test_cli_writes_clumps_and_status(shard):
    args = [
        "postprocess",
        "--galaxies", str(shard / "galaxies.parquet"),
        "--detections", str(shard / "detections.parquet"),
        "--cutouts", str(shard / "cutouts"),
        "--status-in", str(shard / "status-detect.parquet"),
        "--status-out", str(shard / "status-postprocess.parquet"),
        "--out", str(shard / "clumps.parquet"),
    ]  # fmt: skip
    assert main(args) == 0
    table = pq.read_table(shard / "clumps.parquet")
    assert table.column_names == list(CLUMP_COLUMNS)
    assert table.schema.field("ra").metadata[b"unit"] == b"deg"
    assert table.schema.metadata[b"host_mask"] == b"drop"
    assert table.num_rows == 1
    status = pd.read_parquet(shard / "status-postprocess.parquet").set_index("objid")
    assert status.loc["g1", "status"] == "ok"
    assert (status.loc["g2", "status"], status.loc["g2", "stage"]) == ("failed", "postprocess")
    assert "truncated" in status.loc["g2", "reason"]
    assert (status.loc["g3", "stage"], status.loc["g3", "reason"]) == ("render", "all NaN")


def test_cli_empty_detections(shard, tmp_path):
    pd.read_parquet(shard / "detections.parquet").iloc[:0].to_parquet(shard / "none.parquet")
    out = tmp_path / "empty" / "clumps.parquet"
    assert main([
        "postprocess", "--galaxies", str(shard / "galaxies.parquet"),
        "--detections", str(shard / "none.parquet"), "--cutouts", str(shard / "cutouts"),
        "--status-out", str(tmp_path / "empty" / "status.parquet"), "--out", str(out),
        "--no-host-mask",
    ]) == 0  # fmt: skip
    table = pq.read_table(out)
    assert table.num_rows == 0 and table.column_names == list(CLUMP_COLUMNS)
    assert pd.read_parquet(tmp_path / "empty" / "status.parquet")["status"].tolist() == ["ok"] * 3


def test_cli_rejects_bad_option(shard, caplog):
    assert main([
        "postprocess", "--galaxies", str(shard / "galaxies.parquet"),
        "--detections", str(shard / "detections.parquet"), "--cutouts", str(shard / "cutouts"),
        "--status-out", str(shard / "s.parquet"), "--out", str(shard / "c.parquet"), "--nms-iou", "2",
    ]) == 1  # fmt: skip
    assert "postprocess.nms_iou (--nms-iou) must be <= 1, got 2" in caplog.text


def test_cutout_read_back(tmp_path):
    path = write_cutout(tmp_path / "g1.fits", galaxy_cutout())
    assert read_cutout(path, bands=("r",)).fwhm_pixels("r") == pytest.approx(FWHM_PX, rel=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"nms_iou": -0.1}, "nms_iou must lie in"),
        ({"merge_fwhm": -1.0}, "merge_fwhm must be"),
        ({"score_floor": np.nan}, "score_floor must be finite"),
        ({"host_mask": "maybe"}, "host_mask must be one of"),
        ({"linkage": "single"}, "linkage must be one of"),
    ],
)
def test_invalid_options_rejected_before_any_galaxy(kwargs, match, tmp_path):
    galaxies = pd.DataFrame({"objid": ["g1"], "ra": [150.0], "dec": [2.0]})
    with pytest.raises(InputError, match=match):
        postprocess_shard(galaxies, detections("g1", [(*CLUMP, 9.0, 0.5, "normal")]), tmp_path, **kwargs)
    with pytest.raises(ValueError, match=match):
        postprocess_galaxy(detections("g1", []), galaxy_cutout(), **kwargs)


def test_missing_cutout_and_missing_r_band_fail_with_reason(tmp_path):
    cut = galaxy_cutout("g2")
    write_cutout(tmp_path / "g2.fits", Cutout("g2", {"g": cut.images["g"]}, cut.wcs, {"g": FWHM_ARCSEC}))
    galaxies = pd.DataFrame({"objid": ["g1", "g2"], "ra": [150.0, 150.0], "dec": [2.0, 2.0]})
    det = pd.concat([detections(o, [(*CLUMP, 9.0, 0.5, "normal")]) for o in ("g1", "g2")], ignore_index=True)
    clumps, failures = postprocess_shard(galaxies, det, tmp_path)
    assert clumps.empty and list(clumps.columns) == list(CLUMP_COLUMNS)
    reasons = {f.objid: f.reason for f in failures}
    assert reasons == {"g1": "file not found", "g2": "missing band(s) R"}


def test_seed_merge_then_cut_keeps_the_clumps_of_merging_at_the_cut():
    """A cut score >= t after merging at a low floor gives the clumps of merging at t."""
    rng = np.random.default_rng(3)
    for _ in range(50):
        n = int(rng.integers(2, 25))
        xy = rng.uniform(0, 30, size=(n, 2))
        scores = rng.uniform(0.05, 1.0, n)
        labels = rng.choice(["normal", "odd"], n)
        boxes = np.column_stack([xy - 4, xy + 4])
        everything = merge_within_fwhm(xy[:, 0], xy[:, 1], scores, labels, boxes, 4.0)
        for t in (0.3, 0.5, 0.8):
            sel = scores >= t
            at_t = merge_within_fwhm(xy[sel, 0], xy[sel, 1], scores[sel], labels[sel], boxes[sel], 4.0)
            assert sorted(everything.score[everything.score >= t]) == sorted(at_t.score)
