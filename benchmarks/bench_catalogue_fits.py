"""Benchmark the FITS copy of the catalogue: rows per second and peak memory.

Writes a ``--rows`` catalogue Parquet file in the data model's columns (random
values of each column's type), then times
:func:`clumpcat.catalogue.writer.write_fits_catalogue` and reports the peak
resident memory the write added, which should be bounded by ``--batch`` rows,
not by the catalogue.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_catalogue_fits.py --rows 200000
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clumpcat.catalogue.datamodel import load_datamodel
from clumpcat.catalogue.writer import write_fits_catalogue

__all__ = ["make_catalogue", "main"]


def make_catalogue(path: Path, rows: int, seed: int = 0, chunk: int = 50_000) -> Path:
    """A Parquet catalogue of ``rows`` random rows in the data model's schema."""
    rng = np.random.default_rng(seed)
    model = load_datamodel()
    schema = model.arrow_schema()
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            arrays = [_column(c.dtype, n, rng, start) for c in model.columns]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
    return path


def _column(dtype: str, n: int, rng, start: int) -> pa.Array:
    if dtype == "string":
        return pa.array([f"g{start + i}" for i in range(n)])
    if dtype == "bool":
        return pa.array(rng.random(n) < 0.5)
    if dtype.startswith(("int", "uint")):
        return pa.array(rng.integers(1, 1 << 30, n).astype(dtype))
    return pa.array(rng.normal(size=n).astype(dtype))


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None) -> int:
    """Print a one-row table: rows, seconds, rows/s, peak memory before and after the write."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=65_536)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        parquet = make_catalogue(Path(tmp) / "catalogue.parquet", args.rows)
        before = _peak_mib()
        t0 = time.perf_counter()
        write_fits_catalogue(parquet, Path(tmp) / "catalogue.fits", batch_rows=args.batch)
        seconds = time.perf_counter() - t0
        size = (Path(tmp) / "catalogue.fits").stat().st_size / 2**20
    print("| rows | batch | seconds | rows/s | FITS MiB | peak RSS before (MiB) | peak RSS after (MiB) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {args.rows} | {args.batch} | {seconds:.2f} | {args.rows / seconds:,.0f} | {size:.0f} "
        f"| {before:.0f} | {_peak_mib():.0f} |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
