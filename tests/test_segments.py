"""One host segment per galaxy: computed once by `clumpcat segment`, read by every later stage."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clumpcat.cli import main
from clumpcat.errors import CutoutError, InputError
from clumpcat.evaluation.baseline import baseline_shard
from clumpcat.photometry.apertures import photometry_shard
from clumpcat.postprocess.clumps import postprocess_shard
from clumpcat.postprocess.hostmask import in_mask
from clumpcat.survey import hostsegment, inject, segments
from clumpcat.survey.cutouts import read_cutout
from clumpcat.survey.segments import SegmentSet, read_segments, segment_galaxy, segment_shard, write_segments

BIG_DISC = {"u": 60.0, "g": 150.0, "r": 250.0, "i": 300.0, "z": 320.0, "y": 330.0}
CLUMPS = ((40.0, 50.0, 4.0), (60.0, 44.0, 3.0))


@pytest.fixture
def shard(cutout_dir, tmp_path):
    """Two disc galaxies with two clumps each, one missing cutout; galaxy table at the WCS centre."""
    folder = cutout_dir(
        ["gal0", "gal1"], shape=(96, 96), sources=CLUMPS, disc_scale_px=14.0, disc_flux=BIG_DISC
    )
    galaxies = pd.DataFrame(
        {
            "objid": ["gal0", "gal1", "gal2"],
            "ra": [150.0] * 3,
            "dec": [2.0] * 3,
            "host_mag_u": [18.0] * 3,
            "ebv": [0.02] * 3,
        }
    )
    return folder, galaxies


def test_segments_round_trip_compactly_with_failures_and_settings(shard, tmp_path):
    folder, galaxies = shard
    made = segment_shard(galaxies, folder, nsigma=0.4)
    assert sorted(made.segments) == ["gal0", "gal1"]
    assert made.failures == {"gal2": "file not found"}
    path = write_segments(tmp_path / "segments.npz", made)
    assert path.stat().st_size < 4000  # two 96x96 masks, bit-packed and compressed
    back = read_segments(path)
    assert back.settings["nsigma"] == 0.4 and back.settings["band"] == "r"
    assert back.failures == made.failures
    for objid in ("gal0", "gal1"):
        cutout = read_cutout(folder / f"{objid}.fits")
        np.testing.assert_array_equal(
            back.get(objid).mask, segment_galaxy(cutout, 150.0, 2.0, nsigma=0.4).mask
        )
        assert back.get(objid).found and back.get(objid).centre == pytest.approx((47.5, 47.5), abs=0.01)
    with pytest.raises(CutoutError, match="no host segment: file not found"):
        back.get("gal2")
    with pytest.raises(InputError, match="does not exist"):
        read_segments(tmp_path / "none.npz")


def test_a_lower_threshold_grows_the_segment(shard):
    folder, galaxies = shard
    low = segment_shard(galaxies, folder, nsigma=0.25).get("gal0").mask
    high = segment_shard(galaxies, folder, nsigma=1.0).get("gal0").mask
    assert high.sum() < low.sum() and not (high & ~low).any()


@pytest.fixture
def stored(shard, tmp_path, monkeypatch):
    """Stored segments whose masks are a small disc (not what segmentation gives); segmentation then disabled."""
    folder, galaxies = shard
    made = segment_shard(galaxies, folder)
    yy, xx = np.mgrid[:96, :96]
    small = np.hypot(xx - 47.5, yy - 47.5) < 14.0
    for objid, seg in made.segments.items():
        made.segments[objid] = segments.GalaxySegment(objid, small, seg.centre, 0.0, seg.fwhm_px)
    path = write_segments(tmp_path / "segments.npz", made)

    def no_recompute(*args, **kwargs):
        raise AssertionError("the host segment was recomputed")

    monkeypatch.setattr(hostsegment, "segment_host", no_recompute)
    return folder, galaxies, read_segments(path), small


def test_inject_photometry_baseline_and_postprocess_use_the_stored_segment(stored, tmp_path):
    folder, galaxies, stored_set, small = stored
    # inject: every site on the stored (small) segment, the host flux summed over it
    truth, failures = inject.inject_survey(
        galaxies, folder, tmp_path / "inj", 4, per_galaxy=5, segments=stored_set
    )
    assert [f.objid for f in failures] == ["gal2"]  # no cutout
    assert in_mask(truth["x"].to_numpy(), truth["y"].to_numpy(), small).all()
    # baseline: candidates only on the stored segment
    found, failed = baseline_shard(["gal0", "gal1"], folder, segments=stored_set, min_snr=2.0)
    assert len(found) and in_mask(found["x"].to_numpy(), found["y"].to_numpy(), small).all()
    assert not failed
    # postprocess: a clump outside the stored segment is dropped, one inside kept
    det = pd.DataFrame(
        {
            "objid": ["gal0", "gal0"],
            "x": [40.0, 20.0],
            "y": [50.0, 80.0],
            "box_x0": [36.0, 16.0],
            "box_y0": [46.0, 76.0],
            "box_x1": [45.0, 25.0],
            "box_y1": [55.0, 85.0],
            "score": [0.9, 0.8],
            "label": ["normal", "normal"],
        }
    )
    clumps, failures = postprocess_shard(galaxies.iloc[:2], det, folder, segments=stored_set, min_snr=0.0)
    assert clumps["x"].tolist() == [40.0] and not failures
    # photometry: the stored mask is the host mask (no segmentation ran)
    phot, failures = photometry_shard(
        galaxies.iloc[:2], clumps, folder, ["gal0"], bands=("g", "r"), segments=stored_set
    )
    assert len(phot) == 1 and not failures and np.isfinite(phot["flux_nmgy_r"]).all()


def test_a_failed_segment_fails_the_galaxy_in_the_ledger(shard, tmp_path):
    folder, galaxies = shard
    made = segment_shard(galaxies.iloc[:2], folder)
    broken = SegmentSet({"gal0": made.get("gal0")}, {"gal1": "all NaN in R"}, made.settings)
    clumps, failures = postprocess_shard(
        galaxies.iloc[:2], pd.DataFrame(columns=["objid", "box_x0", "box_y0", "box_x1", "box_y1", "score", "label"]),
        folder, segments=broken,
    )  # fmt: skip
    assert [(f.objid, f.stage, f.reason) for f in failures] == [
        ("gal1", "postprocess", "no host segment: all NaN in R")
    ]


def test_cli_writes_the_shard_segments(shard, tmp_path):
    folder, galaxies = shard
    galaxies.to_parquet(tmp_path / "galaxies.parquet")
    out = tmp_path / "shard" / "segments.npz"
    argv = [
        "segment",
        "--galaxies",
        tmp_path / "galaxies.parquet",
        "--cutouts",
        folder,
        "--out",
        out,
        "--host-nsigma",
        0.3,
    ]
    assert main([str(a) for a in argv]) == 0
    back = read_segments(out)
    assert sorted(back.segments) == ["gal0", "gal1"] and back.settings["nsigma"] == 0.3
