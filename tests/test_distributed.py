"""Multi-process training (DDP through torchrun) and the choice of device."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pandas as pd
import pytest
import torch
import yaml

from clumpcat.detection.checkpoint import load_detector
from clumpcat.detection.distributed import _pick_device
from clumpcat.errors import InputError
from clumpcat.manifests import write_manifest
from clumpcat.render.labels import truth_boxes
from clumpcat.render.rgb import geometries, render_shard
from clumpcat.survey.simulate.survey import simulate_survey
from tests.test_workflow import snakemake
from tests.test_workflow_scale import shell_commands

pytestmark = pytest.mark.xdist_group("torch")

NO_CUDA = not torch.cuda.is_available()


def test_unknown_device_is_the_packages_error():
    with pytest.raises(InputError, match="'auto', 'cpu' or 'cuda', got 'tpu'"):
        _pick_device("tpu", 0)


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
def test_cuda_without_cuda_says_what_to_do():
    with pytest.raises(InputError, match="no CUDA device.*use --device cpu or auto"):
        _pick_device("cuda", 0)
    assert _pick_device("auto", 0) == torch.device("cpu")


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
def test_cli_cuda_without_cuda_is_one_line(tmp_path):
    # Stops at the device, before reading any table.
    (tmp_path / "render.parquet").write_bytes(b"")
    done = subprocess.run(
        [sys.executable, "-m", "clumpcat", "train", "--render", str(tmp_path / "render.parquet")]
        + [
            "--labels",
            str(tmp_path / "render.parquet"),
            "--out-dir",
            str(tmp_path / "out"),
            "--device",
            "cuda",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "--device cuda" in lines[0] and "use --device cpu or auto" in lines[0]


def test_cli_unknown_device_is_a_usage_error(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "clumpcat",
            "train",
            "--render",
            "r",
            "--labels",
            "l",
            "--out-dir",
            str(tmp_path),
        ]
        + ["--device", "tpu"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "tpu" in done.stderr.splitlines()[-1]


@pytest.mark.slow
def test_two_gloo_processes_train_one_model(tmp_path):
    """torchrun with two Gloo processes on the CPU: both join, rank 0 alone writes."""
    galaxies, truth = simulate_survey(seed=4, first=0, count=12, cutout_dir=tmp_path / "cutouts")
    table, failures = render_shard(
        galaxies["objid"].tolist(), tmp_path / "cutouts", tmp_path / "rgb", "synthetic"
    )
    assert not failures
    # Two shards, handed over in manifests as the workflow does.
    for k, half in enumerate((table.iloc[:6], table.iloc[6:])):
        half.to_parquet(tmp_path / f"render-{k}.parquet")
        truth_boxes(truth, geometries(half), detectable_only=True).to_parquet(
            tmp_path / f"labels-{k}.parquet"
        )
    write_manifest(tmp_path / "render.txt", [tmp_path / f"render-{k}.parquet" for k in (0, 1)])
    write_manifest(tmp_path / "labels.txt", [tmp_path / f"labels-{k}.parquet" for k in (0, 1)])
    out = tmp_path / "model"
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
        + ["-m", "clumpcat", "train", "--render", f"@{tmp_path / 'render.txt'}"]
        + ["--labels", f"@{tmp_path / 'labels.txt'}", "--out-dir", str(out)]
        + ["--epochs", "1", "--batch-size", "2", "--device", "cpu", "--threads", "1"],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    joined = sorted(re.findall(r"process (\d) of (\d) on cpu \(gloo\)", done.stderr))
    assert joined == [("0", "2"), ("1", "2")], done.stderr[-3000:]
    # Rank 0 alone validates and writes: one epoch row, one model, no stray temporaries.
    assert pd.read_csv(out / "metrics.csv")["epoch"].tolist() == [0]
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".pt") == ["checkpoint.pt", "model.pt"]
    model, meta = load_detector(out / "model.pt", device=torch.device("cpu"))
    assert meta["epoch"] == 0
    state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    # DDP keeps the replicas equal; what rank 0 saved is the plain model (no 'module.' prefix).
    assert not any(key.startswith("module.") for key in state["model"])
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())


def test_workflow_trains_with_torchrun_when_gpus_above_one(tmp_path):
    config = {"results": str(tmp_path / "results"), "training": {"gpus": 2}, "experiment": {"sizes": [50]}}
    (tmp_path / "gpus.yaml").write_text(yaml.safe_dump(config))
    done = snakemake("-n", "-p", "--configfile", str(tmp_path / "gpus.yaml"), "--", "all", "experiment")
    assert done.returncode == 0, done.stderr[-3000:]
    commands = shell_commands(done.stdout)
    for rule in ("train", "train_experiment"):
        (command,) = commands[rule]
        assert "-m torch.distributed.run --standalone --nproc_per_node=2 -m clumpcat train" in command, (
            command
        )
