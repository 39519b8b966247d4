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

The PSF travels with the cutout: each band's PSF is rebuilt at the galaxy's
frame position from the field's ``psField`` KL basis
(:mod:`clumpcat.survey.fetch.psfield`) and written as ``PSF_<BAND>``;
``PSF_FWHM`` is its half-maximum FWHM (:func:`clumpcat.survey.psf.measure_fwhm`).
Without a usable psField, the galaxy table's ``psf_fwhm_{band}`` is used
(and no PSF image travels).

Frames of one run and camcol overlap their neighbours along the scan by 128
rows: a cutout reaching past the top or bottom of its frame is completed from
the frame of field - 1 or field + 1, so that only sky no frame covers (past
the camcol's sides, or past the run's ends) stays NaN.
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
from astropy.wcs.utils import proj_plane_pixel_scales
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
from clumpcat.survey.fetch.psfield import PsfBasis, read_psfield
from clumpcat.survey.fetch.resample import cutout_side_pixels, psf_on_grid, reference_grid, sample_on_grid
from clumpcat.survey.psf import measure_fwhm

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
    "psf_at",
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
    if "RADECSYS" in header and "RADESYS" not in header:
        # Real frames carry the deprecated spelling; astropy would warn for every frame.
        header.rename_keyword("RADECSYS", "RADESYS")
    wcs = WCS(header, naxis=2)
    if not wcs.has_celestial:
        raise TransferError(f"{Path(path).name}: no celestial WCS")
    return SdssFrame(image=image, wcs=wcs.celestial, calib=calib, sky=sky)


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


def psf_at(basis: PsfBasis, wcs: WCS, position: SkyCoord, grid_scale: float) -> tuple[np.ndarray, float]:
    """A band's PSF at a galaxy, from the psField basis, and its FWHM.

    Parameters
    ----------
    basis : PsfBasis
        The band's KL basis (:func:`clumpcat.survey.fetch.psfield.read_psfield`).
    wcs : WCS
        WCS of the band's frame (gives the galaxy's row and column).
    position : SkyCoord
        Galaxy centre.
    grid_scale : float
        Pixel scale of the cutout in arcsec (the frame's scale for SDSS).

    Returns
    -------
    psf : ndarray
        Odd-sided, centred, unit-sum PSF image on the cutout's pixel scale.
    fwhm : float
        Its half-maximum FWHM in arcsec.
    """
    x, y = (float(v) for v in wcs.world_to_pixel(position))
    frame_scale = float(np.mean(proj_plane_pixel_scales(wcs)) * 3600.0)
    psf = psf_on_grid(basis.at(y, x), frame_scale, grid_scale)
    return psf, measure_fwhm(psf) * grid_scale


@dataclass
class _Band:
    """What a cutout needs of one frame: pixels, inverse variance and WCS."""

    image: np.ndarray
    ivar: np.ndarray
    wcs: WCS


class _FieldFrames:
    """The frames of one run and camcol, loaded on demand, each once per task.

    A neighbouring field's frames are loaded only when a cutout reaches past
    the frame; a field missing from the archive (the run's first or last
    field) counts as no coverage.
    """

    def __init__(self, root: ArchiveRoot, run: int, camcol: int):
        self.root, self.run, self.camcol = root, run, camcol
        self._fields: dict[int, dict[str, _Band] | None] = {}

    def field(self, field: int, required: bool = True) -> dict[str, _Band] | None:
        if field not in self._fields:
            try:
                bands = {}
                for band in SDSS_BANDS:
                    frame = self.root.fetch(frame_path(band, self.run, self.camcol, field), read_frame)
                    ivar = frame.ivar(
                        sdss_gain(band, self.camcol, self.run),
                        sdss_dark_variance(band, self.camcol, self.run),
                    )
                    bands[band] = _Band(frame.image, ivar, frame.wcs)
            except NotFoundError:
                if required:
                    raise
                bands = None
            self._fields[field] = bands
        return self._fields[field]


def _rows_beyond(band: _Band, grid_wcs: WCS, side: int) -> tuple[bool, bool]:
    """Whether the cutout grid reaches below row 0 / above the last row of a frame."""
    edge = np.array([0, side - 1], dtype=float)
    xs, ys = np.meshgrid(edge, edge)
    fx, fy = band.wcs.world_to_pixel(grid_wcs.pixel_to_world(xs.ravel(), ys.ravel()))
    return bool(np.min(fy) < -0.5), bool(np.max(fy) > band.image.shape[0] - 0.5)


def _sample(band: _Band, grid_wcs: WCS, side: int, position: SkyCoord) -> list[np.ndarray]:
    """Image and inverse variance of one frame on the cutout grid (NaN off the frame)."""
    return sample_on_grid([band.image, band.ivar], band.wcs, grid_wcs, side, position)


