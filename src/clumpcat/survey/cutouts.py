"""The cutout contract: ``cutouts/{objid}.fits`` (DESIGN.md).

Primary HDU empty; one image HDU per band with ``EXTNAME`` the upper-case band
letter, pixels in nanomaggies (``BUNIT = 'nanomaggy'``), a celestial WCS and
``PSF_FWHM`` in arcsec; optional ``IVAR_<BAND>`` HDUs with the inverse
variance in nanomaggy^-2; optional ``PSF_<BAND>`` HDUs with the band's PSF at
the galaxy (odd side, the cutout's pixel grid, centred, unit sum; see
:mod:`clumpcat.survey.psf`); an optional ``NOISECOR`` keyword per band, the
measured pixel scatter over the scatter the IVAR predicts (1 when absent).
Anyone can bring their own cutouts in this form.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales

from clumpcat.errors import CutoutError, one_line
from clumpcat.survey.fits_scan import ScannedHeader, ScannedImage, scan_images
from clumpcat.survey.psf import normalise_psf

__all__ = ["Cutout", "read_cutout", "write_cutout", "MIN_SIDE_PX", "MAX_SIDE_PX"]

#: Smallest cutout side in pixels: below it there is no sky around the host
#: for the background mesh and no room for the photometry annulus (2.5 FWHM).
MIN_SIDE_PX = 16
#: Largest cutout side in pixels. 6 x petroR90_r of the largest SDSS galaxies
#: at HSC's 0.168"/px is ~2,100 px; beyond this limit a cutout is refused from
#: its header, before its pixels are read, so one file cannot exhaust a job's memory.
MAX_SIDE_PX = 4096


@dataclass
class Cutout:
    """A multi-band galaxy cutout in nanomaggies.

    Attributes
    ----------
    objid : str
        Galaxy identifier.
    images : dict of str to ndarray
        Band letter (lower case) to a 2-D float32 image in nanomaggies.
    wcs : astropy.wcs.WCS
        Celestial WCS shared by every band.
    psf_fwhm : dict of str to float
        Band to PSF FWHM in arcsec.
    ivar : dict of str to ndarray
        Band to inverse-variance image in nanomaggy^-2 (may be empty).
    psf : dict of str to ndarray
        Band to the PSF image at the galaxy (odd side, unit sum; may be
        empty: the pipeline then falls back to an analytic profile).
    noise_correction : dict of str to float
        Band to the measured sky-pixel scatter over ``1 / sqrt(ivar)``
        (header ``NOISECOR``; e.g. correlated noise of warped coadds). IVAR
        is stored as the survey gives it; errors derived from it are to be
        multiplied by this factor. Absent bands: 1 (:meth:`noise_factor`).
    """

    objid: str
    images: dict[str, np.ndarray]
    wcs: WCS
    psf_fwhm: dict[str, float]
    ivar: dict[str, np.ndarray] = field(default_factory=dict)
    psf: dict[str, np.ndarray] = field(default_factory=dict)
    noise_correction: dict[str, float] = field(default_factory=dict)

    def noise_factor(self, band: str) -> float:
        """Factor to scale IVAR-based errors of ``band`` by (1 when not measured)."""
        return float(self.noise_correction.get(band, 1.0))

    @property
    def bands(self) -> tuple[str, ...]:
        """Bands present, in file order."""
        return tuple(self.images)

    @property
    def shape(self) -> tuple[int, int]:
        """Image shape ``(ny, nx)``."""
        return next(iter(self.images.values())).shape

    @property
    def pixel_scale(self) -> float:
        """Mean pixel scale in arcsec per pixel, from the WCS."""
        return float(np.mean(proj_plane_pixel_scales(self.wcs)) * 3600.0)

    def fwhm_pixels(self, band: str) -> float:
        """PSF FWHM of ``band`` in pixels of this cutout."""
        return self.psf_fwhm[band] / self.pixel_scale


def write_cutout(path: str | Path, cutout: Cutout) -> Path:
    """Write a cutout in the contract's layout, atomically.

    Parameters
    ----------
    path : str or Path
        Destination FITS file; written to a temporary name and renamed.
    cutout : Cutout
        The data to write.

    Returns
    -------
    Path
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = cutout.wcs.to_header()
    primary = fits.PrimaryHDU()
    primary.header["OBJID"] = (str(cutout.objid), "galaxy identifier")
    hdus = [primary]
    for band, image in cutout.images.items():
        hdu = fits.ImageHDU(np.asarray(image, dtype=np.float32), header=header, name=band.upper())
        hdu.header["BUNIT"] = "nanomaggy"
        hdu.header["PSF_FWHM"] = (float(cutout.psf_fwhm[band]), "[arcsec] PSF FWHM")
        hdu.header["FILTER"] = band
        if band in cutout.noise_correction:
            hdu.header["NOISECOR"] = (
                float(cutout.noise_correction[band]),
                "sky scatter / IVAR-predicted scatter",
            )
        hdus.append(hdu)
    for band, ivar in cutout.ivar.items():
        hdu = fits.ImageHDU(np.asarray(ivar, dtype=np.float32), header=header, name=f"IVAR_{band.upper()}")
        hdu.header["BUNIT"] = "nanomaggy-2"
        hdus.append(hdu)
    for band, psf in cutout.psf.items():
        hdu = fits.ImageHDU(np.asarray(psf, dtype=np.float32), name=f"PSF_{band.upper()}")
        hdu.header["COMMENT"] = "PSF at the galaxy on the cutout pixel grid, centred, unit sum"
        hdus.append(hdu)
    tmp = path.with_name(f".{path.name}.tmp")
    # Every card was made here from numbers and fixed keywords: astropy's output
    # verification would re-parse each one (a third of the write time) to find nothing.
    fits.HDUList(hdus).writeto(tmp, overwrite=True, output_verify="ignore")
    tmp.replace(path)
    return path


