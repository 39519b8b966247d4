"""HSC-SSP PDR3 cutouts from the Data Access Service (DAS).

For each galaxy the five bands (g, r, i, z, y) are requested from the DAS
cutout service with the field of view of the SDSS cutout (6 x petroR90_r,
App. A.2), at the HSC coadd scale of 0.168"/px, converted from counts at the
HSC zero point (27 AB) to nanomaggies (22.5 AB), and aligned on the r-band
grid. The PSF FWHM comes from the galaxy table's ``psf_fwhm_{band}`` or, if
missing, from the DAS PSF picker's PSF image (second moments).

Credentials come from environment variables (``HSC_SSP_CAS_USERNAME`` and
``HSC_SSP_CAS_PASSWORD`` by default) or ``~/.netrc``; they travel only in the
HTTP basic-auth header.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.nddata import NoOverlapError
from astropy.wcs import WCS

from clumpcat.constants import HSC_BANDS, HSC_PIXEL_SCALE, HSC_ZEROPOINT, NANOMAGGY_ZEROPOINT
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
from clumpcat.survey.fetch.http import HttpClient, NotFoundError, RemoteError, TransferError, redact_url
from clumpcat.survey.fetch.resample import cutout_side_pixels, reference_grid, sample_on_grid

__all__ = [
    "DAS_CUTOUT_URL",
    "DAS_PSF_URL",
    "HSC_FILTERS",
    "COUNTS_TO_NANOMAGGY",
    "HscImage",
    "read_das_cutout",
    "psf_fwhm_from_image",
    "fetch_hsc",
]

log = logging.getLogger(__name__)

#: PDR3 DAS cutout service.
DAS_CUTOUT_URL = "https://hsc-release.mtk.nao.ac.jp/das_cutout/pdr3/cgi-bin/cutout"
#: PDR3 PSF picker (PSF image at a position).
DAS_PSF_URL = "https://hsc-release.mtk.nao.ac.jp/psf/pdr3/cgi/getpsf"
#: DAS filter names of the HSC bands.
HSC_FILTERS = {band: f"HSC-{band.upper()}" for band in HSC_BANDS}
#: Multiply HSC coadd counts (zero point 27 AB) by this to get nanomaggies (22.5 AB).
COUNTS_TO_NANOMAGGY = 10.0 ** (-0.4 * (HSC_ZEROPOINT - NANOMAGGY_ZEROPOINT))

_FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


class HscImage:
    """One band of a DAS cutout, converted to nanomaggies.

    Attributes
    ----------
    image : ndarray
        Pixels in nanomaggies.
    ivar : ndarray
        Inverse variance in nanomaggy^-2 (zeros if the DAS sent no variance).
    wcs : WCS
        Celestial WCS.
    """

    def __init__(self, image: np.ndarray, ivar: np.ndarray, wcs: WCS):
        self.image, self.ivar, self.wcs = image, ivar, wcs


def read_das_cutout(path: str | Path) -> HscImage:
    """Read a DAS cutout (``IMAGE`` and optional ``VARIANCE`` HDUs) in nanomaggies.

    Raises
    ------
    TransferError
        If the file is truncated, not FITS, or holds no 2-D image with a WCS.
    """
    name = Path(path).name
    try:
        with truncation_checked(name), fits.open(path, memmap=False) as hdul:
            image_hdu = next((h for h in hdul if h.name == "IMAGE"), None)
            if image_hdu is None:
                image_hdu = next(h for h in hdul if h.data is not None and np.ndim(h.data) == 2)
            image = np.asarray(image_hdu.data, dtype=np.float64)
            header = image_hdu.header.copy()
            var_hdu = next((h for h in hdul if h.name == "VARIANCE"), None)
            variance = None if var_hdu is None else np.asarray(var_hdu.data, dtype=np.float64)
    except (OSError, EOFError, ValueError, TypeError, IndexError, KeyError, StopIteration, Warning) as exc:
        raise TransferError(f"{name}: not a whole DAS cutout ({type(exc).__name__}: {exc})") from None
    if image.ndim != 2:
        raise TransferError(f"{name}: image is {image.ndim}-D, expected 2-D")
    wcs = WCS(header, naxis=2)
    if not wcs.has_celestial:
        raise TransferError(f"{name}: no celestial WCS")
    nmgy = image * COUNTS_TO_NANOMAGGY
    if variance is not None and variance.shape == image.shape:
        var = variance * COUNTS_TO_NANOMAGGY**2
        with np.errstate(divide="ignore", invalid="ignore"):
            ivar = np.where(var > 0, 1.0 / var, 0.0)
    else:
        ivar = np.zeros_like(nmgy)
    return HscImage(nmgy.astype(np.float32), ivar.astype(np.float32), wcs.celestial)


def psf_fwhm_from_image(psf: np.ndarray, pixel_scale: float = HSC_PIXEL_SCALE) -> float:
    """Gaussian-equivalent FWHM (arcsec) of a PSF image from its second moments.

    Raises
    ------
    TransferError
        If the image has no positive flux.
    """
    data = np.clip(np.nan_to_num(np.asarray(psf, dtype=float)), 0.0, None)
    total = data.sum()
    if not total > 0:
        raise TransferError("PSF image has no positive flux")
    yy, xx = np.indices(data.shape)
    xc, yc = (data * xx).sum() / total, (data * yy).sum() / total
    var = ((data * ((xx - xc) ** 2 + (yy - yc) ** 2)).sum() / total) / 2.0
    return float(_FWHM_PER_SIGMA * np.sqrt(var) * pixel_scale)


def _read_psf(path: Path) -> float:
    try:
        with truncation_checked(path.name), fits.open(path, memmap=False) as hdul:
            data = next(h.data for h in hdul if h.data is not None and np.ndim(h.data) == 2)
    except (OSError, EOFError, ValueError, TypeError, IndexError, StopIteration, Warning) as exc:
        raise TransferError(f"{path.name}: not a whole PSF image ({type(exc).__name__})") from None
    return psf_fwhm_from_image(data)


def _fetch_galaxy(
    row, client: HttpClient, das_url: str, psf_url: str | None, rerun: str, cache: Path, cutouts: Path
) -> dict:
    objid, side = str(row.objid), int(row.side_px)
    half_arcsec = (side / 2.0 + 3.0) * HSC_PIXEL_SCALE
    position = SkyCoord(row.ra, row.dec, unit="deg")
    folder = cache / "hsc" / rerun
    files = []
    bands, psf = {}, {}
    for band in HSC_BANDS:
        dest = folder / f"{objid}-{band}.fits"
        files.append(dest)
        params = {
            "ra": f"{row.ra:.7f}",
            "dec": f"{row.dec:.7f}",
            "sw": f"{half_arcsec:.2f}asec",
            "sh": f"{half_arcsec:.2f}asec",
            "type": "coadd",
            "image": "true",
            "mask": "false",
            "variance": "true",
            "filter": HSC_FILTERS[band],
            "tract": "",
            "rerun": rerun,
        }
        try:
            bands[band] = read_das_cutout(dest) if dest.is_file() else None
        except TransferError:
            bands[band] = None
        if bands[band] is None:
            try:
                bands[band] = client.download(das_url, dest, validate=read_das_cutout, params=params)
            except NotFoundError:
                _cleanup(files)
                raise GalaxyFailure(
                    f"no HSC {band}-band coverage in {rerun} (DAS answered not found)"
                ) from None
            except RemoteError as exc:
                if not exc.transient:
                    _cleanup(files)
                raise
        value = pd.to_numeric(getattr(row, f"psf_fwhm_{band}", np.nan), errors="coerce")
        if np.isfinite(value) and value > 0:
            psf[band] = float(value)
        elif psf_url:
            psf_dest = folder / f"{objid}-{band}.psf.fits"
            files.append(psf_dest)
            psf[band] = client.download(
                psf_url,
                psf_dest,
                validate=_read_psf,
                params={
                    "ra": f"{row.ra:.7f}",
                    "dec": f"{row.dec:.7f}",
                    "filter": HSC_FILTERS[band],
                    "rerun": rerun,
                    "tract": "",
                    "patch": "",
                    "type": "coadd",
                },
            )
        else:
            _cleanup(files)
            raise GalaxyFailure(f"no PSF FWHM for HSC {band}: psf_fwhm_{band} missing and no PSF service")
    ref = bands["r"]
    try:
        _, grid_wcs, outside = reference_grid(ref.image, ref.wcs, position, side)
    except NoOverlapError:
        _cleanup(files)
        raise GalaxyFailure("galaxy not on the HSC r-band cutout returned by the DAS") from None
    images, ivar = {}, {}
    for band, img in bands.items():
        images[band], iv = sample_on_grid([img.image, img.ivar], img.wcs, grid_wcs, side, position)
        ivar[band] = np.where(np.isfinite(iv), iv, 0.0).astype(np.float32)
    nan_share = max(float(np.mean(~np.isfinite(im))) for im in images.values())
    if nan_share >= 1.0:
        _cleanup(files)
        raise GalaxyFailure("no HSC pixels in the cutout")
    write_cutout(
        objid_path(cutouts, objid, ".fits"),
        Cutout(objid=objid, images=images, wcs=grid_wcs, psf_fwhm=psf, ivar=ivar),
    )
    _cleanup(files)
    return {
        "objid": objid,
        "survey": "hsc",
        "source": rerun,
        "side_px": side,
        "outside_fraction": nan_share,
        "edge": nan_share > 0,
        "reused": False,
    }


def _cleanup(files: list[Path]) -> None:
    for path in files:
        path.unlink(missing_ok=True)


def fetch_hsc(
    galaxies: pd.DataFrame,
    cutouts: str | Path,
    client: HttpClient,
    cache: str | Path,
    *,
    das_url: str = DAS_CUTOUT_URL,
    psf_url: str | None = DAS_PSF_URL,
    rerun: str = "pdr3_wide",
    max_parallel: int = 4,
) -> FetchResult:
    """Fetch HSC grizy cutouts for a shard of galaxies.

    Parameters
    ----------
    galaxies : DataFrame
        Validated galaxy table; ``petro_r90_r`` sizes the cutout (as for
        SDSS), ``psf_fwhm_{g,r,i,z,y}`` give the PSF where present.
    cutouts : str or Path
        Folder receiving ``{objid}.fits``; valid existing cutouts are kept.
    client : HttpClient
        Client carrying the DAS credentials.
    cache : str or Path
        Folder for the per-band downloads (removed once the cutout is
        written; kept after a network failure so a rerun resumes).
    das_url, psf_url : str
        DAS cutout and PSF picker endpoints; ``psf_url=None`` requires
        ``psf_fwhm_*`` in the table.
    rerun : str
        PDR3 rerun, e.g. ``pdr3_wide`` or ``pdr3_dud``.
    max_parallel : int
        Galaxies processed at once (requests are bounded by the client too).

    Returns
    -------
    FetchResult
    """
    cutouts, cache = Path(cutouts), Path(cache)
    result = FetchResult(objids=galaxies["objid"].astype(str).tolist())
    done = existing_cutouts(cutouts, result.objids, HSC_BANDS)
    for objid in sorted(done):
        result.info.append(
            {
                "objid": objid,
                "survey": "hsc",
                "source": rerun,
                "side_px": np.nan,
                "outside_fraction": np.nan,
                "edge": False,
                "reused": True,
            }
        )
    todo = galaxies[~galaxies["objid"].isin(done)].copy()
    if todo.empty:
        return result
    width = cutout_width_arcsec(todo)
    todo["side_px"] = [cutout_side_pixels(w, HSC_PIXEL_SCALE) if np.isfinite(w) else -1 for w in width]
    for objid in todo.loc[todo["side_px"] < 0, "objid"]:
        result.fail(objid, "no petro_r90_r > 0 to size the cutout (6 x petroR90_r)")
    todo = todo[todo["side_px"] > 0]
    log.info("fetching %d HSC galaxies (%s) from %s", len(todo), rerun, redact_url(das_url))
    rows = list(todo.itertuples(index=False))

    def work(row):
        return _fetch_galaxy(row, client, das_url, psf_url, rerun, cache, cutouts)

    for row, info, exc in run_tasks(rows, work, max_parallel, "HSC galaxies"):
        if exc is not None:
            if not isinstance(exc, RemoteError | GalaxyFailure):
                log.error("%s: unexpected %s: %s", row.objid, type(exc).__name__, exc)
                exc = GalaxyFailure(f"{type(exc).__name__}: {exc}")
            result.record_error([str(row.objid)], exc)
            continue
        result.info.append(info)
    return result
