"""Benchmark of ``clumpcat simulate`` and ``clumpcat inject``: galaxies/s and peak memory.

Run on one core, as a Snakemake job of the default pipeline would::

    OMP_NUM_THREADS=1 python benchmarks/bench_simulate.py --n 40
    OMP_NUM_THREADS=1 python benchmarks/bench_simulate.py --n 40 --conditions nominal

Prints one row per phase: galaxies, seconds, galaxies/s and the process's
peak resident memory after the phase (MiB).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from clumpcat.paths import objid_path
from clumpcat.survey.cutouts import read_cutout, write_cutout
from clumpcat.survey.galaxies import validate_galaxies
from clumpcat.survey.inject import inject_survey
from clumpcat.survey.simulate.survey import draw_galaxy, render_galaxy, simulate_survey

__all__ = ["main"]


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv: list[str] | None = None) -> int:
    """Time the phases of the synthetic survey and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40, help="galaxies to simulate (default 40)")
    parser.add_argument("--seed", type=int, default=1, help="survey seed (default 1)")
    parser.add_argument(
        "--conditions",
        choices=("varied", "nominal"),
        default="varied",
        help="observing conditions drawn per galaxy, or the one nominal SDSS condition (default varied)",
    )
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        draw_galaxy(args.seed, 0, args.conditions)  # warm caches (cosmology grid, GalSim tables)

        start = time.perf_counter()
        models = [draw_galaxy(args.seed, i, args.conditions) for i in range(args.n)]
        rows.append(("draw models (no pixels)", args.n, time.perf_counter() - start, _peak_mib()))

        start = time.perf_counter()
        rendered = [render_galaxy(m).cutout for m in models[: min(args.n, 20)]]
        rows.append(("render only", len(rendered), time.perf_counter() - start, _peak_mib()))

        start = time.perf_counter()
        for cutout in rendered:
            write_cutout(objid_path(tmp / "w", cutout.objid, ".fits"), cutout)
        rows.append(("write FITS only", len(rendered), time.perf_counter() - start, _peak_mib()))

        start = time.perf_counter()
        galaxies, truth = simulate_survey(args.seed, 0, args.n, tmp / "cutouts", conditions=args.conditions)
        rows.append(("simulate (draw+render+write)", args.n, time.perf_counter() - start, _peak_mib()))

        start = time.perf_counter()
        read = [read_cutout(p) for p in sorted((tmp / "cutouts").glob("*.fits"))[:20]]
        rows.append(("read FITS", len(read), time.perf_counter() - start, _peak_mib()))

        start = time.perf_counter()
        injected, failures = inject_survey(
            validate_galaxies(galaxies), tmp / "cutouts", tmp / "inj", args.seed, 3
        )
        rows.append(
            ("inject (3 clumps/galaxy)", args.n - len(failures), time.perf_counter() - start, _peak_mib())
        )

    print(f"{'phase':<30} {'galaxies':>8} {'seconds':>8} {'galaxies/s':>10} {'peak MiB':>9}")
    for name, n, seconds, peak in rows:
        rate = n / seconds if seconds > 0 else float("inf")
        print(f"{name:<30} {n:>8d} {seconds:>8.2f} {rate:>10.1f} {peak:>9.0f}")
    detectable = truth["detectable"].to_numpy(dtype=bool)
    print(
        f"\ntruth sources: {len(truth)} ({np.mean(detectable):.0%} detectable, "
        f"{np.mean(truth['label'] == 'odd'):.0%} odd); injected clumps: {len(injected)} "
        f"({np.mean(injected['detectable'].to_numpy(dtype=bool)):.0%} detectable)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
