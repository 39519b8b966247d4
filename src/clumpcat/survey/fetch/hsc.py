"""HSC-SSP PDR3 cutouts from the Data Access Service (DAS).

For each galaxy the five bands (g, r, i, z, y) are requested from the DAS
cutout service with the field of view of the SDSS cutout (6 x petroR90_r,
App. A.2), at the HSC coadd scale of 0.168"/px, with the image, mask and
variance planes (``image=on&mask=on&variance=on``, as the DAS form and public
clients send them). The file is read by :mod:`clumpcat.survey.fetch.das`:
counts at the HSC zero point (27 AB) become nanomaggies (22.5 AB); pixels in
the configured mask planes become NaN with IVAR 0; a band without a variance
or mask plane fails the galaxy with that reason (never a silent zero IVAR);
the sky-pixel scatter over the variance plane's prediction is written as the
band's ``NOISECOR``. Bands are aligned on the r-band grid.

The PSF travels with the cutout: the DAS PSF picker's image of each band at
the galaxy (asked for with the short band name, as the picker's clients do) is
put on the cutout's pixel grid and written as ``PSF_<BAND>``; ``PSF_FWHM`` is
its half-maximum FWHM (:func:`clumpcat.survey.psf.measure_fwhm`; second
moments of the whole stamp overstate it 1.6-2.1x because of the wings).
Without a picker (``psf_url=None``) the galaxy table's ``psf_fwhm_{band}`` is
used and no PSF image travels.

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
from astropy.wcs.utils import proj_plane_pixel_scales

from clumpcat.constants import HSC_BANDS, HSC_PIXEL_SCALE
from clumpcat.paths import check_name, objid_path
from clumpcat.survey.cutouts import Cutout, write_cutout
from clumpcat.survey.fetch.common import (
    FetchResult,
    GalaxyFailure,
    cutout_width_arcsec,
    existing_cutouts,
    run_tasks,
    truncation_checked,
)
from clumpcat.survey.fetch.das import (
    COUNTS_TO_NANOMAGGY,
    DEFAULT_MASK_PLANES,
    DasCutout,
    noise_correction,
    read_das_cutout,
)
from clumpcat.survey.fetch.http import HttpClient, NotFoundError, RemoteError, TransferError, redact_url
from clumpcat.survey.fetch.resample import cutout_side_pixels, psf_on_grid, reference_grid, sample_on_grid
from clumpcat.survey.psf import measure_fwhm

__all__ = [
    "DAS_CUTOUT_URL",
    "DAS_PSF_URL",
    "HSC_FILTERS",
    "COUNTS_TO_NANOMAGGY",
    "DEFAULT_MASK_PLANES",
    "read_das_cutout",
    "read_psf_image",
    "das_cutout_params",
    "psf_picker_params",
    "fetch_hsc",
]

log = logging.getLogger(__name__)

#: PDR3 DAS cutout service.
DAS_CUTOUT_URL = "https://hsc-release.mtk.nao.ac.jp/das_cutout/pdr3/cgi-bin/cutout"
#: PDR3 PSF picker (PSF image at a position).
DAS_PSF_URL = "https://hsc-release.mtk.nao.ac.jp/psf/pdr3/cgi/getpsf"
#: DAS cutout filter names of the HSC bands.
HSC_FILTERS = {band: f"HSC-{band.upper()}" for band in HSC_BANDS}


def das_cutout_params(ra: float, dec: float, half_arcsec: float, band: str, rerun: str) -> dict[str, str]:
    """Query of a DAS coadd cutout with the image, mask and variance planes.

    A plane is asked for with ``on`` (the value of the DAS form's check boxes
    and of public clients); planes not wanted are left out.
    """
    return {
        "ra": f"{ra:.7f}",
        "dec": f"{dec:.7f}",
        "sw": f"{half_arcsec:.2f}asec",
        "sh": f"{half_arcsec:.2f}asec",
        "type": "coadd",
        "image": "on",
        "mask": "on",
        "variance": "on",
        "filter": HSC_FILTERS[band],
        "tract": "",
        "rerun": rerun,
    }


def psf_picker_params(ra: float, dec: float, band: str, rerun: str) -> dict[str, str]:
    """Query of the PSF picker: the coadd PSF of ``band`` at a position, centred.

    The picker takes the short band name (``g``, ``r``, ...), as its
    bulk-mode list format and public clients write it; checked against public
    PDR3 clients, whose single requests are
    ``getpsf?ra=..&dec=..&filter=g&rerun=pdr3_wide&tract=&patch=&centered=true&type=coadd``
    (the same parameters and values as here; the bulk list's last column is
    ``centered``).
    """
    return {
        "ra": f"{ra:.7f}",
        "dec": f"{dec:.7f}",
        "filter": band,
        "rerun": rerun,
        "tract": "",
        "patch": "",
        "type": "coadd",
        "centered": "true",
    }


def read_psf_image(path: str | Path) -> np.ndarray:
    """The 2-D PSF image of a PSF picker answer.

    Raises
    ------
    TransferError
        If the file is truncated, not FITS, or has no 2-D image with a positive sum.
    """
    path = Path(path)
    try:
        with truncation_checked(path.name), fits.open(path, memmap=False) as hdul:
            data = next(h.data for h in hdul if h.data is not None and np.ndim(h.data) == 2)
    except (OSError, EOFError, ValueError, TypeError, IndexError, StopIteration, Warning) as exc:
        raise TransferError(f"{path.name}: not a whole PSF image ({type(exc).__name__})") from None
    data = np.asarray(data, dtype=np.float64)
    if not np.isfinite(data).all() or not data.sum() > 0:
        raise TransferError(f"{path.name}: PSF image has non-finite pixels or no positive flux")
    return data


def _download_band(client, url, dest, params, validate):
    """A cached valid file, else a download (a corrupt cached file is fetched again)."""
    if dest.is_file():
        try:
            return validate(dest)
        except TransferError:
            dest.unlink(missing_ok=True)
    return client.download(url, dest, validate=validate, params=params)


def _fetch_galaxy(
    row,
    client: HttpClient,
    das_url: str,
    psf_url: str | None,
    rerun: str,
    cache: Path,
    cutouts: Path,
    mask_planes: tuple[str, ...],
) -> dict:
    objid, side = str(row.objid), int(row.side_px)
    half_arcsec = (side / 2.0 + 3.0) * HSC_PIXEL_SCALE
    position = SkyCoord(row.ra, row.dec, unit="deg")
    folder = cache / "hsc" / rerun
    files = []
    bands: dict[str, DasCutout] = {}
    psf_raw: dict[str, np.ndarray] = {}
    table_fwhm: dict[str, float] = {}
    try:
        for band in HSC_BANDS:
            dest = objid_path(folder, objid, f"-{band}.fits")
            files.append(dest)
            params = das_cutout_params(row.ra, row.dec, half_arcsec, band, rerun)
            try:
                bands[band] = _download_band(client, das_url, dest, params, read_das_cutout)
            except NotFoundError:
                raise GalaxyFailure(
                    f"no HSC {band}-band coverage in {rerun} (DAS answered not found)"
                ) from None
            missing = bands[band].missing_planes()
            if missing:
                raise GalaxyFailure(
                    f"HSC {band}-band cutout lacks the {' and '.join(missing)} plane(s) "
                    "(asked with image=on&mask=on&variance=on); errors would be unknown"
                )
            if psf_url:
                psf_dest = objid_path(folder, objid, f"-{band}.psf.fits")
                files.append(psf_dest)
                psf_params = psf_picker_params(row.ra, row.dec, band, rerun)
                try:
                    psf_raw[band] = _download_band(client, psf_url, psf_dest, psf_params, read_psf_image)
                except NotFoundError:
                    raise GalaxyFailure(
                        f"no HSC {band}-band PSF at the galaxy (PSF picker answered not found)"
                    ) from None
            else:
                value = pd.to_numeric(getattr(row, f"psf_fwhm_{band}", np.nan), errors="coerce")
                if not (np.isfinite(value) and value > 0):
                    raise GalaxyFailure(
                        f"no PSF FWHM for HSC {band}: psf_fwhm_{band} missing and no PSF service"
                    )
                table_fwhm[band] = float(value)
    except GalaxyFailure:
        _cleanup(files)
        raise
    except RemoteError as exc:
        if not exc.transient:
            _cleanup(files)
        raise
    ref = bands["r"]
    try:
        _, grid_wcs, _ = reference_grid(ref.image, ref.wcs, position, side)
    except NoOverlapError:
        _cleanup(files)
        raise GalaxyFailure("galaxy not on the HSC r-band cutout returned by the DAS") from None
    grid_scale = float(np.mean(proj_plane_pixel_scales(grid_wcs)) * 3600.0)
    images, ivar, noise, psf_images, psf_fwhm = {}, {}, {}, {}, dict(table_fwhm)
    masked_share = 0.0
    for band, das in bands.items():
        image, band_ivar, bad = das.data_and_ivar(mask_planes)
        sources = das.plane_pixels(("DETECTED",))
        noise[band] = noise_correction(image, band_ivar, sources)
        images[band], iv = sample_on_grid([image, band_ivar], das.wcs, grid_wcs, side, position)
        ivar[band] = np.where(np.isfinite(iv) & np.isfinite(images[band]), iv, 0.0).astype(np.float32)
        masked_share = max(masked_share, float(bad.mean()))
        if band in psf_raw:
            try:
                psf_images[band] = psf_on_grid(psf_raw[band], HSC_PIXEL_SCALE, grid_scale)
            except ValueError as exc:
                _cleanup(files)
                raise GalaxyFailure(f"HSC {band}-band PSF image unusable ({exc})") from None
            psf_fwhm[band] = measure_fwhm(psf_images[band]) * grid_scale
    nan_share = max(float(np.mean(~np.isfinite(im))) for im in images.values())
    if nan_share >= 1.0:
        _cleanup(files)
        raise GalaxyFailure("no unmasked HSC pixels in the cutout")
    write_cutout(
        objid_path(cutouts, objid, ".fits"),
        Cutout(
            objid=objid,
            images=images,
            wcs=grid_wcs,
            psf_fwhm=psf_fwhm,
            ivar=ivar,
            psf=psf_images,
            noise_correction=noise,
        ),
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
        "masked_fraction": masked_share,
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
    mask_planes: tuple[str, ...] | list[str] = DEFAULT_MASK_PLANES,
) -> FetchResult:
    """Fetch HSC grizy cutouts for a shard of galaxies.

    Parameters
    ----------
    galaxies : DataFrame
        Validated galaxy table; ``petro_r90_r`` sizes the cutout (as for
        SDSS), ``psf_fwhm_{g,r,i,z,y}`` give the PSF when no picker is used.
    cutouts : str or Path
        Folder receiving ``{objid}.fits``; valid existing cutouts are kept.
    client : HttpClient
        Client carrying the DAS credentials.
    cache : str or Path
        Folder for the per-band downloads (removed once the cutout is
        written; kept after a network failure so a rerun resumes).
    das_url, psf_url : str
        DAS cutout and PSF picker endpoints; ``psf_url=None`` requires
        ``psf_fwhm_*`` in the table (and no PSF image travels).
    rerun : str
        PDR3 rerun, e.g. ``pdr3_wide`` or ``pdr3_dud``.
    max_parallel : int
        Galaxies processed at once (requests are bounded by the client too).
    mask_planes : sequence of str
        HSC mask planes (``MP_<NAME>`` bits of the MASK HDU) whose pixels
        become NaN with IVAR 0.

    Returns
    -------
    FetchResult
        One info record per cutout, with ``masked_fraction`` (largest
        share of a band's DAS pixels in ``mask_planes``).
    """
    cutouts, cache = Path(cutouts), Path(cache)
    check_name(rerun, "hsc.rerun")  # it names a cache folder
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
        return _fetch_galaxy(row, client, das_url, psf_url, rerun, cache, cutouts, tuple(mask_planes))

    for row, info, exc in run_tasks(rows, work, max_parallel, "HSC galaxies"):
        if exc is not None:
            if not isinstance(exc, RemoteError | GalaxyFailure):
                log.error("%s: unexpected %s: %s", row.objid, type(exc).__name__, exc)
                exc = GalaxyFailure(f"{type(exc).__name__}: {exc}")
            result.record_error([str(row.objid)], exc)
            continue
        result.info.append(info)
    return result
