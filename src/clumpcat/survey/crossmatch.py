"""Reruns over new HSC data: which galaxies have an HSC match and are new (Section 5.2).

When a new HSC object table arrives, match it against the galaxy table on the
sky (astropy ``search_around_sky``), keep each galaxy's nearest HSC object
within the radius, and drop the galaxies an earlier run already processed
(present in its ledger, status tables or catalogue). The result is a galaxy
table for ``survey=hsc``: fetched and processed with the model out of the box,
it yields an HSC catalogue beside the SDSS one.

Each HSC run's catalogue stage rewrites ``ledger.parquet`` with that run's
galaxies only, so the galaxies of runs before the last one would be forgotten.
A history table (``objid``, ``status``) therefore keeps every galaxy any
earlier ledger named: each cross-match reads it with the ledgers, and writes
it back with the ledgers' galaxies added (the new matches join it once their
run's ledger names them).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterable
from pathlib import Path

import astropy.units as u
import numpy as np
import pandas as pd
from astropy.coordinates import SkyCoord

from clumpcat.errors import InputError
from clumpcat.survey.galaxies import GALAXY_COLUMNS, read_galaxies, validate_galaxies
from clumpcat.tables import read_table, write_table

__all__ = [
    "MATCH_COLUMNS",
    "HISTORY_COLUMNS",
    "crossmatch_hsc",
    "processed_table",
    "processed_objids",
    "configure_parser",
    "run",
]

log = logging.getLogger(__name__)

#: Columns added to the matched galaxy table.
MATCH_COLUMNS = {
    "hsc_object_id": ("", "HSC object id of the nearest match"),
    "hsc_ra": ("deg", "Right ascension of the HSC match (ICRS)"),
    "hsc_dec": ("deg", "Declination of the HSC match (ICRS)"),
    "hsc_sep_arcsec": ("arcsec", "Separation between the galaxy and its HSC match"),
    "hsc_n_matches": ("", "HSC objects within the match radius"),
}


#: Columns of the cross-match history table.
HISTORY_COLUMNS = {
    "objid": ("", "Galaxy named by an earlier run's ledger, status table or catalogue"),
    "status": ("", "Its last known status (ok, no_clumps, failed; empty for a catalogue)"),
}


def processed_table(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Galaxies named in earlier ledgers, status tables, catalogues or histories.

    Parameters
    ----------
    paths : iterable of str or Path
        Tables with an ``objid`` column (and ``status`` where known).
        Missing files are skipped (a first run has no ledger yet).

    Returns
    -------
    DataFrame
        ``objid`` and ``status`` (empty where the table has none), one row
        per galaxy; a later table's status wins.

    Raises
    ------
    InputError
        If a table has no ``objid`` column.
    """
    parts = []
    for path in paths:
        path = Path(path)
        if not path.exists():
            log.info("no earlier table at %s; nothing processed there", path)
            continue
        table = read_table(path)
        if "objid" not in table.columns:
            raise InputError(f"{path}: no 'objid' column; give a ledger, status table or catalogue")
        status = table["status"].astype(str) if "status" in table.columns else ""
        parts.append(pd.DataFrame({"objid": table["objid"].astype(str), "status": status}))
    if not parts:
        return pd.DataFrame({"objid": pd.Series(dtype=str), "status": pd.Series(dtype=str)})
    out = pd.concat(parts, ignore_index=True).drop_duplicates("objid", keep="last")
    return out.reset_index(drop=True)


def processed_objids(paths: Iterable[str | Path], retry_failed: bool = False) -> set[str]:
    """Galaxies named in earlier ledgers, status tables or catalogues.

    Parameters
    ----------
    paths : iterable of str or Path
        Tables with an ``objid`` column. Missing files are skipped (a first
        run has no ledger yet).
    retry_failed : bool
        Do not count galaxies whose ``status`` is ``failed``.

    Raises
    ------
    InputError
        If a table has no ``objid`` column.
    """
    table = processed_table(paths)
    if retry_failed:
        table = table[table["status"] != "failed"]
    return set(table["objid"])