class _Refused(Exception):
    """A cutout refused from its headers alone (not a reader failure)."""


@dataclass(frozen=True)
class _Hdu:
    """One HDU of a cutout: its name, header and a way to its pixels."""

    name: str
    header: Mapping
    has_data: bool
    load: Callable[[], np.ndarray]


def _oversize(headers: list[tuple[str, Mapping]]) -> str:
    """Why a cutout is too large to read, from its (name, header) pairs; empty when it is not."""
    for name, header in headers[1:]:
        sides = [int(header.get(f"NAXIS{k}", 0)) for k in (1, 2)]
        if max(sides) > MAX_SIDE_PX:
            return (
                f"{name or 'HDU'}: image is {sides[0]}x{sides[1]} px, over the {MAX_SIDE_PX} px limit "
                "of a side; cut a smaller cutout"
            )
    return ""


def _scanned_hdus(path: Path) -> list[_Hdu] | None:
    """The HDUs of a plain cutout, pixels read on demand; ``None`` when astropy must read it."""
    scanned = scan_images(path)
    if scanned is None:
        return None

    def loader(image: ScannedImage) -> Callable[[], np.ndarray]:
        def load() -> np.ndarray:
            try:
                return image.data()
            except (OSError, ValueError) as exc:  # the file changed since its headers were read
                raise CutoutError(path, f"unreadable or truncated FITS ({one_line(exc, 200)})") from exc

        return load

    return [_Hdu(h.name, h.header, bool(h.shape), loader(h)) for h in scanned]


def _astropy_hdus(path: Path) -> list[_Hdu]:
    """The HDUs of any FITS file astropy reads, pixels read now."""
    with warnings.catch_warnings():
        # astropy only warns about a truncated file; a truncated cutout is broken.
        warnings.simplefilter("error", AstropyWarning)
        # No hdul.verify(): it re-parses every card (about 60% of the read
        # time) and what it would fix cannot reach the checks below; a
        # malformed card still raises when its value is read.
        with fits.open(path, memmap=False) as hdul:
            oversize = _oversize([(hdu.name, hdu.header) for hdu in hdul])
            if oversize:
                raise _Refused(oversize)
            hdus = []
            for hdu in hdul:
                data = hdu.data  # read now: the file closes on return
                hdus.append(
                    _Hdu((hdu.name or "").upper(), hdu.header, data is not None, lambda data=data: data)
                )
            return hdus


