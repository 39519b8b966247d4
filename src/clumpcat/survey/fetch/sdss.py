"""SDSS cutouts from calibrated frames of the Science Archive Server (SAS).

For each galaxy the covering ``run``, ``camcol``, ``field`` come from the
galaxy table or, where missing, from a SkyServer SQL query. Galaxies are
grouped by field, so that each frame (``frame-{band}-{run:06d}-{camcol}-{field:04d}.fits.bz2``)
is downloaded once into a shared cache however many galaxies it covers, and
each galaxy is cut 6 x petroR90_r wide (App. A.1) at the native 0.396"/px.

The frame data model (SDSS DR8+ ``frame`` files, data.sdss.org datamodel):

- HDU0: the image in nanomaggies per pixel, sky-subtracted, with a TAN WCS;
- HDU1: the calibration vector, nanomaggies per count, one value per column;
- HDU2: a one-row table with ``ALLSKY`` (the sky in counts on a coarse grid),
  ``XINTERP`` and ``YINTERP`` (where each frame column and row falls on it).

The inverse variance follows the data model: ``dn = image / calib + sky``,
``var_dn = dn / gain + darkVariance``, ``ivar = 1 / (var_dn * calib**2)``, with
the per-camcol gain and dark variance of the data model's tables.
The PSF FWHM is the galaxy table's ``psf_fwhm_{band}`` where given, else the
field's ``psField`` ``PSF_WIDTH`` (HDU 6).
"""

from __future__ import annotations

import csv
import io
import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.nddata import NoOverlapError
from astropy.wcs import WCS
from scipy.ndimage import map_coordinates

from clumpcat.constants import SDSS_BANDS, SDSS_PIXEL_SCALE
from clumpcat.paths import objid_path
from clumpcat.survey.cutouts import Cutout, write_cutout
from clumpcat.survey.fetch.common import (
    FetchResult,
    GalaxyFailure,
    cutout_width_arcsec,
    existing_cutouts,
    run_tasks,
    truncation_checked,
)
from clumpcat.survey.fetch.http import (
    ArchiveRoot,
    CorruptFileError,
    HttpClient,
    NotFoundError,
    RemoteError,
    TransferError,
)
from clumpcat.survey.fetch.resample import cutout_side_pixels, reference_grid, sample_on_grid

__all__ = [
    "SAS_URL",
    "SKYSERVER_SQL_URL",
    "FRAME_PATH",
    "PSFIELD_PATH",
    "SdssFrame",
    "frame_path",
    "psfield_path",
    "sdss_gain",
    "sdss_dark_variance",
    "read_frame",
    "read_psfield_fwhm",
    "lookup_fields",
    "fetch_sdss",
]

log = logging.getLogger(__name__)

#: Root of the public Science Archive Server.
SAS_URL = "https://data.sdss.org/sas"
#: SkyServer SQL web service (DR17) used to find run/camcol/field.
SKYSERVER_SQL_URL = "https://skyserver.sdss.org/dr17/SkyServerWS/SearchTools/SqlSearch"
#: Calibrated frame, relative to the SAS root (DR17, photo rerun 301).
FRAME_PATH = (
    "dr17/eboss/photoObj/frames/301/{run}/{camcol}/frame-{band}-{run:06d}-{camcol}-{field:04d}.fits.bz2"
)
#: psField (PSF fit per field), relative to the SAS root.
PSFIELD_PATH = "dr17/eboss/photo/redux/301/{run}/objcs/{camcol}/psField-{run:06d}-{camcol}-{field:04d}.fit"

# Gain (electrons/count) and dark variance (counts^2) per camcol 1-6 and band
# u, g, r, i, z, from the SDSS frame data model. Entries given as
# (before, after, run) change value at that run.
_GAIN = {
    "u": (1.62, (1.595, 1.825, 1100), 1.59, 1.6, 1.47, 2.17),
    "g": (3.32, 3.855, 3.845, 3.995, 4.05, 4.035),
    "r": (4.71, 4.6, 4.72, 4.76, 4.725, 4.895),
    "i": (5.165, 6.565, 4.86, 4.885, 4.64, 4.76),
    "z": (4.745, 5.155, 4.885, 4.775, 3.48, 4.69),
}
_DARK_VARIANCE = {
    "u": (9.61, 12.6025, 8.7025, 12.6025, 9.3025, 7.0225),
    "g": (15.6025, 1.44, 1.3225, 1.96, 1.1025, 1.8225),
    "r": (1.8225, 1.00, 1.3225, 1.3225, 0.81, 0.9025),
    "i": (7.84, (5.76, 6.25, 1500), 4.6225, (6.25, 7.5625, 1500), 7.84, 5.0625),
    "z": (0.81, 1.0, 1.0, (9.61, 12.6025, 1500), (1.8225, 2.1025, 1500), 1.21),
}


