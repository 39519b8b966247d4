"""Cutouts -> released catalogue through Snakemake itself: galaxies per second on ``--cores``.

``bench_end_to_end.py`` runs the stages one after another, so a job that is
importing torch on one core leaves the other idle. The workflow does not: on
``--cores 2`` two jobs run side by side (``detect.threads`` and
``shard_threads`` share the cores out among a sample's shards). This benchmark measures that form: it simulates ``--n``
unseen galaxies (``clumpcat simulate``, a seed the model was not trained on),
then runs ``snakemake --cores N`` on them with the user-data configuration of
the README (``galaxies=``, ``cutouts=``, ``model=``; ``--set`` adds more), up to the release
(``release/SHA256SUMS``; no truth, so no evaluation). Every job pays its own
start-up, the validate/split job and the render job (cutout checks, geometry
rows, gallery PNGs) included: this is the whole cutouts -> catalogue run.

Printed: the wall time of the Snakemake run and galaxies/s, and per rule the
jobs and the summed job seconds (from the rules' ``benchmark:`` files) with
galaxies per job-second. Those files' CPU time is left out: Snakemake samples
it every few seconds, and it read half of what ``/usr/bin/time`` measured for
the same detect job. ``--repeats`` reruns from nothing and
prints the median; a ``--work`` folder keeps the simulated survey for the
next call (the same seed is assumed).

    .venv/bin/python benchmarks/bench_workflow.py --n 1000 [--shard-size 250]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
#: The rules with a ``benchmark:`` file, in the workflow's order (others sort last).
RULES = ("render", "segment", "detect", "postprocess", "photometry", "catalogue")


def simulate(folder: Path, n: int, seed: int) -> None:
    """``n`` synthetic galaxies with their cutouts in ``folder`` (galaxies.parquet, cutouts/)."""
    cmd = [
        sys.executable,
        "-m",
        "clumpcat",
        "simulate",
        "--n",
        str(n),
        "--seed",
        str(seed),
        "--out",
        str(folder),
    ]
    subprocess.run(cmd, check=True)


def _same_survey(survey: Path, n: int) -> bool:
    """Whether ``--work`` already holds a simulated survey of ``n`` galaxies (reused: simulating is slow)."""
    table = survey / "galaxies.parquet"
    return table.exists() and len(pd.read_parquet(table, columns=["objid"])) == n


def run_workflow(
    survey: Path, model: Path, results: Path, cores: int, shard_size: int, extra: list[str]
) -> float:
    """Wall seconds of ``snakemake --cores`` from the galaxy table to the release."""
    snakemake = Path(sys.executable).with_name("snakemake")
    cmd = [
        str(snakemake),
        "--cores", str(cores),
        "--snakefile", str(ROOT / "Snakefile"),
        "--directory", str(ROOT),
        "--quiet", "rules",
        "--config",
        f"galaxies={survey / 'galaxies.parquet'}",
        f"cutouts={survey / 'cutouts'}",
        f"model={model}",
        f"results={results}",
        f"shard_size={shard_size}",
        "survey=synthetic",
        *extra,
        "--",
        str(results / "release" / "SHA256SUMS"),
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(cmd, env=os.environ.copy(), capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"snakemake failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return wall


def job_seconds(results: Path) -> dict[str, dict[str, float]]:
    """Per rule: jobs and the summed wall seconds of its jobs (Snakemake's benchmark files)."""
    out: dict[str, dict[str, float]] = defaultdict(lambda: {"jobs": 0, "s": 0.0})
    for tsv in (results / "benchmarks").rglob("*.tsv"):
        rule = tsv.parent.name if tsv.parent.name != "benchmarks" else tsv.stem
        row = pd.read_csv(tsv, sep="\t").iloc[-1]
        out[rule]["jobs"] += 1
        out[rule]["s"] += float(row["s"])
    return dict(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="unseen galaxies")
    parser.add_argument(
        "--shard-size",
        type=int,
        default=500,
        help="the workflow's shard_size (default: the default config's)",
    )
    parser.add_argument("--cores", type=int, default=2, help="snakemake --cores")
    parser.add_argument("--seed", type=int, default=20260101, help="seed of the unseen survey")
    parser.add_argument(
        "--model",
        type=Path,
        default=ROOT / "results/models/cpu-small/model.pt",
        help="trained detector (default: the default run's model)",
    )
    parser.add_argument("--repeats", type=int, default=1, help="runs from nothing; the table shows medians")
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="more --config overrides, e.g. shard_threads=1",
    )
    args = parser.parse_args()
    if not args.model.exists():
        parser.error(f"--model {args.model} does not exist: run `make run` first or name a model.pt")

    with tempfile.TemporaryDirectory(prefix="bench-workflow-") as tmp:
        root = args.work or Path(tmp)
        survey = root / "survey"
        if not _same_survey(survey, args.n):
            simulate(survey, args.n, args.seed)
        walls, per_rule = [], []
        for r in range(args.repeats):
            results = root / f"run-{r}"
            shutil.rmtree(results, ignore_errors=True)  # from nothing: a kept folder would be up to date
            walls.append(
                run_workflow(survey, args.model.resolve(), results, args.cores, args.shard_size, args.set)
            )
            per_rule.append(job_seconds(results))
            print(f"run {r + 1}: {walls[-1]:.1f} s, {args.n / walls[-1]:.2f} galaxies/s", flush=True)
            n_rows = len(pd.read_parquet(results / "catalogue.parquet"))

    wall = statistics.median(walls)
    n_shards = -(-args.n // args.shard_size)
    print(
        f"\n{args.n} unseen galaxies, {n_shards} shard(s) of {args.shard_size}, snakemake --cores {args.cores}, "
        f"median of {args.repeats} run(s) (shared machine: timings are noisy)"
        + (f", {' '.join(args.set)}" if args.set else "")
    )
    print(f"{'rule':16} {'jobs':>5} {'job s':>8} {'galaxies/job-s':>15}")
    for rule in sorted({k for run in per_rule for k in run}, key=lambda k: (RULES + (k,)).index(k)):
        rows = [run[rule] for run in per_rule if rule in run]
        jobs = int(statistics.median(row["jobs"] for row in rows))
        secs = statistics.median(row["s"] for row in rows)
        print(f"{rule:16} {jobs:>5} {secs:>8.1f} {args.n / secs:>15.1f}")
    print(f"{'TOTAL (wall)':16} {'':>5} {wall:>8.1f} {args.n / wall:>15.2f}   ({n_rows} catalogue rows)")


if __name__ == "__main__":
    main()