def read_cutout(path: str | Path, bands: tuple[str, ...] | None = None) -> Cutout:
    """Read and check a cutout file.

    Plain files (float images in IMAGE extensions: what :func:`write_cutout`
    and the survey fetchers write) are scanned by
    :func:`clumpcat.survey.fits_scan.scan_images`, which reads only the pixels
    of the bands asked for; any other FITS file is read by astropy. Both give
    the same cutout and the same checks.

    Parameters
    ----------
    path : str or Path
        ``{objid}.fits`` in the contract's layout.
    bands : tuple of str, optional
        Bands that must be present (lower case). Default: all image HDUs.

    Returns
    -------
    Cutout
        With ``objid`` taken from the file name.

    Raises
    ------
    CutoutError
        Naming the file and the band if the file is missing, empty,
        unreadable or truncated; an image side is under :data:`MIN_SIDE_PX`
        or over :data:`MAX_SIDE_PX` (checked from the header, before reading
        pixels); a required band is absent; a band has integer pixels without
        ``BSCALE``, infinite pixels, no positive finite ``PSF_FWHM`` or no
        celestial WCS; a band is all NaN; an IVAR is infinite or negative; or
        bands differ in shape.
    """
    path = Path(path)
    if not path.exists():
        raise CutoutError(path, "file not found")
    try:
        hdus = _scanned_hdus(path)
        if hdus is None:
            hdus = _astropy_hdus(path)
        else:
            oversize = _oversize([(hdu.name, hdu.header) for hdu in hdus])
            if oversize:
                raise _Refused(oversize)
    except _Refused as exc:
        raise CutoutError(path, str(exc)) from None
    except (OSError, ValueError, TypeError, IndexError, AstropyWarning) as exc:
        if path.stat().st_size == 0:
            raise CutoutError(path, "empty file (0 bytes); fetch or write the cutout again") from exc
        raise CutoutError(path, f"unreadable or truncated FITS ({one_line(exc, 200)})") from exc
    found: dict[str, _Hdu] = {}
    ivar: dict[str, _Hdu] = {}
    psfs: dict[str, _Hdu] = {}
    for hdu in hdus[1:]:
        name = hdu.name.upper()
        if not hdu.has_data:
            continue
        if name.startswith("IVAR_"):
            ivar[name[5:].lower()] = hdu
        elif name.startswith("PSF_"):
            psfs[name[4:].lower()] = hdu
        elif len(name) == 1:
            found[name.lower()] = hdu
    wanted = tuple(bands) if bands is not None else tuple(found)
    if not wanted:
        raise CutoutError(path, "no band image HDUs (EXTNAME U, G, R, I, Z or Y)")
    missing = [b for b in wanted if b not in found]
    if missing:
        raise CutoutError(path, f"missing band(s) {', '.join(b.upper() for b in missing)}")
    images, psf, noise, wcs, shape = {}, {}, {}, None, None
    for band in wanted:
        header = found[band].header
        data = np.asarray(found[band].load(), dtype=np.float32)
        if data.ndim != 2:
            raise CutoutError(path, f"band {band.upper()}: image is {data.ndim}-D, expected 2-D")
        if min(data.shape) < MIN_SIDE_PX:
            raise CutoutError(
                path,
                f"band {band.upper()}: image is {data.shape[1]}x{data.shape[0]} px, under {MIN_SIDE_PX} px a side",
            )
        if header.get("BITPIX", -32) > 0 and "BSCALE" not in header:
            raise CutoutError(
                path,
                f"band {band.upper()}: integer pixels (BITPIX {header['BITPIX']}) without BSCALE; the cutout "
                "contract wants float nanomaggies",
            )
        if shape is None:
            shape = data.shape
        elif data.shape != shape:
            raise CutoutError(path, f"band {band.upper()}: shape {data.shape} differs from {shape}")
        if "PSF_FWHM" not in header:
            raise CutoutError(path, f"band {band.upper()}: no PSF_FWHM keyword")
        fwhm = float(header["PSF_FWHM"])
        if not np.isfinite(fwhm) or fwhm <= 0:
            raise CutoutError(path, f"band {band.upper()}: PSF_FWHM must be > 0, got {fwhm}")
        if not np.isfinite(data).any():
            raise CutoutError(path, f"band {band.upper()}: all pixels are NaN")
        n_inf = int(np.isinf(data).sum())
        if n_inf:
            # NaN marks a missing pixel; an infinity is a broken one (overflow, division by zero).
            raise CutoutError(
                path, f"band {band.upper()}: {n_inf} infinite pixel(s); mark bad pixels with NaN"
            )
        if wcs is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", AstropyWarning)
                band_wcs = WCS(header.text if isinstance(header, ScannedHeader) else header, naxis=2)
            if not band_wcs.has_celestial:
                raise CutoutError(path, f"band {band.upper()}: no celestial WCS")
            # .celestial copies the WCS (a millisecond); a 2-axis celestial one is already it.
            wcs = band_wcs if band_wcs.is_celestial else band_wcs.celestial
        images[band] = data
        psf[band] = fwhm
        if "NOISECOR" in header:
            noise[band] = float(header["NOISECOR"])
            if not np.isfinite(noise[band]) or noise[band] <= 0:
                raise CutoutError(path, f"band {band.upper()}: NOISECOR must be > 0, got {noise[band]}")
    ivars = {b: np.asarray(hdu.load(), dtype=np.float32) for b, hdu in ivar.items() if b in images}
    ivars = {b: v for b, v in ivars.items() if v.shape == shape}
    for band, value in ivars.items():
        if np.isinf(value).any() or (value < 0).any():
            raise CutoutError(path, f"IVAR_{band.upper()}: infinite or negative inverse variance")
    psf_images = {}
    for band, hdu in psfs.items():
        if band not in images:
            continue
        try:
            psf_images[band] = normalise_psf(
                np.asarray(hdu.load(), dtype=np.float64), what=f"PSF_{band.upper()}"
            )
        except ValueError as exc:
            raise CutoutError(path, str(exc)) from exc
    return Cutout(
        objid=path.stem,
        images=images,
        wcs=wcs,
        psf_fwhm=psf,
        ivar=ivars,
        psf=psf_images,
        noise_correction=noise,
    )
