"""CPU end to end, cutouts -> catalogue: galaxies per second per stage and in total.

Simulates ``--n`` unseen galaxies (``clumpcat simulate``, a seed the model was
not trained on), splits them into shards of ``--shard-size`` and runs the
stages of the workflow on each shard in this process, through the same
``clumpcat <stage>`` command lines the rules run: [render], segment, detect,
postprocess, photometry, then catalogue over all shards. Prints a table of
seconds and galaxies/s per stage and in total (the median of ``--repeats``
runs: the machine may be shared), the CPU seconds (user + system, worker
processes included: steadier than the wall time on a shared machine), and
the peak RSS.

Two detection paths (``--path``):

* ``cutouts``: detect reads the cutouts and renders on the way (no PNG);
* ``png``: render writes PNGs, detect decodes them (the path before issue 13).

With ``--processes`` each stage runs as its own ``python -m clumpcat``
process, as a workflow job does: the figures then include each job's
start-up (interpreter, imports of torch, astropy and photutils; several
seconds a job on a slow core), which a shard's galaxies share.

With ``--profile DIR`` each stage of the last repeat is run under cProfile,
the profiles are written to ``DIR/{path}-{stage}.prof`` and the top
functions by own time are printed.

The model: ``--model model.pt``, or a tiny ``cpu-small`` detector trained here
on a separate simulated survey (a few galaxies, one epoch; its quality does
not matter for speed, and the score floor keeps every candidate).

    OMP_NUM_THREADS=2 python benchmarks/bench_end_to_end.py --n 100 --path both --repeats 3
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from clumpcat.cli import main as clumpcat
from clumpcat.ledger import write_status

STAGES = ("render", "segment", "detect", "postprocess", "photometry", "catalogue")


def train_tiny_model(root: Path) -> Path:
    """A cpu-small detector trained for one epoch on 16 simulated galaxies."""
    from clumpcat.detection.training import train_detector
    from clumpcat.render.labels import truth_boxes
    from clumpcat.render.rgb import geometries, render_shard
    from clumpcat.survey.simulate.survey import simulate_survey

    galaxies, truth = simulate_survey(seed=99, first=0, count=16, cutout_dir=root / "cutouts")
    table, _ = render_shard(galaxies["objid"].tolist(), root / "cutouts", root / "rgb", "synthetic")
    table.to_parquet(root / "render.parquet")
    truth_boxes(truth, geometries(table), detectable_only=True).to_parquet(root / "labels.parquet")
    train_detector(
        [root / "render.parquet"],
        [root / "labels.parquet"],
        root / "model",
        setup="cpu-small",
        epochs=1,
        batch_size=4,
        seed=0,
        device="cpu",
    )
    return root / "model" / "model.pt"


def make_survey(root: Path, n: int, shard_size: int, seed: int) -> list[Path]:
    """Simulate ``n`` galaxies; one folder per shard with its galaxy and status tables."""
    run(["simulate", "--n", str(n), "--seed", str(seed), "--out", str(root)])
    galaxies = pd.read_parquet(root / "galaxies.parquet")
    shards = []
    for i, start in enumerate(range(0, n, shard_size)):
        shard = root / "shards" / f"{i:04d}"
        shard.mkdir(parents=True)
        part = galaxies.iloc[start : start + shard_size]
        part.to_parquet(shard / "galaxies.parquet")
        write_status(shard / "status-source.parquet", part["objid"].astype(str).tolist(), [])
        shards.append(shard)
    return shards


def run(argv: list[str], processes: bool = False) -> None:
    """One ``clumpcat`` command, in this process or (``processes``) as its own, as a workflow job."""
    if processes:
        code = subprocess.run([sys.executable, "-m", "clumpcat", *argv], env=os.environ.copy()).returncode
    else:
        code = clumpcat(argv)
    if code:
        raise SystemExit(f"clumpcat {' '.join(argv)} exited with {code}")


def stage_commands(shard: Path, cutouts: Path, model: Path, path: str, cores: int) -> dict[str, list[str]]:
    """The rules' command lines for one shard (workflow/rules/*.smk, default config) on ``cores`` cores."""
    s = str(shard)
    source = f"{s}/status-source.parquet"
    upstream = f"{s}/status-render.parquet" if path == "png" else source
    commands = {
        "segment": ["segment", "--galaxies", f"{s}/galaxies.parquet", "--cutouts", str(cutouts),
                    "--status-in", upstream, "--out", f"{s}/segments.npz", "--host-nsigma", "0.25",
                    "--workers", str(cores)],
        "detect": ["detect", "--model", str(model), "--cutouts", str(cutouts), "--survey", "synthetic",
                   "--status-in", upstream, "--status-out", f"{s}/status-detect.parquet",
                   "--out", f"{s}/detections.parquet", "--threads", str(cores)]
        + (["--render", f"{s}/render.parquet"] if path == "png" else ["--galaxies", f"{s}/galaxies.parquet"]),
        "postprocess": ["postprocess", "--galaxies", f"{s}/galaxies.parquet",
                        "--detections", f"{s}/detections.parquet", "--cutouts", str(cutouts),
                        "--status-in", f"{s}/status-detect.parquet",
                        "--status-out", f"{s}/status-postprocess.parquet", "--out", f"{s}/clumps.parquet",
                        "--score-floor", "0.05", "--segments", f"{s}/segments.npz"],
        "photometry": ["photometry", "--galaxies", f"{s}/galaxies.parquet", "--clumps", f"{s}/clumps.parquet",
                       "--cutouts", str(cutouts), "--status-in", f"{s}/status-postprocess.parquet",
                       "--segments", f"{s}/segments.npz", "--status-out", f"{s}/status-photometry.parquet",
                       "--out", f"{s}/photometry.parquet", "--bands", "u", "g", "r", "i", "z",
                       "--aperture-correction", "moffat", "--background", "auto", "--ebv-source", "table",
                       "--workers", str(cores)],
    }  # fmt: skip
    if path == "png":
        commands["render"] = ["render", "--galaxies", f"{s}/galaxies.parquet", "--cutouts", str(cutouts),
                              "--rgb-dir", f"{s}/rgb", "--survey", "synthetic", "--status-in", source,
                              "--status-out", f"{s}/status-render.parquet", "--out", f"{s}/render.parquet"]  # fmt: skip
    return commands


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and its finished children."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def timed(argv: list[str], profile: cProfile.Profile | None, processes: bool) -> tuple[float, float]:
    """Wall and CPU seconds of one stage command."""
    start, cpu = time.perf_counter(), cpu_seconds()
    if profile is None:
        run(argv, processes)
    else:
        profile.runcall(run, argv, processes)
    return time.perf_counter() - start, cpu_seconds() - cpu


