"""The catalogue data model: one file, read by every writer.

``resources/catalogue_datamodel.yaml`` lists every catalogue column with its
``name``, ``dtype``, ``unit`` and ``description`` and whether it is one of the
67 columns of the paper's released catalogue (Table 5, names as published).
The Parquet field metadata, the FITS header (``TUNITn``, ``TCOMMn``) and the
release README are all generated from it, so they cannot disagree.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa

from clumpcat.errors import InputError

__all__ = [
    "DATAMODEL_PATH",
    "DTYPES",
    "Column",
    "DataModel",
    "load_datamodel",
    "numpy_null",
]

#: The data-model file shipped with clumpcat as package data (the repository's
#: ``resources/catalogue_datamodel.yaml`` links to it).
DATAMODEL_PATH = Path(str(importlib.resources.files("clumpcat.catalogue") / "catalogue_datamodel.yaml"))

#: dtype name -> (Arrow type, FITS TFORM letter; strings get a width).
DTYPES: dict[str, tuple[pa.DataType, str]] = {
    "float64": (pa.float64(), "D"),
    "float32": (pa.float32(), "E"),
    "uint64": (pa.uint64(), "K"),
    "int64": (pa.int64(), "K"),
    "int32": (pa.int32(), "J"),
    "int16": (pa.int16(), "I"),
    "bool": (pa.bool_(), "L"),
    "string": (pa.string(), "A"),
}


@dataclass(frozen=True)
class Column:
    """One catalogue column.

    Attributes
    ----------
    name : str
    dtype : str
        One of :data:`DTYPES`.
    unit : str
        Unit string (astropy/FITS syntax), empty when dimensionless.
    description : str
    released : bool
        True for the 67 columns of the paper's released catalogue.
    """

    name: str
    dtype: str
    unit: str
    description: str
    released: bool

    @property
    def arrow_type(self) -> pa.DataType:
        """Arrow type of the column."""
        return DTYPES[self.dtype][0]


@dataclass(frozen=True)
class DataModel:
    """The catalogue's columns, in order, with the model's name and version."""

    name: str
    version: int
    description: str
    columns: tuple[Column, ...]
    path: str = ""

    @property
    def names(self) -> list[str]:
        """Every column name, in order."""
        return [c.name for c in self.columns]

    @property
    def released_names(self) -> list[str]:
        """The paper's 67 released column names, in order."""
        return [c.name for c in self.columns if c.released]

    def __getitem__(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)

    def docs(self) -> dict[str, tuple[str, str]]:
        """``{name: (unit, description)}`` for :func:`clumpcat.tables.write_table`."""
        return {c.name: (c.unit, c.description) for c in self.columns}

    def arrow_schema(self) -> pa.Schema:
        """Arrow schema with ``unit`` and ``description`` in each field's metadata."""
        fields = [
            pa.field(
                c.name, c.arrow_type, nullable=True, metadata={"unit": c.unit, "description": c.description}
            )
            for c in self.columns
        ]
        meta = {"datamodel": self.name, "datamodel_version": str(self.version)}
        return pa.schema(fields, metadata=meta)

    def conform(self, table: pa.Table) -> pa.Table:
        """Select, order and cast ``table``'s columns to the model (missing -> null).

        Raises
        ------
        InputError
            If a column cannot be cast to its model dtype.
        """
        arrays = []
        for column in self.columns:
            if column.name in table.column_names:
                try:
                    arrays.append(table[column.name].cast(column.arrow_type))
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise InputError(
                        f"catalogue column {column.name}: cannot cast to {column.dtype} ({exc})"
                    ) from exc
            else:
                arrays.append(pa.nulls(table.num_rows, type=column.arrow_type))
        return pa.Table.from_arrays(arrays, schema=self.arrow_schema())


def _parse(raw: object, source: str) -> DataModel:
    if not isinstance(raw, dict) or not isinstance(raw.get("columns"), list):
        raise InputError(f"{source}: a data model needs a 'columns' list")
    problems, columns, seen = [], [], set()
    for i, entry in enumerate(raw["columns"]):
        if not isinstance(entry, dict):
            problems.append(f"column {i}: not a mapping")
            continue
        missing = [k for k in ("name", "dtype", "unit", "description") if k not in entry]
        if missing:
            problems.append(f"column {i} ({entry.get('name', '?')}): missing {', '.join(missing)}")
            continue
        name = str(entry["name"])
        if name in seen:
            problems.append(f"column {i}: duplicate name {name}")
        seen.add(name)
        if entry["dtype"] not in DTYPES:
            problems.append(
                f"column {name}: dtype must be one of {', '.join(DTYPES)}, got {entry['dtype']!r}"
            )
        if len(name) > 68:
            problems.append(f"column {name}: names longer than 68 characters do not fit a FITS TTYPE card")
        columns.append(
            Column(
                name,
                str(entry["dtype"]),
                str(entry["unit"] or ""),
                str(entry["description"]),
                bool(entry.get("released", False)),
            )
        )
    if problems:
        raise InputError(f"{source}: " + "; ".join(problems))
    return DataModel(
        name=str(raw.get("name", "catalogue")),
        version=int(raw.get("version", 1)),
        description=" ".join(str(raw.get("description", "")).split()),
        columns=tuple(columns),
        path=source,
    )


@lru_cache(maxsize=4)
def _load(path: str) -> DataModel:
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:
            raw = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"{path}: cannot read the data model ({exc})") from exc
    return _parse(raw, path)


def load_datamodel(path: str | Path | None = None) -> DataModel:
    """Read and check a catalogue data model.

    Parameters
    ----------
    path : str or Path, optional
        YAML data-model file; default :data:`DATAMODEL_PATH`.

    Returns
    -------
    DataModel

    Raises
    ------
    InputError
        Naming the file and every malformed, duplicate or mistyped column.

    Examples
    --------
    >>> model = load_datamodel()
    >>> len(model.released_names)
    67
    """
    return _load(str(Path(path) if path is not None else DATAMODEL_PATH))


def numpy_null(dtype: str):
    """Sentinel written to FITS for a null of an integer ``dtype`` (TNULL)."""
    return np.iinfo(np.dtype(dtype)).min
