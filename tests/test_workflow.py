"""The Snakemake workflow: configuration errors, dry runs at scale, and a small real run."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from filelock import FileLock

from clumpcat.render.selection import GALLERY_SIZE

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.xdist_group("workflow")


def snakemake(*args, cwd=ROOT, timeout=1200, venv_on_path=True):
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and Path(p) != BIN]
    if venv_on_path:
        path.insert(0, str(BIN))
    env = {**os.environ, "PATH": os.pathsep.join(path), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [str(BIN / "snakemake"), "--cores", "2", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def job_counts(stdout: str) -> dict[str, int]:
    table = stdout[stdout.index("Job stats:") :]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def test_real_survey_without_galaxy_table_is_refused():
    done = snakemake("-n", "--config", "survey=sdss")
    assert done.returncode != 0
    assert "'survey' is 'sdss' but no 'galaxies' table is given" in done.stderr + done.stdout


def test_unknown_config_value_is_named():
    done = snakemake("-n", "--config", "survey=des")
    assert done.returncode != 0
    assert "des" in done.stderr + done.stdout


def test_dry_run_on_a_large_user_table(tmp_path):
    n = 20_000
    pd.DataFrame({"objid": np.arange(n), "ra": np.linspace(0, 10, n), "dec": np.zeros(n)}).to_parquet(
        tmp_path / "galaxies.parquet"
    )
    (tmp_path / "cutouts").mkdir()
    (tmp_path / "model.pt").write_bytes(b"")
    done = snakemake(
        "-n",
        "--config",
        f"galaxies={tmp_path / 'galaxies.parquet'}",
        f"cutouts={tmp_path / 'cutouts'}",
        f"model={tmp_path / 'model.pt'}",
        f"results={tmp_path / 'out'}",
        "shard_size=1000",
        "survey=sdss",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    counts = job_counts(done.stdout)
    assert counts["split_galaxies"] == 1
    for rule in ("render", "detect", "postprocess", "photometry"):
        assert counts[rule] == 20
    assert "train" not in counts and "simulate" not in counts and "evaluate" not in counts


def job_threads(stdout: str) -> dict[str, set[int]]:
    """The --threads (detect) and --workers (segment, photometry) of every job a dry run printed."""
    found: dict[str, set[int]] = {}
    for stage, value in re.findall(
        r"clumpcat (detect|segment|photometry) .*?--(?:threads|workers) (\d+)", stdout
    ):
        found.setdefault(stage, set()).add(int(value))
    return found


def test_per_shard_jobs_share_out_the_local_cores(tmp_path):
    pd.DataFrame({"objid": np.arange(1000), "ra": np.linspace(0, 10, 1000), "dec": 0.0}).to_parquet(
        tmp_path / "galaxies.parquet"
    )
    (tmp_path / "cutouts").mkdir()
    (tmp_path / "model.pt").write_bytes(b"")
    user = [f"galaxies={tmp_path / 'galaxies.parquet'}", f"cutouts={tmp_path / 'cutouts'}"]
    user += [f"model={tmp_path / 'model.pt'}", f"results={tmp_path / 'out'}"]
    stages = {"detect", "segment", "photometry"}

    def threads(*args):
        done = snakemake("-n", "-p", *args)
        assert done.returncode == 0, done.stderr[-2000:]
        return job_threads(done.stdout)

    # Four shards on 2 cores: one core per job, two jobs side by side.
    assert threads("--config", *user, "shard_size=250") == dict.fromkeys(stages, {1})
    # One shard: it gets both cores; on 6 cores, all six.
    assert threads("--config", *user, "shard_size=1000") == dict.fromkeys(stages, {2})
    assert threads("--cores", "6", "--config", *user, "shard_size=1000") == dict.fromkeys(stages, {6})
    # A number in the configuration is kept, whatever the cores and shards
    # (Snakemake still gives a job at most --cores).
    fixed = threads("--cores", "6", "--config", *user, "shard_size=250", "shard_threads=3")
    assert fixed == {"detect": {1}, "segment": {3}, "photometry": {3}}


def test_hsc_rerun_config_crossmatches_first_then_fetches(tmp_path):
    parent = tmp_path / "parent.parquet"
    pd.DataFrame(
        {"objid": ["a", "b"], "ra": [1.0, 2.0], "dec": [0.0, 0.1], "petro_r90_r": [2.0, 3.0]}
    ).to_parquet(parent)
    pd.DataFrame({"object_id": [1], "ra": [1.0], "dec": [0.0]}).to_parquet(tmp_path / "hsc.parquet")
    (tmp_path / "model.pt").write_bytes(b"")
    results = tmp_path / "out"
    config = {
        "survey": "hsc",
        "results": str(results),
        "model": str(tmp_path / "model.pt"),
        "galaxies": str(results / "crossmatch/hsc-galaxies.parquet"),
        "crossmatch": {"galaxies": str(parent), "hsc_objects": str(tmp_path / "hsc.parquet")},
    }
    (tmp_path / "hsc.yaml").write_text(yaml.safe_dump(config))
    # Before the cross-match has written the galaxy table, its target still runs.
    done = snakemake("-n", "-p", "crossmatch", "--configfile", str(tmp_path / "hsc.yaml"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"--processed '{results}/ledger.parquet'" in done.stdout  # the ledger this run's catalogue writes
    assert f"--history {results}/crossmatch/processed.parquet" in done.stdout
    config["crossmatch"].pop("galaxies")
    (tmp_path / "hsc.yaml").write_text(yaml.safe_dump(config))
    done = snakemake("-n", "crossmatch", "--configfile", str(tmp_path / "hsc.yaml"))
    assert done.returncode != 0 and "set 'crossmatch.galaxies'" in done.stderr + done.stdout


def _run_small_pipeline(tmp: Path) -> None:
    config = {
        "results": str(tmp / "results"),
        "shard_size": 15,
        "simulate": {"n_galaxies": 24, "seed": 5},
        "training": {"n_galaxies": 30, "epochs": 1, "seed": 3},
        "evaluate": {"inject_per_galaxy": 2},
    }
    (tmp / "small.yaml").write_text(yaml.safe_dump(config))
    done = snakemake("--configfile", str(tmp / "small.yaml"))
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    (tmp / "done").write_text("ok\n")


@pytest.fixture(scope="session")
def small_run(tmp_path_factory, request):
    """The default pipeline, shrunk: a real simulate -> train -> catalogue -> evaluation run.

    Made once per test session. pytest-xdist's loadgroup sent the tests that
    use it to both workers, which then ran the pipeline twice side by side
    (2 x 310-340 s of the suite), so under xdist the run lives in the
    session's shared base folder and a file lock lets the first worker make
    it and the other wait for it.
    """
    # Not xdist's worker_id fixture: it is missing under `-p no:xdist`.
    if not hasattr(request.config, "workerinput"):
        tmp = tmp_path_factory.mktemp("run")
        _run_small_pipeline(tmp)
        return tmp / "results"
    shared = tmp_path_factory.getbasetemp().parent  # this session's folder, above the workers'
    tmp = shared / "small-run"
    with FileLock(str(shared / "small-run.lock")):
        if not (tmp / "done").exists():
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            _run_small_pipeline(tmp)
    return tmp / "results"


@pytest.mark.slow
def test_default_pipeline_makes_the_release(small_run):
    results = small_run
    ledger = pq.read_table(results / "ledger.parquet").to_pandas()
    assert len(ledger) == 24 and ledger["objid"].is_unique
    assert set(ledger["status"]) <= {"ok", "no_clumps", "failed"}
    catalogue = pq.read_table(results / "catalogue.parquet")
    datamodel = yaml.safe_load((ROOT / "resources" / "catalogue_datamodel.yaml").read_text())
    names = [c["name"] for c in datamodel["columns"]]
    assert catalogue.schema.names == names
    assert (results / "catalogue.fits").exists() and (results / "metrics.json").exists()
    for line in (results / "release" / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        path = results / "release" / name.lstrip("*")
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert (results / "figures" / "completeness_purity.png").exists()
    # provenance records the configuration that ran, overrides included
    record = json.loads((results / "release" / "provenance.json").read_text())
    assert record["effective_config"]["simulate"]["n_galaxies"] == 24
    assert record["effective_config"]["training"]["epochs"] == 1
    # metrics per observing condition, measured on the cutouts, and the pulls
    # of the injected clumps' photometry
    metrics = json.loads((results / "metrics.json").read_text())
    assert sum(metrics["conditions"]["n_galaxies"]["sky_tier"].values()) == 24
    assert "unknown" not in metrics["conditions"]["n_galaxies"]["sky_tier"]
    assert set(metrics["conditions"]) >= {"model", "baseline"}
    assert set(metrics["photometry_pulls"]["bands"]) == {"u", "g", "r", "i", "z"}
    assert (results / "figures" / "conditions.png").exists()
    # PNGs only where they are read: every training galaxy, the survey galaxies
    # the gallery shows (the sample's first GALLERY_SIZE), none injected.
    assert (results / "figures" / "gallery.png").exists()
    survey = pd.concat(
        pd.read_parquet(p) for p in sorted((results / "survey" / "shards").glob("*/render.parquet"))
    )
    first = pd.concat(
        pd.read_parquet(p) for p in sorted((results / "survey" / "shards").glob("*/galaxies.parquet"))
    )["objid"].astype(str)[:GALLERY_SIZE]
    survey_pngs = {p.stem for p in (results / "survey" / "rgb").glob("*.png")}
    assert survey_pngs == set(survey.loc[survey["png"].notna(), "objid"]) == set(first) & set(survey["objid"])
    assert len(survey) > len(survey_pngs) and survey[["nx", "ny", "fwhm_r_px"]].notna().all().all()
    assert not list((results / "injected" / "rgb").glob("*.png"))
    training = pd.concat(
        pd.read_parquet(p) for p in (results / "training" / "shards").glob("*/render.parquet")
    )
    assert {p.stem for p in (results / "training" / "rgb").glob("*.png")} == set(training["objid"])


def test_render_png_follows_the_config(tmp_path):
    def png_options(*args):
        done = snakemake("-n", "-p", "--config", f"results={tmp_path / 'out'}", "shard_size=100", *args)
        assert done.returncode == 0, done.stderr[-2000:]
        found = re.findall(r"clumpcat render .*?--rgb-dir \S+/(\w+)/rgb (--png \S+)", done.stdout)
        return {(sample, option) for sample, option in found}

    # 240 survey galaxies in shards of 100: the gallery's 12 in shard 0, no PNGs in the others.
    assert png_options() == {
        ("training", "--png all"),
        ("survey", f"--png first:{GALLERY_SIZE}"),
        ("survey", "--png first:0"),
        ("injected", "--png none"),
    }
    (tmp_path / "all.yaml").write_text(yaml.safe_dump({"render": {"png": "all"}}))
    assert png_options("--configfile", str(tmp_path / "all.yaml")) == {
        ("training", "--png all"),
        ("survey", "--png all"),
        ("injected", "--png all"),
    }


@pytest.mark.slow
def test_own_cutouts_and_model_skip_simulation_and_training(small_run, tmp_path):
    galaxies = small_run / "survey" / "shards" / "00000" / "galaxies.parquet"
    done = snakemake(
        "--config",
        f"galaxies={galaxies}",
        f"cutouts={small_run / 'survey' / 'cutouts'}",
        f"model={small_run / 'models' / 'cpu-small' / 'model.pt'}",
        f"results={tmp_path / 'out'}",
        "survey=sdss",
        # The README's own-data command, run as `.venv/bin/snakemake` without an
        # activated venv: the rules must not need `clumpcat` on PATH.
        venv_on_path=False,
    )
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    assert "rule train" not in done.stdout and "rule simulate" not in done.stdout
    ledger = pq.read_table(tmp_path / "out" / "ledger.parquet").to_pandas()
    assert sorted(ledger["objid"]) == sorted(pd.read_parquet(galaxies)["objid"])
    assert (tmp_path / "out" / "catalogue.parquet").exists()


@pytest.mark.slow
def test_experiment_mode_compares_setups_over_sizes(small_run):
    config = yaml.safe_load((small_run.parent / "small.yaml").read_text())
    config["experiment"] = {"setups": ["cpu-small"], "sizes": [10, 20], "epochs": 1}
    (small_run.parent / "experiment.yaml").write_text(yaml.safe_dump(config))
    done = snakemake("experiment", "--configfile", str(small_run.parent / "experiment.yaml"))
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    table = pd.read_parquet(small_run / "experiment" / "experiment.parquet")
    assert table["n_images"].tolist() == [10, 20]
    assert table["test_f1"].notna().all() and table["test_f1"].between(0, 1).all()
    assert (small_run / "experiment" / "experiment.png").exists()
