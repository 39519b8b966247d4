"""The catalogue as a FITS binary table, streamed from its Parquet file.

:func:`write_fits_catalogue` converts ``catalogue.parquet`` in row batches
(memory bounded by the batch) into ``catalogue.fits`` with the data model's
units and descriptions in the header; the catalogue writer and the release
(which rewrites the FITS file of a united release) both use it.
"""

from __future__ import annotations

import datetime as _dt
import os
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from astropy import units as u
from astropy.io import fits

from clumpcat.catalogue.datamodel import DataModel, load_datamodel, numpy_null

__all__ = ["write_fits_catalogue"]

_UINT64_BZERO = 1 << 63


def _fits_unit_ok(unit: str) -> bool:
    """Whether ``unit`` is a valid FITS unit string (else it goes into TCOMM)."""
    if not unit:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            u.Unit(unit, format="fits")
        except ValueError:
            return False
    return True


def _fits_comment(column) -> str:
    text = (
        column.description
        if _fits_unit_ok(column.unit) or not column.unit
        else f"[{column.unit}] {column.description}"
    )
    return text[:68].rstrip()


def _fits_layout(model: DataModel, widths: dict[str, int]):
    columns, dtypes = [], []
    for c in model.columns:
        kwargs = {"name": c.name, "unit": c.unit if _fits_unit_ok(c.unit) else None}
        if c.dtype == "string":
            w = max(1, widths.get(c.name, 1))
            columns.append(fits.Column(format=f"{w}A", **kwargs))
            dtypes.append((c.name, f"S{w}"))
        elif c.dtype == "bool":
            columns.append(fits.Column(format="L", **kwargs))
            dtypes.append((c.name, "S1"))
        elif c.dtype == "uint64":
            # No TNULL: astropy cannot apply it to unsigned columns; null -> 0.
            columns.append(fits.Column(format="K", bzero=_UINT64_BZERO, **kwargs))
            dtypes.append((c.name, ">i8"))
        elif c.dtype.startswith("int"):
            fmt = {"int64": "K", "int32": "J", "int16": "I"}[c.dtype]
            columns.append(fits.Column(format=fmt, null=int(numpy_null(c.dtype)), **kwargs))
            dtypes.append((c.name, ">" + np.dtype(c.dtype).str[1:]))
        else:
            fmt = {"float64": "D", "float32": "E"}[c.dtype]
            columns.append(fits.Column(format=fmt, **kwargs))
            dtypes.append((c.name, ">" + np.dtype(c.dtype).str[1:]))
    return columns, np.dtype(dtypes)


def _fits_batch(batch: pa.RecordBatch, model: DataModel, dtype: np.dtype) -> np.ndarray:
    rec = np.zeros(batch.num_rows, dtype=dtype)
    for c in model.columns:
        arr = batch.column(c.name)
        valid = ~np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        if c.dtype == "string":
            values = np.array([s if s is not None else "" for s in arr.to_pylist()], dtype=object)
            rec[c.name] = np.array([s.encode("ascii", "replace") for s in values], dtype=dtype[c.name])
        elif c.dtype == "bool":
            filled = arr.fill_null(False).to_numpy(zero_copy_only=False)
            codes = np.where(filled, b"T", b"F").astype("S1")
            codes[~valid] = b"\0"
            rec[c.name] = codes
        elif c.dtype == "uint64":
            raw = arr.fill_null(0).to_numpy(zero_copy_only=False).astype(np.uint64)
            stored = (raw ^ np.uint64(_UINT64_BZERO)).view(np.int64)
            stored[~valid] = -(1 << 63)
            rec[c.name] = stored
        elif c.dtype.startswith("int"):
            rec[c.name] = arr.fill_null(int(numpy_null(c.dtype))).to_numpy(zero_copy_only=False)
        else:
            rec[c.name] = arr.fill_null(np.nan).to_numpy(zero_copy_only=False)
    return rec


def write_fits_catalogue(
    parquet_path: str | Path,
    fits_path: str | Path,
    model: DataModel | None = None,
    *,
    batch_rows: int = 65536,
) -> Path:
    """Write a catalogue Parquet file as a FITS binary table, in row batches.

    The header carries ``TUNITn`` and ``TCOMMn`` (the data model's unit and
    description of each column; a unit that is not valid in FITS, such as
    ``dex(solMass)``, is written at the start of ``TCOMMn`` instead), ``TNULLn`` for integer columns, the data
    model's name and version, the score threshold and the date. Strings are
    ASCII, as wide as the longest value; booleans are FITS logicals (null =
    0 byte); unsigned 64-bit ids use ``TZERO = 2**63`` and write null as 0
    (SDSS ids are never 0).

    Parameters
    ----------
    parquet_path : path
        ``catalogue.parquet`` conforming to ``model``.
    fits_path : path
        Destination; written to a temporary name and renamed.
    model : DataModel, optional
    batch_rows : int
        Rows converted at a time (bounds the memory).

    Returns
    -------
    Path
    """
    model = model or load_datamodel()
    parquet = pq.ParquetFile(parquet_path)
    nrows = parquet.metadata.num_rows
    strings = [c.name for c in model.columns if c.dtype == "string"]
    widths = dict.fromkeys(strings, 1)
    if strings:
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=strings):
            for name in strings:
                longest = pc.max(pc.utf8_length(batch.column(name))).as_py()
                widths[name] = max(widths[name], longest or 0)
    columns, dtype = _fits_layout(model, widths)
    hdu = fits.BinTableHDU.from_columns(columns, nrows=0, name="CATALOGUE")
    header = hdu.header
    header["NAXIS2"] = nrows
    if header["NAXIS1"] != dtype.itemsize:
        raise RuntimeError(f"FITS row size {header['NAXIS1']} differs from the record size {dtype.itemsize}")
    for i, c in enumerate(model.columns, start=1):
        header[f"TCOMM{i}"] = _fits_comment(c)
    meta = parquet.schema_arrow.metadata or {}
    primary = fits.PrimaryHDU()
    primary.header["DATAMOD"] = (model.name[:68], "data model of the catalogue")
    primary.header["DMVERS"] = (model.version, "data model version")
    if b"score_threshold" in meta:
        primary.header["SCORECUT"] = (float(meta[b"score_threshold"]), "minimum detection score")
    for key, card, comment in (
        ("aperture_correction", "APCORR", "aperture-correction PSF where no PSF image"),
        ("background", "BKGMETH", "photometry background"),
    ):
        value = meta.get(f"photometry_{key}".encode())
        if value is not None:
            primary.header[card] = (value.decode()[:68], comment)
    primary.header["DATE"] = (_dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"), "UTC creation date")
    primary.header["ORIGIN"] = "clumpcat"
    fits_path = Path(fits_path)
    tmp = fits_path.with_name(f".{fits_path.name}.tmp")
    primary.writeto(tmp, overwrite=True)
    # astropy's streaming HDU appends the table extension and pads it; rows go
    # in batch by batch, so memory is bounded by the batch, not the catalogue.
    stream = fits.StreamingHDU(str(tmp), header)
    try:
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=model.names):
            # The record dtype is already FITS's big-endian row layout; the
            # stream takes it as bytes (BITPIX 8 of a table header).
            stream.write(_fits_batch(batch, model, dtype).view(np.uint8))
    finally:
        stream.close()
    os.replace(tmp, fits_path)
    return fits_path