def crossmatch_hsc(
    galaxies: pd.DataFrame,
    hsc: pd.DataFrame,
    radius_arcsec: float,
    *,
    processed: set[str] | None = None,
    id_column: str = "object_id",
    ra_column: str = "ra",
    dec_column: str = "dec",
    source: str = "HSC table",
) -> pd.DataFrame:
    """Galaxies with an HSC object within ``radius_arcsec`` that were not processed before.

    Parameters
    ----------
    galaxies : DataFrame
        Validated galaxy table.
    hsc : DataFrame
        HSC objects with ``id_column``, ``ra_column``, ``dec_column`` (deg).
    radius_arcsec : float
        Match radius.
    processed : set of str, optional
        objids to leave out (processed by an earlier run).
    id_column, ra_column, dec_column : str
        Column names in the HSC table.
    source : str
        Name of the HSC table in error messages.

    Returns
    -------
    DataFrame
        The matched, new galaxies (galaxy-table columns, in input order) plus
        ``hsc_object_id``, ``hsc_ra``, ``hsc_dec``, ``hsc_sep_arcsec`` (the
        nearest match) and ``hsc_n_matches``.

    Raises
    ------
    InputError
        If the radius is not positive, HSC columns are missing, or HSC
        coordinates are not finite (naming the rows).
    """
    if not radius_arcsec > 0:
        raise InputError(f"--radius-arcsec must be > 0, got {radius_arcsec}")
    missing = [c for c in (id_column, ra_column, dec_column) if c not in hsc.columns]
    if missing:
        raise InputError(
            f"{source}: missing column(s) {', '.join(missing)}; have {', '.join(map(str, hsc.columns))}"
        )
    hra = pd.to_numeric(hsc[ra_column], errors="coerce").to_numpy(dtype=float)
    hdec = pd.to_numeric(hsc[dec_column], errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(~(np.isfinite(hra) & np.isfinite(hdec)))
    if bad.size:
        rows = ", ".join(map(str, bad[:10])) + (f" and {bad.size - 10} more" if bad.size > 10 else "")
        raise InputError(f"{source}: non-finite {ra_column}/{dec_column} in row(s) {rows}")
    new = galaxies
    if processed:
        new = galaxies[~galaxies["objid"].astype(str).isin(processed)]
        log.info(
            "%d of %d galaxies were processed before; matching the other %d",
            len(galaxies) - len(new),
            len(galaxies),
            len(new),
        )
    columns = list(galaxies.columns) + list(MATCH_COLUMNS)
    if new.empty or len(hsc) == 0:
        return pd.DataFrame(columns=columns)
    gal_coords = SkyCoord(new["ra"].to_numpy(float) * u.deg, new["dec"].to_numpy(float) * u.deg)
    hsc_coords = SkyCoord(hra * u.deg, hdec * u.deg)
    # Returns (index into the galaxies searched around, index into the HSC objects, separation, distance).
    idx_gal, idx_hsc, sep, _ = hsc_coords.search_around_sky(gal_coords, radius_arcsec * u.arcsec)
    pairs = pd.DataFrame({"gal": idx_gal, "hsc": idx_hsc, "sep": sep.to_value(u.arcsec)})
    if pairs.empty:
        return pd.DataFrame(columns=columns)
    counts = pairs.groupby("gal").size()
    nearest = pairs.sort_values(["gal", "sep"]).drop_duplicates("gal", keep="first").set_index("gal")
    order = np.sort(nearest.index.to_numpy())
    out = new.iloc[order].reset_index(drop=True).copy()
    hit = nearest.loc[order]
    out["hsc_object_id"] = hsc[id_column].to_numpy()[hit["hsc"].to_numpy()]
    out["hsc_ra"] = hra[hit["hsc"].to_numpy()]
    out["hsc_dec"] = hdec[hit["hsc"].to_numpy()]
    out["hsc_sep_arcsec"] = hit["sep"].to_numpy()
    out["hsc_n_matches"] = counts.loc[order].to_numpy().astype(np.int64)
    return out


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``clumpcat crossmatch``."""
    parser.add_argument("--galaxies", required=True, metavar="TABLE", help="galaxy table (Parquet or CSV)")
    parser.add_argument("--hsc-objects", required=True, metavar="TABLE", help="new HSC object table")
    parser.add_argument(
        "--out", required=True, metavar="PARQUET", help="galaxy table of new HSC matches to write"
    )
    parser.add_argument("--radius-arcsec", type=float, default=1.0, help="match radius in arcsec (default 1)")
    parser.add_argument(
        "--processed",
        nargs="*",
        default=[],
        metavar="TABLE",
        help="earlier ledgers, status tables or catalogues; their galaxies are left out (missing files are skipped)",
    )
    parser.add_argument(
        "--history",
        metavar="PARQUET",
        help="cross-match history: read as one more processed table, then rewritten with the galaxies "
        "of every --processed table added (keeps galaxies whose ledger a later run overwrote)",
    )
    parser.add_argument(
        "--retry-failed", action="store_true", help="treat galaxies that failed earlier as new"
    )
    parser.add_argument(
        "--hsc-id-column", default="object_id", help="id column of the HSC table (default object_id)"
    )
    parser.add_argument(
        "--hsc-ra-column", default="ra", help="RA column of the HSC table in deg (default ra)"
    )
    parser.add_argument(
        "--hsc-dec-column", default="dec", help="Dec column of the HSC table in deg (default dec)"
    )


def run(args) -> int:
    """Entry point of ``clumpcat crossmatch``."""
    galaxies = read_galaxies(args.galaxies)
    hsc = read_table(args.hsc_objects)
    tables = ([args.history] if args.history else []) + list(args.processed)
    processed = processed_objids(tables, retry_failed=args.retry_failed)
    matched = crossmatch_hsc(
        galaxies,
        hsc,
        args.radius_arcsec,
        processed=processed,
        id_column=args.hsc_id_column,
        ra_column=args.hsc_ra_column,
        dec_column=args.hsc_dec_column,
        source=str(args.hsc_objects),
    )
    if not matched.empty:
        matched = validate_galaxies(matched, source=str(args.out))
    docs = {**GALAXY_COLUMNS, **MATCH_COLUMNS}
    write_table(matched, args.out, docs, table_metadata={"radius_arcsec": str(args.radius_arcsec)})
    if args.history:
        write_table(processed_table(tables), args.history, HISTORY_COLUMNS)
    log.info(
        "%d galaxies with a new HSC match within %.2f arcsec -> %s",
        len(matched),
        args.radius_arcsec,
        args.out,
    )
    return 0
