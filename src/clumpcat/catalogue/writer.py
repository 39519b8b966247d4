"""The released catalogue: shards merged by streaming into Parquet and FITS.

``clumpcat catalogue`` reads every shard folder (``galaxies.parquet``,
``clumps.parquet``, ``photometry.parquet`` and the shard's last
``status-{stage}.parquet``) one shard at a time and writes, under the results
folder:

- ``clumps.parquet``: every post-processed candidate, every score;
- ``catalogue.parquet`` and ``catalogue.fits``: candidates with
  ``score >= --score-threshold`` in the columns of the data model
  (:mod:`clumpcat.catalogue.datamodel`: the paper's 67 columns, then the extras), with
  units and descriptions in the Parquet field metadata and in the FITS
  header (``TUNITn``, ``TCOMMn``);
- ``ledger.parquet``: one row per input galaxy, ``ok``, ``no_clumps`` or
  ``failed`` with the stage and the reason; the number of rows equals the
  number of input galaxies, always.

Memory is bounded by the largest shard, never by the survey: every output is
written with a :class:`pyarrow.parquet.ParquetWriter` shard by shard, and the
FITS table is streamed from the finished Parquet file in row batches
(:mod:`clumpcat.catalogue.fits_table`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from clumpcat import settings
from clumpcat.catalogue.datamodel import DataModel, load_datamodel
from clumpcat.catalogue.fits_table import write_fits_catalogue
from clumpcat.catalogue.release import make_release
from clumpcat.constants import (
    EXTINCTION_R,
    FLUX_RATIO_BAND,
    HSC_BANDS,
    HSC_EXTINCTION_R,
    LABEL_IDS,
    NANOMAGGY_JY,
    NANOMAGGY_ZEROPOINT,
    SCORE_THRESHOLD,
    SDSS_BANDS,
    SURVEY_EXTINCTION_R,
)
from clumpcat.errors import InputError
from clumpcat.ledger import LEDGER_COLUMNS
from clumpcat.logs import progress
from clumpcat.manifests import ManifestPaths, manifest_help
from clumpcat.photometry.extinction import extinction_coefficients, survey_for_bands
from clumpcat.survey.galaxies import validate_galaxies
from clumpcat.tables import read_table

__all__ = [
    "STAGE_ORDER",
    "CATALOGUE_BANDS",
    "CATALOGUE_LEDGER_COLUMNS",
    "CatalogueSummary",
    "find_shards",
    "last_status_path",
    "catalogue_rows",
    "shard_ledger",
    "build_catalogue",
    "write_fits_catalogue",
    "configure_parser",
    "run",
]

log = logging.getLogger(__name__)

#: Per-shard stages in pipeline order; the last status table present wins.
STAGE_ORDER: tuple[str, ...] = (
    "validate",
    "simulate",
    "inject",
    "fetch",
    "render",
    "detect",
    "postprocess",
    "photometry",
)

#: Bands of the catalogue's clump and host columns: SDSS ugriz (the paper's 67
#: columns) and HSC's y (columns after the 67); a row fills its survey's bands.
CATALOGUE_BANDS: tuple[str, ...] = SDSS_BANDS + tuple(b for b in HSC_BANDS if b not in SDSS_BANDS)

#: R_b of a band that the row's survey lacks but a host magnitude may still be
#: in (an SDSS u magnitude on an HSC row): the coefficient of the survey that has it.
_OTHER_SURVEY_R: dict[str, float] = {**HSC_EXTINCTION_R, **EXTINCTION_R}

#: Columns of ``ledger.parquet``: the ledger's own plus counts and the shard.
CATALOGUE_LEDGER_COLUMNS: dict[str, tuple[str, str]] = {
    **LEDGER_COLUMNS,
    "shard": ("", "Shard folder the galaxy was processed in"),
    "n_candidates": ("", "Post-processed clump candidates, every score"),
    "n_clumps": ("", "Candidates in the catalogue (score >= the catalogue threshold)"),
}


@dataclass
class CatalogueSummary:
    """What :func:`build_catalogue` wrote.

    Attributes
    ----------
    n_galaxies : int
        Input galaxies (= ledger rows).
    n_candidates : int
        Rows of ``clumps.parquet``.
    n_catalogue : int
        Rows of the catalogue.
    status_counts : dict
        Ledger status -> count.
    score_threshold : float
    paths : dict of str to Path
    """

    n_galaxies: int = 0
    n_candidates: int = 0
    n_catalogue: int = 0
    status_counts: dict[str, int] = field(default_factory=dict)
    score_threshold: float = SCORE_THRESHOLD
    paths: dict[str, Path] = field(default_factory=dict)


def find_shards(
    shards: Sequence[str | Path] | None = None, shards_dir: str | Path | None = None
) -> list[Path]:
    """Shard folders from an explicit list and/or every subfolder of a root.

    Raises
    ------
    InputError
        If no shard is given, a folder does not exist or lacks ``galaxies.parquet``.
    """
    found: list[Path] = [Path(s) for s in (shards or [])]
    if shards_dir is not None:
        root = Path(shards_dir)
        if not root.is_dir():
            raise InputError(f"--shards-dir {root}: no such folder")
        found += sorted(p for p in root.iterdir() if p.is_dir() and (p / "galaxies.parquet").exists())
    if not found:
        raise InputError("no shards: give --shards DIR [DIR ...] or --shards-dir ROOT")
    bad = [str(p) for p in found if not (p / "galaxies.parquet").is_file()]
    if bad:
        raise InputError(f"shard folder(s) without galaxies.parquet: {', '.join(bad)}")
    return found


def last_status_path(shard: Path) -> Path | None:
    """The status table of the latest stage present in ``shard`` (or None)."""
    present = {p.stem.removeprefix("status-"): p for p in shard.glob("status-*.parquet")}
    for stage in reversed(STAGE_ORDER):
        if stage in present:
            return present[stage]
    if present:
        return present[sorted(present)[-1]]
    return None


def _uint64_ids(values: pd.Series) -> pa.Array:
    """Parse SDSS ids (integers or digit strings) into uint64; anything else -> null.

    SDSS ``specObjID`` values of plates above 8191 exceed 2**63, hence unsigned.
    """
    out = []
    for v in values.tolist():
        number = None
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
            number = int(v)
        elif isinstance(v, str) and v.strip().isdigit():
            number = int(v.strip())
        elif isinstance(v, float) and np.isfinite(v) and v.is_integer():
            number = int(v)
        out.append(number if number is not None and 0 < number < 1 << 64 else None)
    return pa.array(out, type=pa.uint64())


def _host_columns(galaxies: pd.DataFrame, bands: Sequence[str]) -> pd.DataFrame:
    """Host-galaxy catalogue columns, indexed by objid (no extinction yet)."""
    g = galaxies
    nan = np.full(len(g), np.nan)

    def col(name):
        return pd.to_numeric(g[name], errors="coerce").to_numpy(float) if name in g.columns else nan

    host = pd.DataFrame(
        {
            "galaxy_ra": col("ra"),
            "galaxy_dec": col("dec"),
            "galaxy_z": col("redshift"),
            "galaxy_expAB_r": col("axis_ratio"),
            "galaxy_expRad_r": col("exp_rad_r"),
            "galaxy_lmass": col("log_mstar"),
            "galaxy_lssfr": col("log_ssfr"),
        },
        index=g["objid"].astype(str),
    )
    for b in bands:
        mag = col(f"host_mag_{b}")
        host[f"galaxy_mag_{b}"] = mag
        host[f"galaxy_mag_err_{b}"] = col(f"host_mag_err_{b}")
        host[f"galaxy_flux_{b}"] = NANOMAGGY_JY * np.power(10.0, (NANOMAGGY_ZEROPOINT - mag) / 2.5)
    return host


def catalogue_rows(
    galaxies: pd.DataFrame,
    photometry: pd.DataFrame,
    model: DataModel,
    *,
    score_threshold: float = SCORE_THRESHOLD,
    first_clump_id: int = 1,
    bands: Sequence[str] = CATALOGUE_BANDS,
) -> pa.Table:
    """Catalogue rows of one shard, conformed to the data model.

    Parameters
    ----------
    galaxies : DataFrame
        The shard's validated galaxy table.
    photometry : DataFrame
        The shard's ``photometry.parquet``.
    model : DataModel
    score_threshold : float
        Keep candidates with ``score >= score_threshold``.
    first_clump_id : int
        ``clump_id`` of the first row; ids run on from it.
    bands : sequence of str
        Bands of the ``galaxy_*`` columns (the ``clump_*`` ones are taken
        from the photometry by name).

    Returns
    -------
    pyarrow.Table
        Columns of the data model in order; rows ordered as the galaxies,
        then by decreasing score. Host values come from the galaxy table:
        ``galaxy_expAB_r`` from ``axis_ratio``, ``galaxy_expRad_r`` from
        ``exp_rad_r``, ``galaxy_mag_<b>`` from ``host_mag_<b>`` (fluxes in
        Jy from them), ``galaxy_mag_corr_<b> = galaxy_mag_<b> - R_b
        E(B-V)_galaxy`` with the R_b of the row's survey (photometry's
        ``survey``, else told by its bands: y means HSC), and of the survey
        that has the band where the row's lacks it (SDSS u on an HSC row);
        ``clump_flux_ratio_band`` the survey's flux-ratio band;
        ``specobjid``/``dr7objid`` where the table has them.
    """
    phot = photometry.copy()
    phot["objid"] = phot["objid"].astype(str)
    phot = phot[pd.to_numeric(phot["score"], errors="coerce") >= score_threshold]
    order = {o: i for i, o in enumerate(galaxies["objid"].astype(str))}
    unknown = sorted(set(phot["objid"]) - set(order))
    if unknown:
        raise InputError(
            f"photometry rows for objid(s) not in the shard's galaxy table: {', '.join(unknown[:10])}"
        )
    phot = phot.assign(_g=phot["objid"].map(order)).sort_values(["_g", "score"], ascending=[True, False])
    phot = phot.drop(columns="_g").reset_index(drop=True)
    host = _host_columns(galaxies, bands).reindex(phot["objid"]).reset_index(drop=True)
    out = pd.DataFrame(index=phot.index)
    out["clump_id"] = np.arange(first_clump_id, first_clump_id + len(phot), dtype=np.int64)
    labels = phot["label"].astype(str)
    bad_labels = sorted(set(labels) - set(LABEL_IDS))
    if bad_labels:
        raise InputError(
            f"photometry: label must be one of {', '.join(LABEL_IDS)}, got {', '.join(bad_labels)}"
        )
    out["clump_label_id"] = labels.map(LABEL_IDS).astype(np.int16)
    out["clump_label_name"] = labels
    out["clump_score"] = phot["score"].astype(float)
    out["clump_centre_ra"] = phot["ra"].astype(float)
    out["clump_centre_dec"] = phot["dec"].astype(float)
    for name in model.names:
        if name in phot.columns and name not in out.columns:
            out[name] = phot[name]
    for name in host.columns:
        out[name] = host[name].to_numpy()
    gal_ebv = (
        phot["galaxy_ebv"].to_numpy(float) if "galaxy_ebv" in phot.columns else np.full(len(phot), np.nan)
    )
    survey = _row_surveys(phot)
    out["survey"] = survey
    if "clump_flux_ratio_band" not in phot.columns:
        out["clump_flux_ratio_band"] = survey.map(FLUX_RATIO_BAND)
    r_b = {name: {**_OTHER_SURVEY_R, **extinction_coefficients(name)} for name in set(survey)}
    for b in bands:
        coeff = survey.map(lambda name, b=b: r_b[name].get(b, np.nan)).to_numpy(float)
        out[f"galaxy_mag_corr_{b}"] = out[f"galaxy_mag_{b}"].to_numpy(float) - coeff * gal_ebv
    out["objid"] = phot["objid"]
    for c in ("x", "y", "box_x0", "box_y0", "box_x1", "box_y1"):
        if c in phot.columns:
            out[c] = phot[c].astype(float)
    if "fwhm_r_px" in phot.columns:
        out["FWHM_r_px"] = phot["fwhm_r_px"].astype(float)
    table = pa.Table.from_pandas(out, preserve_index=False)
    ids = galaxies.set_index(galaxies["objid"].astype(str))
    for id_col in ("specobjid", "dr7objid"):
        if id_col in galaxies.columns:
            values = ids[id_col].reindex(phot["objid"])
            table = table.append_column(id_col, _uint64_ids(values))
    return model.conform(table)


def _row_surveys(phot: pd.DataFrame) -> pd.Series:
    """Survey of each photometry row: its ``survey`` column, else told by the bands measured."""
    fallback = survey_for_bands(
        c.removeprefix("flux_nmgy_") for c in phot.columns if c.startswith("flux_nmgy_")
    )
    if "survey" not in phot.columns:
        return pd.Series(fallback, index=phot.index, dtype=object)
    survey = phot["survey"].astype(object).where(phot["survey"].notna(), fallback).astype(str)
    unknown = sorted(set(survey) - set(SURVEY_EXTINCTION_R))
    if unknown:
        raise InputError(
            f"photometry: survey must be one of {', '.join(SURVEY_EXTINCTION_R)}, got {', '.join(unknown)}"
        )
    return survey


def shard_ledger(
    galaxies: pd.DataFrame,
    status: pd.DataFrame | None,
    n_candidates: pd.Series,
    n_clumps: pd.Series,
    *,
    shard: str,
    status_name: str,
    score_threshold: float,
) -> pd.DataFrame:
    """Ledger rows of one shard: exactly one per galaxy of its galaxy table.

    Parameters
    ----------
    galaxies : DataFrame
        The shard's galaxy table (its ``objid`` defines the rows).
    status : DataFrame or None
        The shard's last status table; None marks every galaxy failed.
    n_candidates, n_clumps : Series
        Candidates (every score) and catalogue rows per objid.
    shard, status_name : str
        Names for the ``shard`` column and the reasons.
    score_threshold : float

    Returns
    -------
    DataFrame
        Columns of :data:`CATALOGUE_LEDGER_COLUMNS`. A galaxy still ``ok``
        with no catalogue row becomes ``no_clumps``; one missing from the
        status table is ``failed`` at stage ``catalogue``.
    """
    objids = galaxies["objid"].astype(str).to_numpy()
    if status is not None:
        st = (
            status.assign(objid=status["objid"].astype(str))
            .drop_duplicates("objid", keep="last")
            .set_index("objid")
        )
        st = st.reindex(objids)
    else:
        st = pd.DataFrame(index=objids, columns=["status", "stage", "reason"], dtype=object)
    n_cand = n_candidates.reindex(objids).fillna(0).astype(np.int64).to_numpy()
    n_cat = n_clumps.reindex(objids).fillna(0).astype(np.int64).to_numpy()
    status_col = np.array(st["status"].tolist(), dtype=object)
    stage = np.array(st["stage"].fillna("").astype(str).tolist(), dtype=object)
    reason = np.array(st["reason"].fillna("").astype(str).tolist(), dtype=object)
    missing = pd.isna(status_col)
    stage[missing] = "catalogue"
    reason[missing] = "no status table in shard" if status is None else f"no row in {status_name}"
    status_col[missing] = "failed"
    ok = status_col == "ok"
    empty = ok & (n_cat == 0)
    status_col[empty] = "no_clumps"
    below = empty & (n_cand > 0)
    reason[below] = [f"{n} candidate(s), none with score >= {score_threshold:g}" for n in n_cand[below]]
    return pd.DataFrame(
        {
            "objid": objids,
            "status": status_col.astype(str),
            "stage": stage.astype(str),
            "reason": reason.astype(str),
            "shard": shard,
            "n_candidates": n_cand,
            "n_clumps": n_cat,
        }
    )


#: Photometry settings copied from photometry.parquet into the catalogue metadata.
_PHOT_SETTINGS = ("aperture_correction", "aperture_radius_fwhm", "annulus_fwhm", "background")


def _photometry_settings(shard_dirs: Sequence[Path]) -> dict[bytes, bytes]:
    """Photometry settings of the shards (the first shard that has them; warn if they differ)."""
    found: dict[bytes, bytes] = {}
    for shard in shard_dirs:
        path = shard / "photometry.parquet"
        if not path.exists():
            continue
        meta = pq.read_schema(path).metadata or {}
        these = {f"photometry_{k}".encode(): meta[k.encode()] for k in _PHOT_SETTINGS if k.encode() in meta}
        if found and these and these != found:
            log.warning(
                "shard %s: photometry settings %s differ from the first shard's %s", shard, these, found
            )
        found = found or these
    return found


def _clumps_schema(paths: list[Path]) -> pa.Schema | None:
    schemas = []
    for p in paths:
        s = pq.read_schema(p)
        s = s.remove_metadata()
        if "objid" in s.names:
            s = s.set(s.get_field_index("objid"), pa.field("objid", pa.string()))
        s = pa.schema([f.remove_metadata() for f in s])
        schemas.append(s)
    if not schemas:
        return None
    try:
        return pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise InputError(f"clumps.parquet files of the shards disagree in column types ({exc})") from exc


def _conform_to(table: pa.Table, schema: pa.Schema) -> pa.Table:
    arrays = []
    for f in schema:
        if f.name in table.column_names:
            arrays.append(table[f.name].cast(f.type))
        else:
            arrays.append(pa.nulls(table.num_rows, type=f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def build_catalogue(
    shard_dirs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    score_threshold: float = SCORE_THRESHOLD,
    datamodel: DataModel | None = None,
    write_fits: bool = True,
    input_galaxies: str | Path | None = None,
) -> CatalogueSummary:
    """Merge shards into clumps, catalogue (Parquet, FITS) and ledger, streaming.

    Parameters
    ----------
    shard_dirs : sequence of path
        Shard folders (see the module docstring for their files).
    out_dir : path
        Results folder; ``clumps.parquet``, ``catalogue.parquet``,
        ``catalogue.fits`` and ``ledger.parquet`` are written there (each to a
        temporary name, then renamed, so a killed run leaves no half file).
    score_threshold : float
        Catalogue cut on the detection score (default 0.3, the released
        code's threshold; ``clumps.parquet`` keeps every score).
    datamodel : DataModel, optional
        Default :func:`clumpcat.catalogue.datamodel.load_datamodel`.
    write_fits : bool
        Also write ``catalogue.fits``.
    input_galaxies : path, optional
        The run's whole input galaxy table; the ledger must then hold exactly
        its galaxies (else the objids in no shard, or in no input, are named).

    Returns
    -------
    CatalogueSummary

    Raises
    ------
    InputError
        If a shard lacks a file it needs (naming the shard and the file), or
        the ledger would not hold exactly one row per input galaxy.
    """
    model = datamodel or load_datamodel()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shard_dirs = [Path(s) for s in shard_dirs]
    clump_paths = [s / "clumps.parquet" for s in shard_dirs if (s / "clumps.parquet").exists()]
    clumps_schema = _clumps_schema(clump_paths)
    paths = {
        "clumps": out_dir / "clumps.parquet",
        "catalogue": out_dir / "catalogue.parquet",
        "ledger": out_dir / "ledger.parquet",
    }
    tmp = {k: p.with_name(f".{p.name}.tmp") for k, p in paths.items()}
    cat_meta = {**model.arrow_schema().metadata, b"score_threshold": str(score_threshold).encode()}
    cat_meta.update(_photometry_settings(shard_dirs))
    cat_schema = model.arrow_schema().with_metadata(cat_meta)
    ledger_schema = pa.schema(
        [
            pa.field(
                name,
                pa.int64() if name.startswith("n_") else pa.string(),
                metadata={"unit": unit, "description": desc},
            )
            for name, (unit, desc) in CATALOGUE_LEDGER_COLUMNS.items()
        ]
    )
    summary = CatalogueSummary(score_threshold=score_threshold, paths=dict(paths))
    next_id = 1
    counts: dict[str, int] = {}
    writers = {
        "catalogue": pq.ParquetWriter(tmp["catalogue"], cat_schema),
        "ledger": pq.ParquetWriter(tmp["ledger"], ledger_schema),
    }
    if clumps_schema is not None:
        writers["clumps"] = pq.ParquetWriter(tmp["clumps"], clumps_schema)
    try:
        for shard in progress(shard_dirs, desc="catalogue"):
            galaxies = validate_galaxies(
                read_table(shard / "galaxies.parquet"), str(shard / "galaxies.parquet")
            )
            n_cand = pd.Series(dtype=np.int64)
            if (shard / "clumps.parquet").exists():
                clumps_tab = pq.read_table(shard / "clumps.parquet")
                if "objid" in clumps_tab.column_names:
                    idx = clumps_tab.schema.get_field_index("objid")
                    clumps_tab = clumps_tab.set_column(idx, "objid", clumps_tab["objid"].cast(pa.string()))
                writers["clumps"].write_table(_conform_to(clumps_tab, clumps_schema))
                summary.n_candidates += clumps_tab.num_rows
                n_cand = clumps_tab["objid"].to_pandas().value_counts()
            status_path = last_status_path(shard)
            status = read_table(status_path) if status_path is not None else None
            phot_path = shard / "photometry.parquet"
            if phot_path.exists():
                phot = read_table(phot_path)
                rows = catalogue_rows(
                    galaxies, phot, model, score_threshold=score_threshold, first_clump_id=next_id
                )
            else:
                ok = status is not None and (status["status"] == "ok").any() and len(n_cand) > 0
                if ok:
                    raise InputError(f"shard {shard}: photometry.parquet missing, but galaxies have clumps")
                rows = model.conform(pa.table({"clump_id": pa.array([], pa.int64())}))
            next_id += rows.num_rows
            writers["catalogue"].write_table(rows.cast(cat_schema))
            summary.n_catalogue += rows.num_rows
            n_cat = rows["objid"].to_pandas().value_counts() if rows.num_rows else pd.Series(dtype=np.int64)
            ledger = shard_ledger(
                galaxies,
                status,
                n_cand,
                n_cat,
                shard=shard.name,
                status_name=status_path.name if status_path else "",
                score_threshold=score_threshold,
            )
            if len(ledger) != len(galaxies):
                raise InputError(f"shard {shard}: ledger has {len(ledger)} rows for {len(galaxies)} galaxies")
            for k, v in ledger["status"].value_counts().items():
                counts[k] = counts.get(k, 0) + int(v)
            summary.n_galaxies += len(galaxies)
            writers["ledger"].write_table(
                pa.Table.from_pandas(ledger, schema=ledger_schema, preserve_index=False)
            )
    except BaseException:
        for w in writers.values():
            w.close()
        for t in tmp.values():
            t.unlink(missing_ok=True)
        raise
    for w in writers.values():
        w.close()
    if clumps_schema is None:
        pq.write_table(pa.table({"objid": pa.array([], pa.string())}), tmp["clumps"])
    try:
        n_ledger = pq.ParquetFile(tmp["ledger"]).metadata.num_rows
        if n_ledger != summary.n_galaxies:  # the contract: every input galaxy accounted for
            raise InputError(f"ledger has {n_ledger} rows for {summary.n_galaxies} input galaxies")
        if input_galaxies is not None:
            _check_input_count(input_galaxies, tmp["ledger"], summary.n_galaxies)
    except BaseException:
        for t in tmp.values():
            t.unlink(missing_ok=True)
        raise
    for k in paths:
        os.replace(tmp[k], paths[k])
    summary.status_counts = counts
    if write_fits:
        paths["fits"] = write_fits_catalogue(paths["catalogue"], out_dir / "catalogue.fits", model)
        summary.paths["fits"] = paths["fits"]
    log.info(
        "catalogue: %d galaxies (%s), %d candidates, %d in the catalogue (score >= %g)",
        summary.n_galaxies,
        ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
        summary.n_candidates,
        summary.n_catalogue,
        score_threshold,
    )
    return summary


def _check_input_count(galaxies_path: str | Path, ledger_path: Path, n_ledger: int) -> None:
    """Raise unless the ledger holds exactly the input table's galaxies."""
    path = Path(galaxies_path)
    if path.suffix.lower() in (".parquet", ".pq") and path.exists():
        n_input = pq.ParquetFile(path).metadata.num_rows
    else:
        n_input = len(read_table(path, columns=["objid"]))
    if n_input == n_ledger:
        return
    inputs = set(read_table(path, columns=["objid"])["objid"].astype(str))
    ledger = set(pq.read_table(ledger_path, columns=["objid"])["objid"].to_pylist())
    lost = sorted(inputs - ledger)
    extra = sorted(ledger - inputs)
    raise InputError(
        f"{path}: {n_input} input galaxies but {n_ledger} ledger rows; "
        f"in no shard: {', '.join(lost[:10]) or '-'}; not in the input: {', '.join(extra[:10]) or '-'}"
    )


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``clumpcat catalogue`` options."""
    parser.add_argument(
        "--shards",
        nargs="+",
        default=[],
        action=ManifestPaths,
        metavar="DIR",
        help=manifest_help("shard folders to merge"),
    )
    parser.add_argument("--shards-dir", metavar="ROOT", help="merge every shard folder under ROOT")
    parser.add_argument("--out-dir", required=True, help="results folder for the merged tables")
    parser.add_argument(
        "--galaxies", help="the run's input galaxy table: check that the ledger holds exactly its galaxies"
    )
    parser.add_argument(
        "--score-threshold",
        type=float,
        default=SCORE_THRESHOLD,
        help=f"catalogue cut on the detection score (default {SCORE_THRESHOLD}); clumps.parquet keeps all",
    )
    parser.add_argument("--datamodel", help="catalogue data-model YAML (default: the shipped one)")
    parser.add_argument("--no-fits", action="store_true", help="do not write catalogue.fits")
    parser.add_argument("--release", action="store_true", help="also assemble OUT_DIR/release/")
    parser.add_argument("--config", help="pipeline config file recorded in the release provenance")
    parser.add_argument(
        "--effective-config",
        metavar="JSON",
        help="the configuration that ran, as JSON (the workflow passes it): recorded and described",
    )
    parser.add_argument("--model", help="detector weights; their SHA-256 goes into the provenance")
    parser.add_argument("--hats", action="store_true", help="add a HATS-partitioned copy (needs hats-import)")


def run(args: argparse.Namespace) -> int:
    """Run ``clumpcat catalogue``."""
    if not 0.0 <= args.score_threshold <= 1.0:
        raise InputError(f"--score-threshold must be in [0, 1], got {args.score_threshold}")
    effective = None
    if args.effective_config:
        try:
            effective = json.loads(args.effective_config)
        except json.JSONDecodeError as exc:
            raise InputError(f"--effective-config: not valid JSON ({exc})") from exc
        effective = settings.effective_config(effective)
    model = load_datamodel(args.datamodel)
    shards = find_shards(args.shards, args.shards_dir)
    summary = build_catalogue(
        shards,
        args.out_dir,
        score_threshold=args.score_threshold,
        datamodel=model,
        write_fits=not args.no_fits,
        input_galaxies=args.galaxies,
    )
    if args.release:
        make_release(
            args.out_dir,
            config_path=args.config,
            model_path=args.model,
            datamodel=model,
            hats=args.hats,
            summary=summary,
            effective_config=effective,
        )
    return 0
