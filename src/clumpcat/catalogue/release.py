"""The release bundle: ``results/release/``, ready to upload (e.g. to Zenodo).

:func:`make_release` copies the catalogue (Parquet and FITS) and the ledger
into ``release/`` and adds:

- ``README.md`` generated from the data model (every column with its type,
  unit and description) and the run's counts;
- ``provenance.json``: the config file's content, the model file's SHA-256,
  package versions, the git commit of the clumpcat source (when it is a git
  checkout), Python and platform, the UTC date;
- ``SHA256SUMS``: one line per file, verifiable with ``sha256sum -c SHA256SUMS``
  from inside ``release/``;
- optionally ``hats/``: a HATS-partitioned copy of the catalogue for LSDB
  users, made with the ``hats-import`` package when it is installed (an
  optional dependency; without it the step is skipped with a log message).

Reruns over new HSC cross-matches (a configuration with
``crossmatch.hsc_objects``) process only the new galaxies, so their catalogue
holds only those: the release then unites it with the earlier release it
replaces (:func:`clumpcat.catalogue.merge.union_catalogues`): every galaxy
once, from the latest run that processed it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

import pyarrow.parquet as pq

from clumpcat import settings
from clumpcat.catalogue.datamodel import DataModel, load_datamodel
from clumpcat.catalogue.fits_table import write_fits_catalogue
from clumpcat.catalogue.merge import union_catalogues
from clumpcat.errors import InputError

__all__ = [
    "RELEASE_FILES",
    "PROVENANCE_PACKAGES",
    "sha256_file",
    "apcorr_sources",
    "apcorr_text",
    "release_readme",
    "provenance",
    "write_sha256sums",
    "write_hats",
    "unites_runs",
    "make_release",
]

log = logging.getLogger(__name__)

#: Files copied from the results folder into the release.
RELEASE_FILES: tuple[str, ...] = ("catalogue.parquet", "catalogue.fits", "ledger.parquet")
#: Packages whose versions the provenance records (absent ones are null).
PROVENANCE_PACKAGES: tuple[str, ...] = (
    "clumpcat",
    "numpy",
    "scipy",
    "pandas",
    "pyarrow",
    "astropy",
    "photutils",
    "dustmaps",
    "torch",
    "torchvision",
    "snakemake",
    "hats",
    "hats-import",
)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


_BACKGROUND_TEXT = {
    "median": "the median of the annulus (App. E)",
    "mean": "the clipped mean of the annulus",
    "plane": "a clipped plane fitted to the annulus",
    "radial": "a radial profile of the host through the annulus",
    "quadratic": "a clipped quadratic surface fitted to the annulus",
    "joint": "a quadratic host surface fitted together with the clump's PSF to the aperture and the annulus",
    "auto": (
        "a quadratic host surface fitted together with the clump's PSF to the aperture and the annulus "
        "where the cutout carries the band's PSF image, else a clipped quadratic surface fitted to the annulus"
    ),
}


def method_text(effective_config: Mapping | None) -> str:
    """What the run applied, in words, from its effective configuration.

    Parameters
    ----------
    effective_config : mapping, optional
        :func:`clumpcat.settings.effective_config` of the run; without it the
        defaults of this version are described and the text says so.

    Returns
    -------
    str
        One paragraph for the release README.
    """
    cfg = effective_config_or_defaults(effective_config)
    post, phot = cfg["postprocess"], cfg["photometry"]
    host = (
        f"candidates outside the host galaxy's segment ({post['host_nsigma']:g} x the background RMS "
        "of the PSF-smoothed r band) dropped"
        if post["host_mask"]
        else "no host-galaxy mask"
    )
    text = (
        f"Candidates: NMS at IoU {post['nms_iou']:g}, merged within {post['merge_fwhm']:g} x the r-band "
        f"PSF FWHM ({post['linkage']} linkage), {host}; catalogue cut at score "
        f"{cfg['catalogue']['score_threshold']:g}. Clump fluxes come from a circular aperture of 1.125 x "
        "the band's PSF FWHM, minus the host's light under the clump from an annulus of 1.5-2.5 x FWHM, "
        f"estimated as {_BACKGROUND_TEXT[phot['background']]} (other clumps and the area outside the "
        "host masked, the clump's own PSF wing removed), divided by the PSF's encircled energy within "
        "the aperture at the clump's position (bad pixels left out): that of the cutout's own PSF image "
        "(`PSF_<BAND>` HDU) where it has one, else of an analytic "
        f"{phot['aperture_correction']} PSF of the band's FWHM; `apcorr_source_<b>` says which, row by "
        "row (`psf` or the profile). Flux errors hold the pixel noise in the aperture and in the "
        "background, the host's structure under the annulus and the aperture correction's uncertainty "
        "(PSF width, centroid and, for the analytic fallback, the profile's shape)."
    )
    if effective_config is None:
        text += " (No run configuration was given: these are the defaults of this version.)"
    else:
        text += " The full configuration of the run is in provenance.json (`effective_config`)."
    return text


def effective_config_or_defaults(effective_config: Mapping | None) -> dict:
    """The given effective configuration, or this version's defaults."""
    if effective_config is not None:
        return dict(effective_config)
    return settings.effective_config({})


