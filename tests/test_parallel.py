"""A shard's per-galaxy work over worker processes: same results, same order, as in one process."""

from __future__ import annotations

import multiprocessing

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from clumpcat import parallel
from clumpcat.cli import main
from clumpcat.evaluation.baseline import baseline_shard
from clumpcat.parallel import MAX_AUTO_THREADS, ordered_map, shard_job_threads
from clumpcat.photometry.apertures import photometry_shard
from clumpcat.survey.inject import inject_survey
from clumpcat.survey.segments import segment_shard
from tests.test_photometry import _box_host_mask, _write_shard
from tests.test_segments import shard  # noqa: F401 - the fixture


def _scaled(state: dict, item: int) -> tuple[int, int, int]:
    import os

    return item, item * state["factor"], os.getpid()


def _fails_on_three(state: None, item: int) -> int:
    if item == 3:
        raise RuntimeError("item 3 is broken")
    return item


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_results_keep_the_items_order(workers):
    items = list(range(23))
    done = ordered_map(_scaled, {"factor": 7}, items, workers=workers)
    assert [(i, v) for i, v, _pid in done] == [(i, 7 * i) for i in items]
    pids = {pid for _i, _v, pid in done}
    if workers == 1:
        import os

        assert pids == {os.getpid()}  # no pool for one worker
    else:
        assert 1 <= len(pids) <= workers


def test_an_uncaught_error_stops_the_map_with_its_message():
    with pytest.raises(RuntimeError, match="item 3 is broken"):
        ordered_map(_fails_on_three, None, range(6), workers=2)


def test_workers_below_one_is_an_error():
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        ordered_map(_scaled, {"factor": 1}, [1], workers=0)


def test_without_fork_the_state_is_pickled_to_spawned_processes(monkeypatch):
    """Where there is no fork (Windows) the pool spawns; the results are the same."""
    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    assert parallel._context().get_start_method() == "spawn"
    done = ordered_map(_scaled, {"factor": 3}, [4, 5, 6], workers=2)
    assert [v for _i, v, _pid in done] == [12, 15, 18]


def test_segments_do_not_depend_on_the_workers(shard):  # noqa: F811
    folder, galaxies = shard
    one = segment_shard(galaxies, folder, nsigma=0.4)
    two = segment_shard(galaxies, folder, nsigma=0.4, workers=2)
    assert list(two.segments) == list(one.segments) == ["gal0", "gal1"]
    assert two.failures == one.failures == {"gal2": "file not found"}
    for objid in one.segments:
        np.testing.assert_array_equal(two.get(objid).mask, one.get(objid).mask)
        assert two.get(objid).centre == one.get(objid).centre


def test_photometry_does_not_depend_on_the_workers(tmp_path):
    galaxies, clumps, cut_dir = _write_shard(tmp_path, n_gal=4)
    (cut_dir / "gal1.fits").write_bytes(b"SIMPLE  = T" + b"\0" * 100)  # fails alone, in a worker
    runs = [
        photometry_shard(
            galaxies,
            clumps,
            cut_dir,
            galaxies["objid"],
            ebv_source="table",
            host_mask_fn=_box_host_mask,
            workers=workers,
        )  # fmt: skip
        for workers in (1, 2)
    ]
    pd.testing.assert_frame_equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1] and [f.objid for f in runs[1][1]] == ["gal1"]
    assert sorted(set(runs[1][0]["objid"])) == ["gal0", "gal2", "gal3"]


def test_injection_does_not_depend_on_the_workers(shard, tmp_path):  # noqa: F811
    folder, galaxies = shard
    runs = [
        inject_survey(galaxies, folder, tmp_path / f"w{workers}", seed=4, per_galaxy=3, workers=workers)
        for workers in (1, 2)
    ]
    pd.testing.assert_frame_equal(runs[0][0], runs[1][0])
    assert len(runs[0][0]) == 6  # three clumps in each of the two readable cutouts
    assert runs[0][1] == runs[1][1] and [f.objid for f in runs[1][1]] == ["gal2"]
    for objid in ("gal0", "gal1"):
        one = fits.getdata(tmp_path / "w1" / f"{objid}.fits", extname="R")
        two = fits.getdata(tmp_path / "w2" / f"{objid}.fits", extname="R")
        np.testing.assert_array_equal(one, two)


def test_baseline_does_not_depend_on_the_workers(shard):  # noqa: F811
    folder, _galaxies = shard
    runs = [
        baseline_shard(["gal0", "gal1", "gal2"], folder, workers=workers, min_snr=2.0) for workers in (1, 2)
    ]
    pd.testing.assert_frame_equal(runs[0][0], runs[1][0])
    assert len(runs[0][0]) and set(runs[0][0]["objid"]) <= {"gal0", "gal1"}
    assert runs[0][1] == runs[1][1] and [f.objid for f in runs[1][1]] == ["gal2"]


@pytest.mark.parametrize("stage", ["segment", "photometry", "inject", "baseline"])
def test_cli_workers_must_be_positive(stage, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([stage, "--workers", "0", "--galaxies", "g.parquet", "--cutouts", "c", "--out", "o"])
    assert exit_info.value.code == 2
    assert "--workers: must be a whole number >= 1, got '0'" in capsys.readouterr().err


def test_auto_threads_share_the_local_cores_among_the_shards():
    assert shard_job_threads(None, cores=2, shards=1, cluster=2) == 2
    assert shard_job_threads(None, cores=2, shards=4, cluster=2) == 1
    assert shard_job_threads(None, cores=16, shards=4, cluster=2) == 4
    assert shard_job_threads(None, cores=64, shards=1, cluster=2) == MAX_AUTO_THREADS
    assert shard_job_threads(None, cores=2, shards=0, cluster=2) == 2  # a sample not yet listed
    # On a cluster every job gets its own allocation: the cluster value.
    assert shard_job_threads(None, cores=None, shards=4, cluster=1) == 1
    # A configured number wins, locally and on a cluster.
    assert shard_job_threads(3, cores=2, shards=4, cluster=2) == 3
    assert shard_job_threads(3, cores=None, shards=4, cluster=2) == 3
    with pytest.raises(ValueError, match="threads must be >= 1"):
        shard_job_threads(0, cores=2, shards=1, cluster=2)
