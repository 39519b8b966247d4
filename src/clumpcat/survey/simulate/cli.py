"""``clumpcat simulate``: the synthetic survey's command line.

Examples
--------
The whole survey into one folder::

    clumpcat simulate --n 800 --seed 1 --out results/sim

The same galaxies under one nominal SDSS condition, or all with a Gaussian PSF
at twice SDSS's sky noise::

    clumpcat simulate --n 800 --seed 1 --out results/nominal --conditions nominal
    clumpcat simulate --n 800 --seed 1 --out results/g2 --psf-family gaussian --sky-noise-scale 2

One shard, as a Snakemake job calls it (galaxies 200..399)::

    clumpcat simulate --seed 1 --first 200 --count 200 \\
        --galaxies shards/1/galaxies.parquet --truth shards/1/truth.parquet \\
        --cutouts results/cutouts
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from clumpcat.errors import InputError
from clumpcat.ledger import write_status
from clumpcat.settings import SimulateSettings
from clumpcat.survey.simulate.survey import galaxy_docs, simulate_survey
from clumpcat.survey.simulate.truth import TRUTH_COLUMNS
from clumpcat.tables import write_table

__all__ = ["configure_parser", "run"]

log = logging.getLogger(__name__)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add ``simulate``'s options to its subparser."""
    parser.add_argument("--n", type=int, help="number of galaxies (indices 0..N-1)")
    parser.add_argument("--seed", type=int, default=0, help="survey seed (default 0)")
    parser.add_argument("--out", type=Path, help="folder for cutouts/, galaxies.parquet, truth.parquet")
    parser.add_argument("--first", type=int, default=0, help="first galaxy index of a shard (default 0)")
    parser.add_argument("--count", type=int, help="number of galaxies in the shard (default: --n)")
    parser.add_argument("--galaxies", type=Path, help="galaxy table to write (default OUT/galaxies.parquet)")
    parser.add_argument("--truth", type=Path, help="truth table to write (default OUT/truth.parquet)")
    parser.add_argument("--cutouts", type=Path, help="cutout folder (default OUT/cutouts)")
    parser.add_argument("--status-out", type=Path, help="also write a status table (every galaxy ok)")
    SimulateSettings.add_options(parser)


def _resolve(args) -> tuple[int, int, Path, Path, Path]:
    problems = []
    count = args.count if args.count is not None else args.n
    if count is None:
        problems.append("give --n N or --count C")
    elif count < 0:
        problems.append(f"--count/--n must be >= 0, got {count}")
    if args.n is not None and args.count is not None and args.first + args.count > args.n:
        problems.append(
            f"--first {args.first} --count {args.count} goes past the survey's --n {args.n} galaxies"
        )
    if args.seed < 0:
        problems.append(f"--seed must be >= 0, got {args.seed}")
    if args.first < 0:
        problems.append(f"--first must be >= 0, got {args.first}")
    paths = {}
    for name, default in (
        ("galaxies", "galaxies.parquet"),
        ("truth", "truth.parquet"),
        ("cutouts", "cutouts"),
    ):
        value = getattr(args, name)
        if value is None and args.out is not None:
            value = args.out / default
        if value is None:
            problems.append(f"give --out DIR or --{name} PATH")
        paths[name] = value
    if problems:
        raise InputError("simulate: " + "; ".join(problems))
    return args.first, count, paths["galaxies"], paths["truth"], paths["cutouts"]


def run(args: argparse.Namespace) -> int:
    """Simulate the requested galaxies and write cutouts, galaxy and truth tables."""
    first, count, galaxies_path, truth_path, cutout_dir = _resolve(args)
    settings = SimulateSettings.from_args(args)
    log.info(
        "simulating galaxies %d..%d of seed %d into %s (%s)",
        first,
        first + count - 1,
        args.seed,
        cutout_dir,
        settings.cli_values(),
    )
    galaxies, truth = simulate_survey(args.seed, first, count, cutout_dir, **settings.cli_values())
    meta = {
        "clumpcat_generator": "simulate",
        "seed": str(args.seed),
        "first": str(first),
        "count": str(count),
        **{key: str(value) for key, value in settings.cli_values().items()},
    }
    write_table(galaxies, galaxies_path, galaxy_docs(), meta)
    write_table(truth, truth_path, TRUTH_COLUMNS, meta)
    if args.status_out is not None:
        write_status(args.status_out, galaxies["objid"].tolist(), [])
    log.info("wrote %s and %s", galaxies_path, truth_path)
    return 0