def apcorr_text(sources: Mapping | None) -> str:
    """How many rows per band took their aperture correction from which PSF (README sentence).

    Parameters
    ----------
    sources : mapping, optional
        Band -> {source: rows}, as :func:`apcorr_sources` counts them.
    """
    if not sources:
        return ""
    parts = [
        f"{band}: " + ", ".join(f"{n} {name}" for name, n in sorted(found.items()))
        for band, found in sources.items()
    ]
    return "Aperture corrections in this release: " + "; ".join(parts) + "."


def apcorr_sources(catalogue: str | Path) -> dict[str, dict[str, int]]:
    """Rows per band and aperture-correction source (``apcorr_source_<b>``) in a catalogue file."""
    names = [n for n in pq.read_schema(catalogue).names if n.startswith("apcorr_source_")]
    if not names:
        return {}
    table = pq.read_table(catalogue, columns=names)
    out = {}
    for name in names:
        counts = table[name].to_pandas().dropna().value_counts()
        if len(counts):
            out[name.removeprefix("apcorr_source_")] = {str(k): int(v) for k, v in counts.items()}
    return out


def release_readme(
    model: DataModel,
    counts: dict | None = None,
    effective_config: Mapping | None = None,
    apcorr: Mapping | None = None,
) -> str:
    """The release README (Markdown), generated from the data model and the run's settings.

    Parameters
    ----------
    model : DataModel
    counts : dict, optional
        ``n_galaxies``, ``n_catalogue``, ``score_threshold``,
        ``status_counts`` to report.
    effective_config : mapping, optional
        The run's effective configuration; the method paragraph describes it.
    apcorr : mapping, optional
        Band -> {aperture-correction source: rows} (:func:`apcorr_sources`).

    Returns
    -------
    str
    """
    counts = counts or {}
    lines = [
        f"# {model.name}",
        "",
        model.description,
        "",
        "## Files",
        "",
        "| file | content |",
        "|---|---|",
        "| `catalogue.parquet` | the catalogue; units and descriptions in each field's metadata |",
        "| `catalogue.fits` | the same table as a FITS binary table (`TUNITn`, `TCOMMn`) |",
        "| `ledger.parquet` | one row per input galaxy: `ok`, `no_clumps` or `failed` with stage and reason |",
        "| `provenance.json` | configuration, model checksum, package versions, git commit, date |",
        "| `SHA256SUMS` | checksums: run `sha256sum -c SHA256SUMS` in this folder |",
        "",
    ]
    if counts:
        lines += ["## This release", ""]
        if "n_galaxies" in counts:
            lines.append(f"- input galaxies: {counts['n_galaxies']}")
        for status, n in sorted((counts.get("status_counts") or {}).items()):
            lines.append(f"  - {status}: {n}")
        if "n_catalogue" in counts:
            lines.append(f"- clump candidates in the catalogue: {counts['n_catalogue']}")
        if "score_threshold" in counts:
            lines.append(f"- detection score threshold: {counts['score_threshold']:g}")
        lines.append("")
    lines += [
        "## Conventions",
        "",
        "Fluxes are in Jansky (1 nanomaggy = 3.631e-6 Jy), magnitudes are AB, "
        "coordinates are ICRS degrees. "
        + method_text(effective_config)
        + " "
        + (apcorr_text(apcorr) + " " if apcorr else "")
        + "`clump_mag_<b>` is NaN where the flux is not positive; `clump_mag_lim_<b>` "
        "then gives a 5-sigma upper limit. Extinction: A_b = R_b x E(B-V), SFD (1998) "
        "E(B-V), Schlafly & Finkbeiner (2011) R_b. Pixel coordinates are 0-based in the "
        "cutout's FITS frame. In FITS, null integers are `TNULLn`, null SDSS ids are 0.",
        "",
        f"The first {len(model.released_names)} columns are those of the paper's released "
        "catalogue (Table 5), with the published names; the others were added later.",
        "",
        "## Columns",
        "",
        "| # | name | type | unit | description |",
        "|---|---|---|---|---|",
    ]
    for i, c in enumerate(model.columns, start=1):
        lines.append(f"| {i} | `{c.name}` | {c.dtype} | {_md_cell(c.unit)} | {_md_cell(c.description)} |")
    return "\n".join(lines) + "\n"