def one_run(
    root: Path, shards, model: Path, path: str, profile_dir: Path | None, cores: int, processes: bool
) -> dict[str, float]:
    """Wall seconds per stage for every shard, stages in the workflow's order; CPU seconds under ``stage:cpu``."""
    seconds = dict.fromkeys([*STAGES, *(f"{s}:cpu" for s in STAGES)], 0.0)
    profiles = {stage: cProfile.Profile() for stage in STAGES} if profile_dir else {}
    for shard in shards:
        commands = stage_commands(shard, root / "cutouts", model, path, cores)
        for stage in STAGES[:-1]:
            if stage in commands:
                wall, cpu = timed(commands[stage], profiles.get(stage), processes)
                seconds[stage] += wall
                seconds[f"{stage}:cpu"] += cpu
    out = root / f"release-{path}"
    seconds["catalogue"], seconds["catalogue:cpu"] = timed(
        ["catalogue", "--shards", *map(str, shards), "--out-dir", str(out),
         "--galaxies", str(root / "galaxies.parquet"), "--score-threshold", "0.3", "--release"],
        profiles.get("catalogue"), processes,
    )  # fmt: skip
    for stage, prof in profiles.items():
        if seconds[stage]:
            prof.dump_stats(profile_dir / f"{path}-{stage}.prof")
    return seconds


