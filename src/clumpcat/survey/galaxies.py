"""The galaxy table: the pipeline's input, one row per galaxy (DESIGN.md).

Required columns are ``objid``, ``ra`` and ``dec`` (degrees, ICRS); the
optional ones are used where present. Validation gathers every offending row
into one message and raises before any work starts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from clumpcat.constants import SDSS_BANDS
from clumpcat.errors import InputError
from clumpcat.paths import OBJID_PATTERN
from clumpcat.tables import ColumnDoc, read_table

__all__ = ["FIX_ROWS", "REQUIRED_COLUMNS", "GALAXY_COLUMNS", "read_galaxies", "validate_galaxies"]

REQUIRED_COLUMNS = ("objid", "ra", "dec")

#: How a validation message ends: what to do.
FIX_ROWS = "; fix these rows (0-based) of the galaxy table and run again"

#: Units and descriptions of the galaxy-table columns clumpcat knows.
GALAXY_COLUMNS: dict[str, ColumnDoc] = {
    "objid": ("", "Galaxy identifier (string of [A-Za-z0-9_.-])"),
    "ra": ("deg", "Right ascension of the galaxy centre (ICRS)"),
    "dec": ("deg", "Declination of the galaxy centre (ICRS)"),
    "redshift": ("", "Spectroscopic redshift"),
    "petro_r90_r": ("arcsec", "r-band Petrosian radius containing 90% of the flux"),
    "axis_ratio": ("", "Minor/major axis ratio (SDSS expAB_r)"),
    "exp_rad_r": ("arcsec", "r-band exponential-fit half-light radius (SDSS expRad_r)"),
    "ebv": ("mag", "SFD E(B-V) at the galaxy position"),
    "log_mstar": ("dex(solMass)", "log10 stellar mass"),
    "log_ssfr": ("dex(1/yr)", "log10 specific star-formation rate"),
    "specobjid": ("", "SDSS spectroscopic object id"),
    "dr7objid": ("", "SDSS DR7 photometric object id"),
    "run": ("", "SDSS imaging run"),
    "camcol": ("", "SDSS camera column"),
    "field": ("", "SDSS field number"),
    **{f"psf_fwhm_{b}": ("arcsec", f"{b}-band PSF FWHM") for b in SDSS_BANDS + ("y",)},
    **{f"host_mag_{b}": ("mag(AB)", f"Observed {b}-band host magnitude") for b in SDSS_BANDS + ("y",)},
    **{
        f"host_mag_err_{b}": ("mag(AB)", f"Error of the {b}-band host magnitude") for b in SDSS_BANDS + ("y",)
    },
}


def _rows(mask: np.ndarray, first_row: int = 0, limit: int = 10) -> str:
    rows = np.flatnonzero(mask) + first_row
    shown = ", ".join(str(r) for r in rows[:limit])
    more = f" and {len(rows) - limit} more" if len(rows) > limit else ""
    return f"row(s) {shown}{more}"


def _shown_ids(ids: pd.Series, mask: np.ndarray, limit: int = 3, width: int = 24) -> str:
    """The first few offending ids, quoted and shortened (a 10k-character id stays readable)."""
    shown = []
    for text in ids[mask].iloc[:limit]:
        text = repr(text)
        shown.append(text if len(text) <= width else text[: width - 4] + "...'")
    return ", ".join(shown)


def validate_galaxies(frame: pd.DataFrame, source: str = "galaxy table", first_row: int = 0) -> pd.DataFrame:
    """Check a galaxy table against the contract and normalise it.

    Parameters
    ----------
    frame : pandas.DataFrame
        Table with at least ``objid``, ``ra`` and ``dec``.
    source : str
        Name used in error messages (usually the file path).
    first_row : int
        Row number of the frame's first row in the file, for messages about a
        chunk of a larger table.

    Returns
    -------
    pandas.DataFrame
        A copy with ``objid`` as strings and ``ra``/``dec`` as float64.

    Raises
    ------
    InputError
        Listing, in one message, every missing required column, duplicate
        objid, malformed objid and non-finite or out-of-range coordinate, with
        0-based row numbers.
    """
    # A byte-order mark or stray spaces glued to a header name are not part of it.
    frame = frame.rename(columns=lambda c: c.replace("\ufeff", "").strip() if isinstance(c, str) else c)
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(
            f"{source}: missing required column(s) {', '.join(missing)}; "
            f"the galaxy table needs {', '.join(REQUIRED_COLUMNS)} (found {', '.join(map(str, frame.columns[:10]))})"
        )
    out = frame.reset_index(drop=True).copy()
    problems = []
    objid = out["objid"]
    if pd.api.types.is_float_dtype(objid):
        problems.append("objid must be an integer or a string, not a float (ids lose digits)")
    no_id = objid.isna().to_numpy(dtype=bool)
    if no_id.any():
        problems.append(f"empty objid in {_rows(no_id, first_row)}")
    objid = objid.astype(str)
    bad_id = ~no_id & ~objid.str.fullmatch(OBJID_PATTERN.pattern).fillna(False).to_numpy(dtype=bool)
    if bad_id.any():
        problems.append(
            f"objid outside [A-Za-z0-9_.-] (or starting with '.', or over 128 characters) in "
            f"{_rows(bad_id, first_row)} ({_shown_ids(objid, bad_id)})"
        )
    dup = objid.duplicated(keep=False).to_numpy() & ~no_id
    if dup.any():
        names = ", ".join(sorted(set(objid[dup]))[:10])
        problems.append(f"duplicate objid ({names}) in {_rows(dup, first_row)}")
    for col, lo, hi in (("ra", 0.0, 360.0), ("dec", -90.0, 90.0)):
        values = pd.to_numeric(out[col], errors="coerce").to_numpy(dtype=float)
        nonfinite = ~np.isfinite(values)
        if nonfinite.any():
            problems.append(f"non-finite {col} in {_rows(nonfinite, first_row)}")
        with np.errstate(invalid="ignore"):
            outside = np.isfinite(values) & ((values < lo) | (values > hi))
        if outside.any():
            problems.append(f"{col} outside [{lo:g}, {hi:g}] deg in {_rows(outside, first_row)}")
        out[col] = values
    if problems:
        raise InputError(
            f"{source}: "
            + "; ".join(problems)
            + "; fix these rows (0-based) of the galaxy table and run again"
        )
    out["objid"] = objid
    return out


def read_galaxies(path: str | Path) -> pd.DataFrame:
    """Read and validate a galaxy table (Parquet or CSV).

    See Also
    --------
    validate_galaxies : the checks applied.
    """
    return validate_galaxies(read_table(path), source=str(path))
