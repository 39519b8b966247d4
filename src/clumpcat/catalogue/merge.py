"""Concatenate per-shard Parquet tables into one, streaming.

Shard tables are appended one row group at a time through a
:class:`pyarrow.parquet.ParquetWriter`, so the merge needs the memory of one
shard, never of the survey. Column units and descriptions are kept.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from clumpcat.errors import InputError
from clumpcat.manifests import ManifestPaths, manifest_help

__all__ = ["merge_parquet", "configure_parser", "run"]

log = logging.getLogger(__name__)


def _target_schema(paths: Sequence[Path]) -> pa.Schema:
    """The schema of the first shard with rows (empty shards may carry null types)."""
    first = None
    for path in paths:
        meta = pq.ParquetFile(path).metadata
        schema = pq.read_schema(path)
        if first is None:
            first = schema
        if meta.num_rows > 0:
            return schema
    return first


def merge_parquet(paths: Sequence[str | Path], out: str | Path) -> int:
    """Concatenate Parquet files with the same columns into ``out``.

    Parameters
    ----------
    paths : sequence of path
        Shard tables, in order. Empty tables are allowed.
    out : path
        Merged table, written to a temporary name and renamed.

    Returns
    -------
    int
        Rows written.

    Raises
    ------
    InputError
        If no paths are given, a file is missing, or the columns differ.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise InputError("merge: no input tables")
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise InputError(f"merge: missing input table(s): {', '.join(missing[:5])}")
    schema = _target_schema(paths)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    rows = 0
    with pq.ParquetWriter(tmp, schema) as writer:
        for path in paths:
            table = pq.read_table(path)
            if table.schema.names != schema.names:
                raise InputError(f"merge: {path} has columns {table.schema.names}, expected {schema.names}")
            if table.num_rows == 0:
                continue
            writer.write_table(table.cast(schema))
            rows += table.num_rows
    tmp.replace(out)
    log.info("merged %d tables, %d rows -> %s", len(paths), rows, out)
    return rows


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``clumpcat merge``."""
    parser.add_argument(
        "inputs", nargs="+", action=ManifestPaths, help=manifest_help("shard tables to concatenate, in order")
    )
    parser.add_argument("--out", required=True, help="merged Parquet table")


def run(args: argparse.Namespace) -> int:
    """Run ``clumpcat merge``."""
    merge_parquet(args.inputs, args.out)
    return 0