def print_profiles(profile_dir: Path, path: str, top: int) -> None:
    for stage in STAGES:
        file = profile_dir / f"{path}-{stage}.prof"
        if not file.exists():
            continue
        text = io.StringIO()
        pstats.Stats(str(file), stream=text).sort_stats("tottime").print_stats(top)
        lines = [ln for ln in text.getvalue().splitlines() if ln.strip()]
        start = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls"))
        print(f"\n-- {path} {stage}: top {top} by own time")
        print("\n".join(lines[start : start + top + 1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="unseen galaxies")
    parser.add_argument("--shard-size", type=int, default=100)
    parser.add_argument("--seed", type=int, default=20260101, help="seed of the unseen survey")
    parser.add_argument("--model", help="trained detector (default: train a tiny cpu-small one here)")
    parser.add_argument("--path", choices=("cutouts", "png", "both"), default="both")
    parser.add_argument("--repeats", type=int, default=3, help="runs per path; the table shows medians")
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="cores of each job: torch threads of detect, processes of segment and photometry",
    )
    parser.add_argument(
        "--processes",
        action="store_true",
        help="run each stage as its own process, as a workflow job (start-up and imports included)",
    )
    parser.add_argument("--profile", type=Path, help="folder for cProfile output of each stage (last run)")
    parser.add_argument("--top", type=int, default=12, help="functions shown per profile")
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    args = parser.parse_args()
    if args.processes and args.profile:
        parser.error("--profile measures stages in this process; leave out --processes")
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        root = args.work or Path(tmp)
        model = Path(args.model) if args.model else train_tiny_model(root / "train")
        survey = root / "survey"
        shards = make_survey(survey, args.n, args.shard_size, args.seed)
        paths = ("png", "cutouts") if args.path == "both" else (args.path,)
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
        results = {}
        for path in paths:
            runs = []
            for r in range(args.repeats):
                last = r == args.repeats - 1
                runs.append(
                    one_run(
                        survey,
                        shards,
                        model,
                        path,
                        args.profile if last else None,
                        args.threads,
                        args.processes,
                    )
                )
            results[path] = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
            rows = pd.read_parquet(survey / f"release-{path}" / "clumps.parquet")
            results[path]["_rows"] = len(rows)

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    jobs = (
        "one process per stage and shard, start-up included" if args.processes else "stages in this process"
    )
    print(f"\n{args.n} unseen galaxies, {len(shards)} shard(s), torch threads {args.threads}, {jobs}, "
          f"median of {args.repeats} run(s) (shared machine: timings are noisy)")  # fmt: skip
    print(f"{'path':8} {'stage':12} {'seconds':>8} {'galaxies/s':>11} {'CPU s':>7}")
    for path, res in results.items():
        total = sum(res[s] for s in STAGES)
        for stage in STAGES:
            if res[stage]:
                cpu = res[f"{stage}:cpu"]
                print(f"{path:8} {stage:12} {res[stage]:>8.2f} {args.n / res[stage]:>11.1f} {cpu:>7.2f}")
        cpu = sum(res[f"{s}:cpu"] for s in STAGES)
        print(
            f"{path:8} {'TOTAL':12} {total:>8.2f} {args.n / total:>11.2f} {cpu:>7.2f}   ({res['_rows']} clumps)"
        )
    print(f"peak RSS {peak:.0f} MiB (the whole benchmark process, training included)")
    if args.processes:
        child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"peak RSS of a stage process {child:.0f} MiB")
    if args.profile:
        for path in results:
            print_profiles(args.profile, path, args.top)


if __name__ == "__main__":
    main()