def _camcol_value(table: dict, band: str, camcol: int, run: int) -> float:
    if band not in table or not 1 <= int(camcol) <= 6:
        raise GalaxyFailure(f"no SDSS gain/dark variance for band {band!r}, camcol {camcol}")
    value = table[band][int(camcol) - 1]
    if isinstance(value, tuple):
        before, after, change = value
        return after if int(run) > change else before
    return float(value)


def sdss_gain(band: str, camcol: int, run: int) -> float:
    """CCD gain in electrons per count (SDSS frame data model)."""
    return _camcol_value(_GAIN, band, camcol, run)


def sdss_dark_variance(band: str, camcol: int, run: int) -> float:
    """Dark current plus read noise variance in counts^2 (SDSS frame data model)."""
    return _camcol_value(_DARK_VARIANCE, band, camcol, run)


def frame_path(band: str, run: int, camcol: int, field: int) -> str:
    """SAS path of a calibrated frame, relative to the SAS root."""
    return FRAME_PATH.format(band=band, run=int(run), camcol=int(camcol), field=int(field))


def psfield_path(run: int, camcol: int, field: int) -> str:
    """SAS path of a psField file, relative to the SAS root."""
    return PSFIELD_PATH.format(run=int(run), camcol=int(camcol), field=int(field))


@dataclass
class SdssFrame:
    """A calibrated SDSS frame with what the inverse variance needs.

    Attributes
    ----------
    image : ndarray
        ``(nrow, ncol)`` image in nanomaggies.
    wcs : WCS
        Celestial WCS of the image.
    calib : ndarray
        ``(ncol,)`` nanomaggies per count.
    sky : ndarray
        ``(nrow, ncol)`` sky in counts, interpolated from ``ALLSKY``.
    """

    image: np.ndarray
    wcs: WCS
    calib: np.ndarray
    sky: np.ndarray

    def ivar(self, gain: float, dark_variance: float) -> np.ndarray:
        """Inverse variance in nanomaggy^-2 (SDSS frame data model)."""
        calib = self.calib[np.newaxis, :]
        dn = self.image / calib + self.sky
        var_dn = np.clip(dn, 0.0, None) / gain + dark_variance
        return (1.0 / (var_dn * calib**2)).astype(np.float32)


def read_frame(path: str | Path) -> SdssFrame:
    """Read a (bz2-compressed) SDSS frame, checking that it is whole.

    Raises
    ------
    TransferError
        If the file is truncated, not FITS, or lacks the three HDUs of the
        frame data model (the client fetches it again).
    """
    try:
        with truncation_checked(Path(path).name), fits.open(path, memmap=False) as hdul:
            image = np.asarray(hdul[0].data, dtype=np.float32)
            header = hdul[0].header
            calib = np.asarray(hdul[1].data, dtype=np.float64).ravel()
            table = hdul[2].data
            allsky = np.asarray(table["ALLSKY"][0], dtype=np.float64)
            xinterp = np.asarray(table["XINTERP"][0], dtype=np.float64).ravel()
            yinterp = np.asarray(table["YINTERP"][0], dtype=np.float64).ravel()
    except (OSError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError, Warning) as exc:
        raise TransferError(
            f"{Path(path).name}: not a whole SDSS frame ({type(exc).__name__}: {exc})"
        ) from None
    if (
        image.ndim != 2
        or calib.size != image.shape[1]
        or xinterp.size != image.shape[1]
        or yinterp.size != image.shape[0]
    ):
        raise TransferError(
            f"{Path(path).name}: inconsistent frame (image {image.shape}, calib {calib.size}, "
            f"xinterp {xinterp.size}, yinterp {yinterp.size})"
        )
    if allsky.ndim != 2:
        raise TransferError(f"{Path(path).name}: ALLSKY is {allsky.ndim}-D, expected 2-D")
    yy, xx = np.meshgrid(yinterp, xinterp, indexing="ij")
    sky = map_coordinates(allsky, [yy.ravel(), xx.ravel()], order=1, mode="nearest").reshape(image.shape)
    sky = sky.astype(np.float32)
    wcs = WCS(header, naxis=2)
    if not wcs.has_celestial:
        raise TransferError(f"{Path(path).name}: no celestial WCS")
    return SdssFrame(image=image, wcs=wcs.celestial, calib=calib, sky=sky)


