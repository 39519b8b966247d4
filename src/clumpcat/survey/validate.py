"""``clumpcat validate``: check a galaxy table and split it into shards.

The table is read in chunks of one shard, so a survey of 10^7 galaxies never
sits in memory; duplicate ids are found across chunks from 64-bit hashes.
Nothing is left behind when the table is invalid.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from clumpcat.errors import InputError, one_line
from clumpcat.survey.galaxies import FIX_ROWS, GALAXY_COLUMNS, REQUIRED_COLUMNS, validate_galaxies
from clumpcat.tables import write_table

__all__ = ["iter_chunks", "split_galaxies", "configure_parser", "run"]

log = logging.getLogger(__name__)

#: Chunks whose problems one message lists before it stops reading.
_MAX_CHUNK_PROBLEMS = 5
_FIX = FIX_ROWS


def iter_chunks(path: str | Path, size: int) -> Iterator[pd.DataFrame]:
    """Yield consecutive chunks of ``size`` rows of a Parquet or CSV table.

    Raises
    ------
    InputError
        If the file is missing, empty, not valid Parquet or not UTF-8 CSV.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".pq", ".csv"):
        raise InputError(f"{path}: galaxy table must be .parquet or .csv, got '{suffix}'")
    if path.is_dir() or path.stat().st_size == 0:
        raise InputError(f"{path}: the galaxy table is empty; it needs a header and rows of objid, ra, dec")
    try:
        if suffix == ".csv":
            # encoding utf-8-sig: a byte-order mark (Excel's UTF-8 CSV) is not part of the first name.
            yield from pd.read_csv(path, chunksize=size, dtype={"objid": str}, encoding="utf-8-sig")
        else:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=size):
                yield batch.to_pandas()
    except (OSError, ValueError, pa.ArrowException) as exc:
        kind = "UTF-8 CSV" if suffix == ".csv" else "Parquet"
        raise InputError(
            f"{path}: cannot read the galaxy table as {kind} ({one_line(exc, 200)}); "
            "write it as UTF-8 CSV or Parquet with columns objid, ra, dec"
        ) from exc


def split_galaxies(path: str | Path, shard_size: int, out_dir: str | Path) -> list[Path]:
    """Validate a galaxy table and write ``out_dir/{k:05d}/galaxies.parquet``.

    Parameters
    ----------
    path : path
        Galaxy table (Parquet or CSV) in the contract of DESIGN.md.
    shard_size : int
        Galaxies per shard; shard ``k`` holds rows ``k*shard_size`` onwards.
    out_dir : path
        Folder receiving one sub-folder per shard.

    Returns
    -------
    list of Path
        The shard tables written.

    Raises
    ------
    InputError
        For a missing required column, a malformed or duplicate objid, or a
        non-finite coordinate, naming the rows. Shards written before the
        error are removed.
    """
    if shard_size < 1:
        raise InputError(f"shard_size must be >= 1, got {shard_size}")
    out_dir = Path(out_dir)
    written: list[Path] = []
    hashes = []
    first = 0
    problems: list[str] = []
    try:
        for k, chunk in enumerate(iter_chunks(path, shard_size)):
            try:
                frame = validate_galaxies(chunk, source=str(path), first_row=first)
            except InputError as exc:
                # Read on to the end, so that one message names the bad rows of the whole table.
                problems.append(str(exc).removeprefix(f"{path}: ").removesuffix(_FIX))
                first += len(chunk)
                if "missing required column" in problems[-1] or len(problems) >= _MAX_CHUNK_PROBLEMS:
                    break
                continue
            first += len(frame)
            if problems:
                continue
            hashes.append(pd.util.hash_array(frame["objid"].to_numpy(dtype=object)))
            target = out_dir / f"{k:05d}" / "galaxies.parquet"
            write_table(frame, target, GALAXY_COLUMNS)
            written.append(target)
        if problems:
            raise InputError(f"{path}: " + "; ".join(problems) + _FIX)
        if first == 0:
            raise InputError(f"{path}: the galaxy table has no rows (needs {', '.join(REQUIRED_COLUMNS)})")
        _check_duplicates_across_chunks(path, hashes, shard_size)
    except Exception:
        for target in written:
            shutil.rmtree(target.parent, ignore_errors=True)
        raise
    log.info("%s: %d galaxies in %d shards of %d", path, first, len(written), shard_size)
    return written


def _check_duplicates_across_chunks(path, hashes: list[np.ndarray], shard_size: int) -> None:
    allh = np.concatenate(hashes)
    uniq, counts = np.unique(allh, return_counts=True)
    if (counts == 1).all():
        return
    dup_hash = uniq[counts > 1]
    rows = np.flatnonzero(np.isin(allh, dup_hash))
    # Hashes can collide; confirm with the ids themselves before failing.
    ids = {}
    for k, chunk in enumerate(iter_chunks(path, shard_size)):
        lo = k * shard_size
        for r in rows[(rows >= lo) & (rows < lo + len(chunk))]:
            ids.setdefault(str(chunk["objid"].iloc[r - lo]), []).append(int(r))
    dups = {i: r for i, r in ids.items() if len(r) > 1}
    if dups:
        shown = "; ".join(f"{i} in rows {', '.join(map(str, r))}" for i, r in list(dups.items())[:10])
        raise InputError(f"{path}: duplicate objid: {shown}")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``clumpcat validate``."""
    parser.add_argument("--galaxies", required=True, help="galaxy table (Parquet or CSV)")
    parser.add_argument("--shard-size", type=int, required=True, help="galaxies per shard")
    parser.add_argument("--out-dir", required=True, help="folder of shard sub-folders")


def run(args: argparse.Namespace) -> int:
    """Run ``clumpcat validate``."""
    split_galaxies(args.galaxies, args.shard_size, args.out_dir)
    return 0