def _cut_field(
    key: tuple[int, int, int],
    rows: pd.DataFrame,
    root: ArchiveRoot,
    cutouts: Path,
    use_psfield: bool,
    max_outside: float,
) -> tuple[list[dict], list[tuple[str, str]]]:
    """Fetch the frames of one field (and its neighbours where needed) and cut every galaxy on it."""
    run, camcol, field = key
    frames = _FieldFrames(root, run, camcol)
    primary = frames.field(field)
    basis, no_psf = None, "psf_fwhm_{u,g,r,i,z} missing and psField disabled"
    if use_psfield:
        try:
            basis = root.fetch(psfield_path(run, camcol, field), read_psfield)
        except (NotFoundError, CorruptFileError) as exc:
            # Only galaxies without psf_fwhm_* fail; a network outage still propagates.
            no_psf = f"psf_fwhm_{{u,g,r,i,z}} missing and psField unusable ({exc})"
            log.warning("field %d-%d-%d: %s", run, camcol, field, no_psf)
    info, failures = [], []
    for row in rows.itertuples(index=False):
        objid = row.objid
        side = int(row.side_px)
        position = SkyCoord(row.ra, row.dec, unit="deg")
        try:
            _, grid_wcs, _ = reference_grid(primary["r"].image, primary["r"].wcs, position, side)
        except NoOverlapError:
            failures.append((objid, f"galaxy not on frame run {run} camcol {camcol} field {field}"))
            continue
        grid_scale = float(np.mean(proj_plane_pixel_scales(grid_wcs)) * 3600.0)
        psf_images, psf_fwhm = {}, _psf_from_table(row)
        if basis is not None:
            try:
                measured = {}
                for band in SDSS_BANDS:
                    psf_images[band], measured[band] = psf_at(
                        basis[band], primary[band].wcs, position, grid_scale
                    )
                psf_fwhm = measured
            except ValueError as exc:
                psf_images, no_psf = {}, f"psField PSF not usable at the galaxy ({exc})"
        if psf_fwhm is None:
            failures.append((objid, f"no PSF FWHM: {no_psf}"))
            continue
        images, ivar = {}, {}
        for band in SDSS_BANDS:
            images[band], ivar[band] = _sample(primary[band], grid_wcs, side, position)
        below, above = _rows_beyond(primary["r"], grid_wcs, side)
        used = [field]
        for neighbour, needed in ((field - 1, below), (field + 1, above)):
            if not needed or not any(np.isnan(im).any() for im in images.values()):
                continue
            other = frames.field(neighbour, required=False)
            if other is None:
                continue
            filled = False
            for band in SDSS_BANDS:
                try:
                    extra, extra_ivar = _sample(other[band], grid_wcs, side, position)
                except NoOverlapError:
                    continue
                fill = np.isnan(images[band]) & np.isfinite(extra)
                images[band][fill], ivar[band][fill] = extra[fill], extra_ivar[fill]
                filled |= bool(fill.any())
            if filled:
                used.append(neighbour)
        for band in SDSS_BANDS:
            ivar[band] = np.where(np.isfinite(images[band]) & np.isfinite(ivar[band]), ivar[band], 0.0)
            ivar[band] = ivar[band].astype(np.float32)
        source = f"{run}-{camcol}-" + "+".join(str(f) for f in sorted(used))
        nan_share = max(float(np.mean(~np.isfinite(im))) for im in images.values())
        if nan_share >= 1.0:
            failures.append((objid, f"no pixels of frame {source} in the cutout"))
            continue
        if nan_share > max_outside:
            failures.append(
                (
                    objid,
                    f"on the edge of the survey: {nan_share:.0%} of the cutout outside frames {source} "
                    f"(limit {max_outside:.0%})",
                )
            )
            continue
        write_cutout(
            objid_path(cutouts, objid, ".fits"),
            Cutout(
                objid=str(objid),
                images=images,
                wcs=grid_wcs,
                psf_fwhm=dict(psf_fwhm),
                ivar=ivar,
                psf=psf_images,
            ),
        )
        edge = nan_share > 0
        if edge:
            log.warning(
                "%s: %.0f%% of the cutout lies outside frames %s; NaN-padded", objid, 100 * nan_share, source
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
        Fetch each field's psField and rebuild every band's PSF at the
        galaxy (``PSF_<BAND>`` HDUs, ``PSF_FWHM`` measured on them); when
        False, or where the psField is missing, ``psf_fwhm_*`` is needed.
    max_outside : float
        Largest fraction of a cutout that no frame covers (after completing
        it from the neighbouring fields); such galaxies are NaN-padded and
        flagged ``edge`` in the info records, beyond it they fail.
    max_parallel : int
        Fields processed at once (downloads are bounded by the client too).

    Returns
    -------
    FetchResult
        Failures with reasons, galaxies left undone per host, and one info
        record per cutout (``source`` = ``run-camcol-field[+field...]``, the
        fields whose frames fill it; ``edge``).
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