def read_psfield_fwhm(path: str | Path) -> dict[str, float]:
    """PSF FWHM per band (arcsec) from a psField file's ``PSF_WIDTH`` (HDU 6).

    Raises
    ------
    TransferError
        If the file is truncated or has no HDU 6 with ``PSF_WIDTH``.
    """
    try:
        with truncation_checked(Path(path).name), fits.open(path, memmap=False) as hdul:
            width = np.asarray(hdul[6].data["PSF_WIDTH"][0], dtype=float).ravel()
    except (OSError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError, Warning) as exc:
        raise TransferError(f"{Path(path).name}: not a whole psField ({type(exc).__name__}: {exc})") from None
    if width.size != len(SDSS_BANDS):
        raise TransferError(f"{Path(path).name}: PSF_WIDTH has {width.size} values, expected 5")
    return dict(zip(SDSS_BANDS, width.tolist(), strict=True))


_FIELD_SQL = (
    "SELECT TOP 1 p.run, p.camcol, p.field, p.petroR90_r "
    "FROM dbo.fGetNearestObjEq({ra:.7f}, {dec:.7f}, {radius:.4f}) AS n "
    "JOIN PhotoPrimary AS p ON p.objID = n.objID ORDER BY n.distance"
)


def _parse_skyserver_csv(text: str) -> list[dict[str, str]]:
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return list(csv.DictReader(io.StringIO("\n".join(lines))))


def lookup_fields(
    galaxies: pd.DataFrame,
    client: HttpClient,
    url: str = SKYSERVER_SQL_URL,
    radius_arcmin: float = 0.05,
) -> tuple[pd.DataFrame, FetchResult]:
    """Fill ``run``, ``camcol``, ``field`` (and a missing ``petro_r90_r``) from SkyServer.

    Only rows lacking any of them are queried: one SQL query per galaxy for
    the nearest primary photometric object within ``radius_arcmin``.

    Parameters
    ----------
    galaxies : DataFrame
        Validated galaxy table.
    client : HttpClient
        Client for the SkyServer service.
    url : str
        SkyServer ``SqlSearch`` endpoint (accepts ``cmd`` and ``format=csv``).
    radius_arcmin : float
        Search radius.

    Returns
    -------
    galaxies : DataFrame
        A copy with the columns filled where the service knew them.
    result : FetchResult
        Galaxies the service did not know (failed) or could not be asked (undone).
    """
    out = galaxies.copy()
    for col in ("run", "camcol", "field", "petro_r90_r"):
        if col not in out.columns:
            out[col] = np.nan
        out[col] = pd.to_numeric(out[col], errors="coerce").astype(float)
    need = out[["run", "camcol", "field"]].isna().any(axis=1) | ~(out["petro_r90_r"] > 0)
    result = FetchResult(objids=out["objid"].tolist())
    rows = list(out.index[need])
    if not rows:
        return out, result
    log.info("looking up run/camcol/field of %d galaxies at %s", len(rows), url)

    def ask(index):
        sql = _FIELD_SQL.format(ra=out.at[index, "ra"], dec=out.at[index, "dec"], radius=radius_arcmin)
        return _parse_skyserver_csv(client.get_text(url, params={"cmd": sql, "format": "csv"}))

    for index, records, exc in run_tasks(rows, ask, client.max_parallel, "SkyServer look-ups"):
        objid = out.at[index, "objid"]
        if exc is not None:
            result.record_error([objid], exc)
            continue
        if not records:
            result.fail(
                objid, f"no SDSS primary object within {radius_arcmin} arcmin (outside the footprint?)"
            )
            continue
        rec = {k.lower(): v for k, v in records[0].items()}
        try:
            for col in ("run", "camcol", "field"):
                if not np.isfinite(out.at[index, col]):
                    out.at[index, col] = float(rec[col])
            if not out.at[index, "petro_r90_r"] > 0:
                out.at[index, "petro_r90_r"] = float(rec["petror90_r"])
        except (KeyError, ValueError) as exc:
            result.fail(objid, f"SkyServer answer not understood ({exc})")
    return out, result


