"""Completeness and purity of a trained detector per sky-noise tier and PSF family (issue 10).

For each tier (sky noise in units of nominal SDSS r-band noise) and each PSF
family, makes a fresh synthetic survey of ``--n`` galaxies with the simulator,
runs the pipeline's own commands on it (render, detect, postprocess, the
classical baseline; the detect and postprocess settings at their config
defaults, ``postprocess.min_snr`` included) and ``clumpcat evaluate`` at the
catalogue's score threshold, then prints one table: per tier, family and
detector the measured sky tier of the survey's cutouts, the detectable true
clumps, completeness (all detectable clumps and those with u-band flux ratio
>= 3%) and purity, with one-sigma binomial intervals. No tier gets its own
threshold.

The simulator's ``simulate_survey(..., conditions=, sky_noise_scale=,
psf_family=)`` draws the survey at the asked tier and family; what is not
fixed is drawn per galaxy as ``--conditions`` says (``nominal``, the default:
seeing 1.0-1.8" and a Moffat of beta 4.765 unless ``--families`` names
another family, so a tier changes only the noise). The seed is the same for
every survey: the same galaxies, observed differently.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_conditions.py --model results/models/cpu-small/model.pt \\
        --n 40 [--tiers 0.6 1 1.6 2.2] [--families moffat gaussian double_gaussian] \\
        [--conditions nominal] [--seed 2027] [--keep DIR] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from clumpcat.constants import SCORE_THRESHOLD
from clumpcat.matching import binomial_interval
from clumpcat.settings import DetectSettings, PostprocessSettings
from clumpcat.survey.simulate import survey as simulator
from clumpcat.tables import read_table, write_table


def simulate(seed: int, n: int, out: Path, tier: float, family: str | None, conditions: str):
    """Write ``out/cutouts``, ``out/galaxies.parquet`` and ``out/truth.parquet``."""
    galaxies, truth = simulator.simulate_survey(
        seed, 0, n, out / "cutouts", conditions=conditions, sky_noise_scale=tier, psf_family=family
    )
    write_table(galaxies, out / "galaxies.parquet")
    write_table(truth, out / "truth.parquet")


def _clumpcat(args: list[str], log: Path) -> None:
    with open(log, "a") as handle:
        done = subprocess.run([sys.executable, "-m", "clumpcat", *map(str, args)], stderr=handle, check=False)
    if done.returncode != 0:
        raise SystemExit(f"clumpcat {args[0]} failed (exit {done.returncode}); see {log}")


def run_pipeline(out: Path, model: str, threshold: float, threads: int) -> dict:
    """Render, detect, postprocess, baseline and evaluate one survey; return metrics.json."""
    log = out / "pipeline.log"
    gal, cut = out / "galaxies.parquet", out / "cutouts"
    _clumpcat(
        [
            "render",
            "--galaxies",
            gal,
            "--cutouts",
            cut,
            "--rgb-dir",
            out / "rgb",
            "--survey",
            "synthetic",
            "--status-out",
            out / "status-render.parquet",
            "--out",
            out / "render.parquet",
        ],
        log,
    )
    detect = DetectSettings.cli_args({"threads": threads}).split()
    _clumpcat(
        [
            "detect",
            "--model",
            model,
            "--render",
            out / "render.parquet",
            "--cutouts",
            cut,
            "--status-in",
            out / "status-render.parquet",
            "--status-out",
            out / "status-detect.parquet",
            "--out",
            out / "detections.parquet",
            *detect,
        ],
        log,
    )
    _clumpcat(
        [
            "postprocess",
            "--galaxies",
            gal,
            "--detections",
            out / "detections.parquet",
            "--cutouts",
            cut,
            "--status-in",
            out / "status-detect.parquet",
            "--status-out",
            out / "status-post.parquet",
            "--out",
            out / "clumps.parquet",
            *PostprocessSettings.cli_args(None).split(),
        ],
        log,
    )
    _clumpcat(
        [
            "baseline",
            "--galaxies",
            gal,
            "--cutouts",
            cut,
            "--status-in",
            out / "status-render.parquet",
            "--out",
            out / "baseline.parquet",
            "--status-out",
            out / "status-baseline.parquet",
        ],
        log,
    )
    _clumpcat(
        [
            "evaluate",
            "--clumps",
            out / "clumps.parquet",
            "--truth",
            out / "truth.parquet",
            "--galaxies",
            gal,
            "--baseline",
            out / "baseline.parquet",
            "--cutouts",
            cut,
            "--threshold",
            threshold,
            "--score-threshold",
            threshold,
            "--out-dir",
            out / "evaluation",
        ],
        log,
    )
    return json.loads((out / "evaluation" / "metrics.json").read_text())


def summarise(metrics: dict, conditions: pd.DataFrame) -> list[dict]:
    """One row per detector: overall completeness (all, >= 3%) and purity at the threshold."""
    rows = []
    block = metrics["conditions"]
    ratio = conditions["sky_noise_ratio"].to_numpy(float)
    for detector in ("model", "baseline"):
        head = metrics["detectors"][detector]["headline"][metrics["headline_truth_set"]]
        # Every galaxy is in exactly one sky tier (or 'unknown'): summing the
        # tiers gives the survey's counts of the >= 3% clumps.
        tiers = block[detector]["sky_tier"].values()
        n3, k3 = sum(t["n_truth_3pct"] for t in tiers), sum(t["n_tp_3pct"] for t in tiers)
        lo3, hi3 = binomial_interval([k3], [n3])
        rows.append(
            {
                "detector": detector,
                "measured_tier": f"{np.nanmedian(ratio):.2f}" if np.isfinite(ratio).any() else "-",
                "n_truth": head["n_truth"],
                "completeness": head["completeness"],
                "c_err": 0.5 * (head["completeness_hi"] - head["completeness_lo"]),
                "n_truth_3pct": n3,
                "completeness_3pct": k3 / n3 if n3 else math.nan,
                "c3_err": 0.5 * (hi3[0] - lo3[0]) if n3 else math.nan,
                "n_det": head["n_det"],
                "purity": head["purity"] if head["purity"] is not None else math.nan,
                "p_err": 0.5 * ((head["purity_hi"] or 0) - (head["purity_lo"] or 0)),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="trained detector (model.pt)")
    parser.add_argument("--n", type=int, default=40, help="galaxies per survey (default 40)")
    parser.add_argument("--tiers", type=float, nargs="+", default=[0.6, 1.0, 1.6, 2.2])
    parser.add_argument(
        "--families", nargs="+", default=None, help="PSF families (default: the simulator's choice)"
    )
    parser.add_argument(
        "--conditions",
        choices=("nominal", "varied"),
        default="nominal",
        help="how the simulator draws the conditions it does not fix (default nominal)",
    )
    parser.add_argument("--seed", type=int, default=2027, help="survey seed, the same for every tier")
    parser.add_argument(
        "--threshold", type=float, default=SCORE_THRESHOLD, help="score threshold (catalogue's)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--keep", help="keep each survey's files under this folder")
    parser.add_argument("--json", help="also write the table as JSON here")
    args = parser.parse_args(argv)
    if args.n < 1 or any(t <= 0 for t in args.tiers):
        parser.error("--n and every tier must be positive")

    families = args.families or [None]
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_conditions_"))
    table = []
    for family in families:
        for tier in args.tiers:
            out = root / f"tier{tier:g}-{family or 'default'}"
            out.mkdir(parents=True, exist_ok=True)
            began = time.perf_counter()
            simulate(args.seed, args.n, out, tier, family, args.conditions)
            metrics = run_pipeline(out, args.model, args.threshold, args.threads)
            conditions = read_table(out / "evaluation" / "conditions_galaxies.parquet")
            for row in summarise(metrics, conditions):
                table.append({"tier": tier, "family": family or "default", **row})
            print(
                f"# tier x{tier:g} family {family or 'default'}: {time.perf_counter() - began:.0f} s",
                file=sys.stderr,
                flush=True,
            )

    print(f"score >= {args.threshold:g}, {args.n} galaxies per survey, seed {args.seed}, model {args.model}")
    print(
        f"{'tier':>5} {'family':>15} {'detector':>9} {'meas.':>6} {'n_true':>6} {'completeness':>13} "
        f"{'n>=3%':>6} {'compl. >=3%':>13} {'n_det':>6} {'purity':>13}"
    )
    for r in table:
        print(
            f"{r['tier']:>5g} {r['family']:>15} {r['detector']:>9} {r['measured_tier']:>6} {r['n_truth']:>6} "
            f"{r['completeness']:>6.3f}±{r['c_err']:.3f} {r['n_truth_3pct']:>6} "
            f"{r['completeness_3pct']:>6.3f}±{r['c3_err']:.3f} {r['n_det']:>6} {r['purity']:>6.3f}±{r['p_err']:.3f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=2, default=float) + "\n")
    if not args.keep:
        print(f"(survey files in {root}; pass --keep DIR to choose where)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
