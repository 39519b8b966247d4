"""Reading and writing the pipeline's tables (Parquet, CSV on input).

Units and descriptions travel in each Parquet field's metadata under the keys
``unit`` and ``description``, so that every table explains itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from clumpcat.errors import InputError

__all__ = ["read_table", "read_tables", "write_table", "field_metadata", "ColumnDoc"]

#: (unit, description) of a column; unit "" for dimensionless or text.
ColumnDoc = tuple[str, str]


def read_table(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a Parquet or CSV table into a DataFrame.

    Parameters
    ----------
    path : str or Path
        ``.parquet``/``.pq`` or ``.csv`` file.
    columns : list of str, optional
        Read only these columns (Parquet only; CSV reads all and selects).

    Returns
    -------
    pandas.DataFrame

    Raises
    ------
    InputError
        If the file does not exist, has an unknown suffix or cannot be parsed.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path, columns=columns)
        if suffix == ".csv":
            frame = pd.read_csv(path)
            return frame[columns] if columns is not None else frame
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise InputError(f"{path}: cannot read table ({exc})") from exc
    raise InputError(f"{path}: table must be .parquet or .csv, got '{suffix}'")


def read_tables(specs) -> pd.DataFrame | None:
    """Read and concatenate tables given as paths (one, or a list; commas also split).

    Every table of a table option may be given at once, e.g. one per shard.

    Parameters
    ----------
    specs : path or sequence of paths, optional

    Returns
    -------
    pandas.DataFrame or None
        None when no path is given.
    """
    if not specs:
        return None
    specs = [specs] if isinstance(specs, str | Path) else list(specs)
    frames = [read_table(p) for spec in specs for p in str(spec).split(",") if p]
    if not frames:
        return None
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def field_metadata(table: pa.Table) -> dict[str, ColumnDoc]:
    """Return ``{column: (unit, description)}`` stored in a Parquet schema."""
    out = {}
    for field in table.schema:
        meta = field.metadata or {}
        out[field.name] = (
            meta.get(b"unit", b"").decode(),
            meta.get(b"description", b"").decode(),
        )
    return out


def write_table(
    frame: pd.DataFrame,
    path: str | Path,
    docs: Mapping[str, ColumnDoc] | None = None,
    table_metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write a DataFrame to Parquet atomically, with units and descriptions.

    Parameters
    ----------
    frame : pandas.DataFrame
        Table to write; its index is dropped.
    path : str or Path
        Destination ``.parquet`` file. Written to a temporary name first and
        renamed, so a killed job never leaves a half-written table.
    docs : mapping, optional
        ``{column: (unit, description)}`` stored in the field metadata.
    table_metadata : mapping, optional
        Extra key/value pairs stored in the schema metadata.

    Returns
    -------
    Path
        The written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    docs = docs or {}
    fields = []
    for field in table.schema:
        unit, description = docs.get(field.name, ("", ""))
        meta = {"unit": unit, "description": description} if (unit or description) else None
        fields.append(field.with_metadata(meta) if meta else field)
    schema = pa.schema(fields, metadata=table.schema.metadata)
    if table_metadata:
        merged = dict(schema.metadata or {})
        merged.update({k.encode(): v.encode() for k, v in table_metadata.items()})
        schema = schema.with_metadata(merged)
    table = table.cast(schema)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)
    return path