def _psf_from_table(row) -> dict[str, float] | None:
    values = {}
    for band in SDSS_BANDS:
        value = pd.to_numeric(getattr(row, f"psf_fwhm_{band}", np.nan), errors="coerce")
        if not (np.isfinite(value) and value > 0):
            return None
        values[band] = float(value)
    return values


def _cut_field(
    key: tuple[int, int, int],
    rows: pd.DataFrame,
    root: ArchiveRoot,
    cutouts: Path,
    use_psfield: bool,
    max_outside: float,
) -> tuple[list[dict], list[tuple[str, str]]]:
    """Fetch the five frames of one field and cut every galaxy on it."""
    run, camcol, field = key
    frames = {band: root.fetch(frame_path(band, run, camcol, field), read_frame) for band in SDSS_BANDS}
    table_psf = {row.objid: _psf_from_table(row) for row in rows.itertuples(index=False)}
    field_psf, no_psf = None, "psf_fwhm_{u,g,r,i,z} missing and psField disabled"
    if use_psfield and any(v is None for v in table_psf.values()):
        try:
            field_psf = root.fetch(psfield_path(run, camcol, field), read_psfield_fwhm)
        except (NotFoundError, CorruptFileError) as exc:
            # Only the galaxies that need the psField fail; a network outage still propagates.
            no_psf = f"psf_fwhm_{{u,g,r,i,z}} missing and psField unusable ({exc})"
    ivars = {
        band: frame.ivar(sdss_gain(band, camcol, run), sdss_dark_variance(band, camcol, run))
        for band, frame in frames.items()
    }
    info, failures = [], []
    source = f"{run}-{camcol}-{field}"
    for row in rows.itertuples(index=False):
        objid = row.objid
        psf = table_psf[objid] or field_psf
        if psf is None:
            failures.append((objid, f"no PSF FWHM: {no_psf}"))
            continue
        side = int(row.side_px)
        position = SkyCoord(row.ra, row.dec, unit="deg")
        ref = frames["r"]
        try:
            _, grid_wcs, outside = reference_grid(ref.image, ref.wcs, position, side)
        except NoOverlapError:
            failures.append((objid, f"galaxy not on frame run {run} camcol {camcol} field {field}"))
            continue
        if outside > max_outside:
            failures.append(
                (
                    objid,
                    f"on the edge of frame {source}: {outside:.0%} of the cutout outside the frame "
                    f"(limit {max_outside:.0%})",
                )
            )
            continue
        images, ivar = {}, {}
        for band in SDSS_BANDS:
            images[band], ivar[band] = sample_on_grid(
                [frames[band].image, ivars[band]], frames[band].wcs, grid_wcs, side, position
            )
            ivar[band] = np.where(np.isfinite(ivar[band]), ivar[band], 0.0).astype(np.float32)
        nan_share = max(float(np.mean(~np.isfinite(im))) for im in images.values())
        if nan_share >= 1.0:
            failures.append((objid, f"no pixels of frame {source} in the cutout"))
            continue
        write_cutout(
            objid_path(cutouts, objid, ".fits"),
            Cutout(objid=str(objid), images=images, wcs=grid_wcs, psf_fwhm=dict(psf), ivar=ivar),
        )
        edge = nan_share > 0
        if edge:
            log.warning(
                "%s: %.0f%% of the cutout lies outside frame %s; NaN-padded", objid, 100 * nan_share, source
            )
        info.append(
            {
                "objid": str(objid),
                "survey": "sdss",
                "source": source,
                "side_px": side,
                "outside_fraction": nan_share,
                "edge": edge,
                "reused": False,
            }
        )
    return info, failures