def _git_commit(start: Path) -> str | None:
    try:
        result = subprocess.run(
            ["git", "-C", str(start), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    text = result.stdout.strip()
    return text if result.returncode == 0 and text else None


def provenance(
    config_path: str | Path | None = None,
    model_path: str | Path | None = None,
    extra: dict | None = None,
    effective_config: Mapping | None = None,
) -> dict:
    """Provenance record of a release.

    Parameters
    ----------
    config_path : path, optional
        Pipeline config; its text (and, for YAML/JSON, its parsed content)
        is recorded.
    effective_config : mapping, optional
        The configuration that ran (the config file with ``--config``
        overrides and defaults filled in), recorded as ``effective_config``.
    model_path : path, optional
        Detector weights; their SHA-256 and size are recorded.
    extra : dict, optional
        More entries (e.g. counts).

    Returns
    -------
    dict
        ``created_utc``, ``git_commit``, ``python``, ``platform``,
        ``packages``, ``config``, ``model``, plus ``extra``.

    Raises
    ------
    InputError
        If a given config or model file does not exist.
    """
    record: dict = {
        "created_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_commit": _git_commit(Path(__file__).resolve().parent),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {},
        "config": None,
        "effective_config": None if effective_config is None else dict(effective_config),
        "model": None,
    }
    for name in PROVENANCE_PACKAGES:
        try:
            record["packages"][name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            record["packages"][name] = None
    if config_path is not None:
        path = Path(config_path)
        if not path.is_file():
            raise InputError(f"--config {path}: no such file")
        text = path.read_text(encoding="utf-8")
        parsed = None
        try:
            import yaml

            parsed = yaml.safe_load(text)
        except Exception:  # noqa: BLE001 - the raw text is kept either way
            parsed = None
        record["config"] = {"path": str(path), "sha256": sha256_file(path), "text": text, "content": parsed}
    if model_path is not None:
        path = Path(model_path)
        if not path.is_file():
            raise InputError(f"--model {path}: no such file")
        record["model"] = {"path": str(path), "sha256": sha256_file(path), "bytes": path.stat().st_size}
    if extra:
        record.update(extra)
    return record


def write_sha256sums(folder: str | Path) -> Path:
    """Write ``folder/SHA256SUMS`` for every file below ``folder`` (sorted, relative paths)."""
    folder = Path(folder)
    lines = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "SHA256SUMS"):
        rel = path.relative_to(folder).as_posix()
        lines.append(f"{sha256_file(path)}  {rel}")
    out = folder / "SHA256SUMS"
    out.write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")
    return out


def write_hats(catalogue_parquet: str | Path, out_dir: str | Path, name: str = "clumpcat") -> Path | None:
    """A HATS-partitioned copy of the catalogue, or None if ``hats-import`` is missing.

    Uses ``hats_import`` (optional; install ``hats-import`` to enable) with
    ``clump_centre_ra``/``clump_centre_dec`` as the coordinates, on an
    in-process Dask client with one thread.

    Parameters
    ----------
    catalogue_parquet : path
    out_dir : path
        Folder that receives ``out_dir/name/``.
    name : str
        Catalogue (artifact) name.

    Returns
    -------
    Path or None
        The HATS catalogue folder, or None when the package is unavailable.
    """
    try:
        from dask.distributed import Client
        from hats_import.catalog.arguments import ImportArguments
        from hats_import.pipeline import pipeline_with_client
    except ImportError:
        log.info("hats-import is not installed: HATS copy skipped (pip install hats-import to enable it)")
        return None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    args = ImportArguments(
        input_file_list=[str(catalogue_parquet)],
        file_reader="parquet",
        ra_column="clump_centre_ra",
        dec_column="clump_centre_dec",
        output_path=str(out_dir),
        output_artifact_name=name,
        dask_tmp=str(out_dir / ".dask"),
        dask_n_workers=1,
        dask_threads_per_worker=1,
        progress_bar=False,
        resume=False,
    )
    # Threads in this process: no worker processes to spawn (and no
    # re-import of the caller's __main__), one core as the shard jobs.
    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as client:
        pipeline_with_client(args, client)
    shutil.rmtree(out_dir / ".dask", ignore_errors=True)
    return out_dir / name


def unites_runs(effective_config: Mapping | None) -> bool:
    """Whether the release unites its catalogue with the earlier release's.

    True for reruns over new HSC cross-matches (``crossmatch.hsc_objects``
    set): each run processes only galaxies no earlier run finished.
    """
    section = (effective_config or {}).get("crossmatch") or {}
    return bool(section.get("hsc_objects"))


def make_release(
    results_dir: str | Path,
    *,
    release_dir: str | Path | None = None,
    config_path: str | Path | None = None,
    model_path: str | Path | None = None,
    datamodel: DataModel | None = None,
    hats: bool = False,
    summary=None,
    effective_config: Mapping | None = None,
    union: bool | None = None,
) -> Path:
    """Assemble ``results_dir/release/`` from a finished catalogue.

    Parameters
    ----------
    results_dir : path
        Folder with ``catalogue.parquet``, ``catalogue.fits`` and
        ``ledger.parquet`` (:func:`clumpcat.catalogue.writer.build_catalogue`).
    release_dir : path, optional
        Default ``results_dir/release``. Rebuilt from scratch each time.
    config_path, model_path : path, optional
        Recorded in ``provenance.json``.
    datamodel : DataModel, optional
    hats : bool
        Add ``hats/`` (skipped with a log message without ``hats-import``).
    summary : CatalogueSummary, optional
        Counts for the README and provenance (else read from the files).
    effective_config : mapping, optional
        The run's effective configuration: recorded and described.
    union : bool, optional
        Unite the catalogue and ledger with those of the release folder
        being replaced (when it holds them): galaxies of the earlier release
        that this run did not process are kept, those it did are replaced.
        Default :func:`unites_runs` of ``effective_config``.

    Returns
    -------
    Path
        The release folder.

    Raises
    ------
    InputError
        If a file to release is missing.
    """
    model = datamodel or load_datamodel()
    results_dir = Path(results_dir)
    release = Path(release_dir) if release_dir is not None else results_dir / "release"
    missing = [n for n in RELEASE_FILES if not (results_dir / n).is_file()]
    if missing:
        raise InputError(
            f"{results_dir}: cannot release, missing {', '.join(missing)} (run clumpcat catalogue)"
        )
    tmp = release.with_name(f".{release.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in RELEASE_FILES:
        shutil.copyfile(results_dir / name, tmp / name)
    union = unites_runs(effective_config) if union is None else union
    if union and all((release / n).is_file() for n in ("catalogue.parquet", "ledger.parquet")):
        union_catalogues(release, tmp, tmp)
        write_fits_catalogue(tmp / "catalogue.parquet", tmp / "catalogue.fits", model)
    ledger = pq.read_table(tmp / "ledger.parquet", columns=["status"]).column("status").to_pandas()
    cat_meta = pq.read_schema(tmp / "catalogue.parquet").metadata or {}
    counts = {
        "n_galaxies": int(len(ledger)),
        "status_counts": {str(k): int(v) for k, v in ledger.value_counts().items()},
        "n_catalogue": int(pq.ParquetFile(tmp / "catalogue.parquet").metadata.num_rows),
    }
    if summary is not None:
        counts["score_threshold"] = float(summary.score_threshold)
    elif b"score_threshold" in cat_meta:
        counts["score_threshold"] = float(cat_meta[b"score_threshold"])
    readme = release_readme(model, counts, effective_config, apcorr_sources(tmp / "catalogue.parquet"))
    (tmp / "README.md").write_text(readme, encoding="utf-8")
    record = provenance(
        config_path,
        model_path,
        extra={"counts": counts, "datamodel": {"name": model.name, "version": model.version}},
        effective_config=effective_config,
    )
    if hats:
        record["hats"] = str(write_hats(tmp / "catalogue.parquet", tmp / "hats") is not None).lower()
    (tmp / "provenance.json").write_text(
        json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    write_sha256sums(tmp)
    if release.exists():
        shutil.rmtree(release)
    os.replace(tmp, release)
    log.info("release written to %s (%d catalogue rows)", release, counts["n_catalogue"])
    return release
