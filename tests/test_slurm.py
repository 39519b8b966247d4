"""The Slurm profile: the GPU rules ask for GPUs the way the executor plugin
reads them, and, on a real cluster, the same small survey run locally and
through ``snakemake --profile profiles/slurm`` gives the same catalogue.

The cluster test is marked ``slurm``: it runs only where ``sbatch`` exists and a cluster answers
``sinfo`` (``make test-slurm`` starts a single-node one, see docs/slurm.md);
elsewhere it is skipped with the reason. It takes a few minutes: every job is a
Slurm job whose status is polled. ``CLUMPCAT_REQUIRE_SLURM=1`` (set by ``make
test-slurm``) turns the skip into a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def cluster_problem() -> str | None:
    """Why no Slurm job can run here, or None when a cluster answers."""
    if shutil.which("sbatch") is None:
        return "no Slurm here: sbatch not found (`make test-slurm` installs a single-node cluster)"
    try:
        done = subprocess.run(
            ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"Slurm does not answer: sinfo failed ({err})"
    if done.returncode != 0:
        return f"Slurm does not answer: sinfo exited {done.returncode}: {done.stderr.strip()[:200]}"
    states = done.stdout.split()
    if not any(s.rstrip("*~#") in {"idle", "mixed", "allocated", "completing"} for s in states):
        return f"no Slurm node can take jobs (sinfo node states: {' '.join(states) or 'none'})"
    return None


PROBLEM = cluster_problem()


@pytest.fixture
def cluster():
    """Skip without a cluster; fail instead under ``make test-slurm``, which has just started one."""
    if PROBLEM is not None:
        if os.environ.get("CLUMPCAT_REQUIRE_SLURM"):
            pytest.fail(PROBLEM)
        pytest.skip(PROBLEM)


#: A survey of 8 galaxies in 2 shards and a model trained for 1 epoch on 10:
#: every per-shard rule runs twice and the fan-in rules once. No GPU is asked
#: for (the CI partition has none): ``training.gpus: 0`` and ``detect.device:
#: cpu`` make the train and detect rules request ``gpu=0``, which the plugin
#: turns into no ``--gpus`` option at all.
SMALL = {
    "shard_size": 4,
    "simulate": {"n_galaxies": 8, "seed": 5},
    "training": {"n_galaxies": 10, "epochs": 1, "seed": 3, "gpus": 0, "device": "cpu"},
    "detect": {"device": "cpu", "threads": 1},
    "evaluate": {"enabled": False},
    # A one-epoch model scores its clumps far below the default 0.3: catalogue
    # everything above detect.score_floor so that there are rows to compare.
    "catalogue": {"score_threshold": 0.05},
}


def snakemake(*args: str) -> subprocess.CompletedProcess:
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and Path(p) != BIN]
    # Slurm jobs inherit this environment (sbatch --export=ALL): the venv's
    # `clumpcat` must come first on their PATH too.
    env = {**os.environ, "PATH": os.pathsep.join([str(BIN), *path]), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [str(BIN / "snakemake"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )


def run(tmp: Path, name: str, *args: str) -> tuple[Path, subprocess.CompletedProcess]:
    results = tmp / name
    (tmp / f"{name}.yaml").write_text(yaml.safe_dump({**SMALL, "results": str(results)}))
    # Training threads follow --cores locally; one thread in both runs keeps
    # the trained weights, and so the catalogue, bit-for-bit comparable.
    done = snakemake("--configfile", str(tmp / f"{name}.yaml"), "--set-threads", "train=1", *args)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-5000:])
    return results, done


def catalogue(results: Path) -> pd.DataFrame:
    table = pq.read_table(results / "release" / "catalogue.parquet").to_pandas()
    return table.sort_values(list(table.columns)).reset_index(drop=True)


@pytest.mark.xdist_group("workflow")
def test_gpu_rules_ask_for_gpus_as_the_plugin_expects(tmp_path):
    """train and detect carry the plugin's ``gpu`` resource; 0 means no request."""
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    config = {**SMALL, "results": str(tmp_path / "out")}
    config["training"] = {k: v for k, v in SMALL["training"].items() if k not in ("gpus", "device")}
    config["detect"] = {"threads": 1}  # device auto: a GPU where there is one
    (tmp_path / "gpu.yaml").write_text(yaml.safe_dump(config))
    done = snakemake("-n", "--configfile", str(tmp_path / "gpu.yaml"))
    assert done.returncode == 0, done.stderr[-2000:]
    asked = {}
    for block in re.split(r"\n(?=rule \w+:)", done.stdout):
        rule = re.match(r"rule (\w+):", block)
        line = re.search(r"^\s*resources: (.*)$", block, re.M)
        if rule and line:
            asked[rule[1]] = dict(kv.split("=", 1) for kv in line[1].split(", "))
    assert asked["train"]["gpu"] == "1" and asked["detect"]["gpu"] == "1"
    assert "gpu" not in asked["render"] and "gpu" not in asked["photometry"]

    class Resources(dict):
        __getattr__ = dict.__getitem__

    def sbatch_gpu_options(**resources):
        return set_gres_string(type("Job", (), {"resources": Resources(resources)})()).strip()

    # What the plugin adds to sbatch for these values, and for the CPU-only
    # fallback (gpu 0: no option at all, so a partition without GPUs takes the job).
    assert sbatch_gpu_options(gpu=int(asked["train"]["gpu"])) == "--gpus=1"
    assert sbatch_gpu_options(gpu=1, gpu_model="a100") == "--gpus=a100:1"
    assert sbatch_gpu_options(gres="gpu:2") == "--gres=gpu:2"
    assert sbatch_gpu_options(gpu=0) == ""


@pytest.mark.slurm
@pytest.mark.xdist_group("slurm")
def test_slurm_profile_makes_the_local_catalogue(tmp_path, cluster):
    local, _ = run(tmp_path, "local", "--cores", "2")
    slurm, done = run(
        tmp_path,
        "slurm",
        "--profile",
        "profiles/slurm",
        "--slurm-logdir",
        str(tmp_path / "slurm-logs"),
        # This cluster has no accounting database: no account to look up, and
        # job states come from squeue (MinJobAge keeps finished jobs there).
        "--slurm-no-account",
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--seconds-between-status-checks",
        "5",
        # One CPU a job (the CI machine has two) and a memory request the one
        # node can grant; the rules' own mem_mb still apply where they set it.
        "--default-resources",
        "cpus_per_task=1",
        "mem_mb=2000",
        "runtime=30",
    )
    log = done.stdout + done.stderr
    # Every job but the local `all` went through sbatch.
    submitted = re.findall(r"submitted with SLURM jobid (\d+)", log, re.IGNORECASE)
    counts = {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", log[log.index("Job stats:") :], re.M)}
    assert len(set(submitted)) == counts["total"] - counts.get("all", 0) > 10
    expected, got = catalogue(local), catalogue(slurm)
    assert len(expected) > 0
    pd.testing.assert_frame_equal(got, expected)
    assert pq.read_table(slurm / "ledger.parquet").num_rows == SMALL["simulate"]["n_galaxies"]
