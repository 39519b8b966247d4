"""Multi-process training (DDP through torchrun) and the choice of device."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pandas as pd
import pytest
import torch
import yaml

from clumpcat.detection.checkpoint import load_detector
from clumpcat.detection.distributed import _child_error, _pick_device, cpu_process_count
from clumpcat.errors import ClumpcatError, InputError, NetworkError
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


def _two_shard_training_set(tmp_path, count: int = 12) -> tuple[str, str]:
    """A small rendered training set in two shards, as manifests the way the workflow passes them."""
    galaxies, truth = simulate_survey(seed=4, first=0, count=count, cutout_dir=tmp_path / "cutouts")
    table, failures = render_shard(
        galaxies["objid"].tolist(), tmp_path / "cutouts", tmp_path / "rgb", "synthetic"
    )
    assert not failures
    half = count // 2
    for k, part in enumerate((table.iloc[:half], table.iloc[half:])):
        part.to_parquet(tmp_path / f"render-{k}.parquet")
        truth_boxes(truth, geometries(part), detectable_only=True).to_parquet(
            tmp_path / f"labels-{k}.parquet"
        )
    write_manifest(tmp_path / "render.txt", [tmp_path / f"render-{k}.parquet" for k in (0, 1)])
    write_manifest(tmp_path / "labels.txt", [tmp_path / f"labels-{k}.parquet" for k in (0, 1)])
    return f"@{tmp_path / 'render.txt'}", f"@{tmp_path / 'labels.txt'}"


def _check_one_model_from_rank_0(out) -> None:
    """Rank 0 alone validates and writes: one epoch row, one model, no stray temporaries."""
    assert pd.read_csv(out / "metrics.csv")["epoch"].tolist() == [0]
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".pt") == ["checkpoint.pt", "model.pt"]
    model, meta = load_detector(out / "model.pt", device=torch.device("cpu"))
    assert meta["epoch"] == 0
    state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    # DDP keeps the replicas equal; what rank 0 saved is the plain model (no 'module.' prefix).
    assert not any(key.startswith("module.") for key in state["model"])
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())


@pytest.mark.slow
def test_two_gloo_processes_train_one_model(tmp_path):
    """torchrun with two Gloo processes on the CPU: both join, rank 0 alone writes."""
    render, labels = _two_shard_training_set(tmp_path)
    out = tmp_path / "model"
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
        + ["-m", "clumpcat", "train", "--render", render, "--labels", labels, "--out-dir", str(out)]
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
    _check_one_model_from_rank_0(out)


@pytest.mark.parametrize(
    ("batch", "threads", "requested", "expected"),
    [
        (4, 2, None, 2),
        (4, 1, None, 1),
        (4, 16, None, 2),
        (8, 8, None, 4),
        (6, 8, None, 3),
        (3, 4, None, 1),
        (4, 2, 1, 1),
        (4, 1, 4, 4),
    ],
)
def test_cpu_process_count(batch, threads, requested, expected):
    """At least 2 images and one thread per process, an even share of the batch; a request is kept."""
    assert cpu_process_count(batch, threads, requested) == expected


def test_cpu_process_count_must_divide_the_batch():
    with pytest.raises(
        InputError, match=r"cpu_processes=3 must be a positive divisor of training.batch_size=4"
    ):
        cpu_process_count(4, 2, 3)


@pytest.mark.slow
def test_cpu_training_spawns_its_own_processes(tmp_path):
    """On a CPU, `clumpcat train --threads 2` trains as two single-threaded DDP processes.

    The batch of 4 is split 2 + 2; the log says so once (rank 0), both join,
    and the model is written once, as under torchrun.
    """
    render, labels = _two_shard_training_set(tmp_path)
    out = tmp_path / "model"
    log_file = tmp_path / "train.log"
    done = subprocess.run(
        [sys.executable, "-m", "clumpcat", "train", "--render", render, "--labels", labels]
        + ["--out-dir", str(out), "--epochs", "1", "--batch-size", "4", "--device", "cpu"]
        + ["--threads", "2", "--log", str(log_file)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    logged = log_file.read_text()
    assert logged.count("training as 2 data-parallel CPU processes of 2 images and 1 thread(s) each") == 1
    # Rank 1 logs warnings only, so only rank 0's joining is in the log.
    assert "process 0 of 2 on cpu (gloo)" in logged and "epoch 0:" in logged, logged[-2000:]
    _check_one_model_from_rank_0(out)
    # Every validation crop was scored, half of them by each process.
    split = json.loads((out / "split.json").read_text())
    row = pd.read_csv(out / "metrics.csv").iloc[0]
    assert row["val_ap"] >= 0 and len(split["val"]) >= 2


@pytest.mark.parametrize(
    ("last_line", "kind", "message"),
    [
        ("clumpcat.errors.InputError: unknown detector config keys ['x']", InputError, "unknown detector"),
        ("clumpcat.errors.NetworkError: 127.0.0.1 refused", NetworkError, "127.0.0.1 refused"),
        ("RuntimeError: Gloo connectFullMesh failed", ClumpcatError, "Gloo connectFullMesh failed"),
        ("elsewhere.InputError: not ours", ClumpcatError, "not ours"),
        ("Killed", ClumpcatError, "Killed"),
    ],
)
def test_child_error_keeps_clumpcat_error_classes(last_line, kind, message):
    """A spawned process's InputError is an InputError to the caller, with its message."""
    text = f"\n\n-- Process 1 terminated with the following error:\nTraceback (most recent call last):\n  ...\n{last_line}\n"
    error = _child_error(text)
    assert type(error) is kind
    assert str(error).startswith("training process failed: ") and message in str(error)


def test_cpu_process_failure_is_one_line(tmp_path):
    """A process's own error reaches the user as one line, not a traceback of the spawner."""
    render, labels = _two_shard_training_set(tmp_path, count=6)
    for k in (0, 1):  # tables without the PSF FWHM column fail in the processes, after the spawn
        table = pd.read_parquet(tmp_path / f"render-{k}.parquet")
        table.drop(columns="fwhm_r_render_px").to_parquet(tmp_path / f"render-{k}.parquet")
    done = subprocess.run(
        [sys.executable, "-m", "clumpcat", "train", "--render", render, "--labels", labels]
        + ["--out-dir", str(tmp_path / "model"), "--batch-size", "4", "--device", "cpu"]
        + ["--threads", "2", "--cpu-processes", "2"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert "training process failed: render tables lack fwhm_r_render_px" in last, done.stderr[-3000:]


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
