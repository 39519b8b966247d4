"""How long `snakemake -n` takes to build the DAG of a large survey.

DESIGN.md: a dry run over 10^6 galaxies in under a minute. Prints a table of
galaxies, shard size, jobs, seconds (of `snakemake -n -p`, which prints every
job's command) and the longest shell command in bytes with its rule (issue 13:
none over 32 KiB; Linux caps one argument at 128 KiB).

    .venv/bin/python benchmarks/bench_dag.py [--galaxies 1000000] [--shard-size 1000 5000]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--galaxies", type=int, default=1_000_000)
    parser.add_argument("--shard-size", type=int, nargs="+", default=[1000, 5000])
    args = parser.parse_args()
    snakemake = Path(sys.executable).with_name("snakemake")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n = args.galaxies
        table = pd.DataFrame(
            {
                "objid": np.arange(n).astype(str),
                "ra": np.random.default_rng(0).uniform(0, 360, n),
                "dec": np.zeros(n),
            }
        )
        table.to_parquet(tmp / "galaxies.parquet")
        (tmp / "cutouts").mkdir()
        (tmp / "model.pt").write_bytes(b"")
        for size in args.shard_size:
            start = time.perf_counter()
            out = subprocess.run(
                [
                    str(snakemake),
                    "-n",
                    "-p",
                    "--quiet",
                    "reason",
                    "host",
                    "--cores",
                    "2",
                    "--directory",
                    str(ROOT),
                    "--config",
                    f"galaxies={tmp / 'galaxies.parquet'}",
                    f"cutouts={tmp / 'cutouts'}",
                    f"model={tmp / 'model.pt'}",
                    f"results={tmp / 'results'}",
                    f"shard_size={size}",
                    "survey=sdss",
                ],
                cwd=ROOT,  # where Snakemake finds the Snakefile
                capture_output=True,
                text=True,
                check=False,
            )
            seconds = time.perf_counter() - start
            jobs = re.search(r"^total\s+(\d+)", out.stdout, re.M)
            length, rule = longest_command(out.stdout)
            rows.append(
                (
                    n,
                    size,
                    jobs.group(1) if jobs else f"error: {(out.stderr or out.stdout)[-300:]}",
                    f"{seconds:.1f}",
                    length,
                    rule,
                )
            )
    print(f"{'galaxies':>10} {'shard_size':>10} {'jobs':>8} {'seconds':>8} {'longest_cmd_bytes':>17} rule")
    for row in rows:
        print(f"{row[0]:>10} {row[1]:>10} {row[2]:>8} {row[3]:>8} {row[4]:>17} {row[5]}")


def longest_command(stdout: str) -> tuple[int, str]:
    """Bytes of the longest `Shell command:` that `snakemake -n -p` printed, and its rule."""
    best, best_rule, rule = 0, "-", "-"
    for line in stdout.splitlines():
        if line.startswith(("rule ", "localrule ")):
            rule = line.split()[1].rstrip(":")
        elif line.startswith("Shell command: "):
            size = len(line.removeprefix("Shell command: ").encode())
            if size > best:
                best, best_rule = size, rule
    return best, best_rule


if __name__ == "__main__":
    main()
