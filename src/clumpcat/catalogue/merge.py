"""Concatenate per-shard Parquet tables into one, streaming; unite runs' catalogues.

Shard tables are appended one row group at a time through a
:class:`pyarrow.parquet.ParquetWriter`, so the merge needs the memory of one
shard, never of the survey. Column units and descriptions are kept.

:func:`union_catalogues` unites the catalogue and ledger of an earlier run
(an earlier release) with those of the run that just finished, as reruns over
new HSC cross-matches need: every galaxy once, from the latest run that
processed it, so no clump twice.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from clumpcat.errors import InputError
from clumpcat.manifests import ManifestPaths, manifest_help

__all__ = ["merge_parquet", "union_catalogues", "configure_parser", "run"]

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


def _read(path: Path, what: str) -> pa.Table:
    if not path.is_file():
        raise InputError(f"{path}: missing; the union of runs needs each run's {what}")
    table = pq.read_table(path)
    if "objid" not in table.column_names:
        raise InputError(f"{path}: no 'objid' column")
    return table.set_column(table.schema.get_field_index("objid"), "objid", table["objid"].cast(pa.string()))


def _write(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)


def union_catalogues(previous: str | Path, current: str | Path, out: str | Path) -> dict[str, int]:
    """Unite an earlier run's ``catalogue.parquet`` and ``ledger.parquet`` with the latest run's.

    A galaxy is identified by its ``objid``; one in the latest run's ledger
    (whatever its status there) is taken from the latest run only, so a
    galaxy processed by both appears once and no clump twice. The earlier
    rows keep their ``clump_id``; the latest run's ids are shifted past the
    largest id kept, so the ids stay unique, and a rerun of the same run gives
    the same ids.

    Parameters
    ----------
    previous : path
        Folder with the earlier ``catalogue.parquet`` and ``ledger.parquet``
        (for instance the last release).
    current : path
        Folder with the latest run's (the catalogue stage's output).
    out : path
        Folder for the united tables (may be ``current`` or ``previous``);
        each file is written to a temporary name and renamed.

    Returns
    -------
    dict
        ``n_kept_galaxies``, ``n_kept_clumps`` (carried over from the earlier
        run), ``n_galaxies`` and ``n_clumps`` (of the union).

    Raises
    ------
    InputError
        If a table is missing, lacks ``objid``, or the two catalogues' columns differ.
    """
    previous, current, out = Path(previous), Path(current), Path(out)
    old_cat, new_cat = (
        _read(previous / "catalogue.parquet", "catalogue"),
        _read(current / "catalogue.parquet", "catalogue"),
    )
    old_led, new_led = (
        _read(previous / "ledger.parquet", "ledger"),
        _read(current / "ledger.parquet", "ledger"),
    )
    if old_cat.column_names != new_cat.column_names:
        raise InputError(
            f"{previous / 'catalogue.parquet'} and {current / 'catalogue.parquet'} have different columns "
            "(another data model): rebuild the earlier release with this version first"
        )
    latest = pa.array(sorted(set(new_led["objid"].to_pylist())), pa.string())
    old_cat = old_cat.filter(pc.invert(pc.is_in(old_cat["objid"], value_set=latest)))
    old_led = old_led.filter(pc.invert(pc.is_in(old_led["objid"], value_set=latest)))
    offset = (pc.max(old_cat["clump_id"]).as_py() or 0) if old_cat.num_rows else 0
    index = new_cat.schema.get_field_index("clump_id")
    shifted = pc.add(new_cat["clump_id"], pa.scalar(offset, new_cat.schema.field("clump_id").type))
    new_cat = new_cat.set_column(index, new_cat.schema.field("clump_id"), shifted)
    catalogue = pa.concat_tables([old_cat.cast(new_cat.schema), new_cat])
    ids = catalogue["clump_id"].to_numpy(zero_copy_only=False)
    if len(np.unique(ids)) != len(ids):  # the earlier release itself held an id twice
        raise InputError(f"{previous / 'catalogue.parquet'}: clump_id not unique; cannot unite the runs")
    ledger = pa.concat_tables([old_led.cast(new_led.schema), new_led])
    out.mkdir(parents=True, exist_ok=True)
    _write(catalogue, out / "catalogue.parquet")
    _write(ledger, out / "ledger.parquet")
    counts = {
        "n_kept_galaxies": old_led.num_rows,
        "n_kept_clumps": old_cat.num_rows,
        "n_galaxies": ledger.num_rows,
        "n_clumps": catalogue.num_rows,
    }
    log.info(
        "union with %s: %d earlier galaxies (%d clumps) kept; %d galaxies, %d clumps in all",
        previous,
        *counts.values(),
    )
    return counts


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