def fetch_sdss(
    galaxies: pd.DataFrame,
    cutouts: str | Path,
    root: ArchiveRoot,
    *,
    client: HttpClient | None = None,
    skyserver_url: str | None = SKYSERVER_SQL_URL,
    use_psfield: bool = True,
    max_outside: float = 0.5,
    max_parallel: int = 4,
) -> FetchResult:
    """Cut SDSS ugriz cutouts for a shard of galaxies.

    Parameters
    ----------
    galaxies : DataFrame
        Validated galaxy table (:func:`clumpcat.survey.galaxies.validate_galaxies`);
        uses ``run``, ``camcol``, ``field``, ``petro_r90_r`` and
        ``psf_fwhm_{u,g,r,i,z}`` where present.
    cutouts : str or Path
        Folder receiving ``{objid}.fits``. Galaxies with a valid cutout there
        already are kept and not fetched again.
    root : ArchiveRoot
        The SAS (URL with a cache folder) or a local mirror.
    client : HttpClient, optional
        Client for SkyServer look-ups (default: ``root.client``).
    skyserver_url : str or None
        SkyServer SQL endpoint for galaxies without run/camcol/field or
        petro_r90_r; None fails them instead.
    use_psfield : bool
        Fetch the field's psField for galaxies without ``psf_fwhm_*``.
    max_outside : float
        Largest fraction of a cutout allowed outside its frame; such
        galaxies are NaN-padded and flagged ``edge`` in the info records,
        beyond it they fail.
    max_parallel : int
        Fields processed at once (downloads are bounded by the client too).

    Returns
    -------
    FetchResult
        Failures with reasons, galaxies left undone per host, and one info
        record per cutout (``source`` = ``run-camcol-field``, ``edge``).
    """
    cutouts = Path(cutouts)
    result = FetchResult(objids=galaxies["objid"].astype(str).tolist())
    done = existing_cutouts(cutouts, result.objids, SDSS_BANDS)
    for objid in sorted(done):
        result.info.append(
            {
                "objid": objid,
                "survey": "sdss",
                "source": "",
                "side_px": np.nan,
                "outside_fraction": np.nan,
                "edge": False,
                "reused": True,
            }
        )
    todo = galaxies[~galaxies["objid"].isin(done)]
    if done:
        log.info("%d of %d cutouts already exist; fetching %d", len(done), len(galaxies), len(todo))
    if todo.empty:
        return result
    lookup_client = client or root.client
    missing = (
        any(c not in todo.columns for c in ("run", "camcol", "field", "petro_r90_r"))
        or todo[["run", "camcol", "field"]].isna().any(axis=None)
        or not (pd.to_numeric(todo["petro_r90_r"], errors="coerce") > 0).all()
    )
    if missing and skyserver_url and lookup_client is not None:
        todo, looked = lookup_fields(todo, lookup_client, skyserver_url)
        result.failures.extend(looked.failures)
        for host, objids in looked.undone.items():
            result.undone[host].extend(objids)
            result.undone_reasons[host] = looked.undone_reasons[host]
        lost = {e.objid for e in looked.failures} | {o for v in looked.undone.values() for o in v}
        todo = todo[~todo["objid"].isin(lost)]
    todo = todo.copy()
    for col in ("run", "camcol", "field"):
        todo[col] = pd.to_numeric(todo[col], errors="coerce") if col in todo.columns else np.nan
    width = cutout_width_arcsec(todo)
    todo["side_px"] = [_side(w) if np.isfinite(w) else -1 for w in width]
    no_field = todo[["run", "camcol", "field"]].isna().any(axis=1)
    for objid in todo.loc[no_field, "objid"]:
        result.fail(
            objid, "no run/camcol/field in the galaxy table and no SkyServer look-up (--skyserver-url)"
        )
    no_size = ~no_field & (todo["side_px"] < 0)
    for objid in todo.loc[no_size, "objid"]:
        result.fail(objid, "no petro_r90_r > 0 to size the cutout (6 x petroR90_r)")
    todo = todo[~no_field & ~no_size]
    groups = defaultdict(list)
    for index, row in todo.iterrows():
        groups[(int(row["run"]), int(row["camcol"]), int(row["field"]))].append(index)
    log.info("%d galaxies on %d SDSS fields (%d frames)", len(todo), len(groups), 5 * len(groups))

    def work(key):
        return _cut_field(key, todo.loc[groups[key]], root, cutouts, use_psfield, max_outside)

    for key, output, exc in run_tasks(list(groups), work, max_parallel, "SDSS fields"):
        objids = todo.loc[groups[key], "objid"].tolist()
        if exc is not None:
            if not isinstance(exc, RemoteError | GalaxyFailure):
                log.error("field %s: unexpected %s: %s", key, type(exc).__name__, exc)
                exc = GalaxyFailure(f"field {key[0]}-{key[1]}-{key[2]}: {type(exc).__name__}: {exc}")
            result.record_error(objids, exc)
            continue
        info, failures = output
        result.info.extend(info)
        for objid, reason in failures:
            result.fail(objid, reason)
    return result


def _side(width_arcsec: float) -> int:
    return cutout_side_pixels(width_arcsec, SDSS_PIXEL_SCALE)
