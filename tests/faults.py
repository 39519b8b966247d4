"""Broken cutouts of every kind the fault suite injects (tests/test_faults.py, benchmarks/bench_faults.py).

Each breaker writes ``folder/{objid}.fits`` from a good :class:`Cutout`,
broken in one way, and returns the path. :data:`EXPECTED` holds a fragment of
the reason the ledger must give for each kind.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.wcs import WCS

from clumpcat.survey.cutouts import Cutout, write_cutout

__all__ = ["BREAKERS", "EXPECTED", "write_broken", "write_huge"]


def _truncated(path: Path, cutout: Cutout) -> Path:
    write_cutout(path, cutout)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    return path


def _empty(path: Path, cutout: Cutout) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def _edit(path: Path, cutout: Cutout, change: Callable[[fits.HDUList], None]) -> Path:
    write_cutout(path, cutout)
    with fits.open(path) as hdul:
        hdul = fits.HDUList([h.copy() for h in hdul])
    change(hdul)
    hdul.writeto(path, overwrite=True)
    return path


def _int16(path: Path, cutout: Cutout) -> Path:
    def change(hdul):
        hdul["R"].data = np.round(hdul["R"].data * 100).astype(np.int16)  # raw counts, no BSCALE

    return _edit(path, cutout, change)


def _infinite(path: Path, cutout: Cutout) -> Path:
    def change(hdul):
        data = hdul["R"].data.copy()
        data[3, 5] = np.inf
        data[7, 2] = -np.inf
        hdul["R"].data = data

    return _edit(path, cutout, change)


def _psf_nan(path: Path, cutout: Cutout) -> Path:
    def change(hdul):
        hdul["G"].header["PSF_FWHM"] = "NaN"  # FITS cannot hold a float NaN; a text one gets through

    return _edit(path, cutout, change)


def _psf_negative(path: Path, cutout: Cutout) -> Path:
    def change(hdul):
        hdul["I"].header["PSF_FWHM"] = -1.2

    return _edit(path, cutout, change)


def _tiny(path: Path, cutout: Cutout) -> Path:
    images = {b: im[:3, :3].copy() for b, im in cutout.images.items()}
    ivar = {b: v[:3, :3].copy() for b, v in cutout.ivar.items()}
    return write_cutout(path, Cutout(cutout.objid, images, cutout.wcs, cutout.psf_fwhm, ivar))


def _no_wcs(path: Path, cutout: Cutout) -> Path:
    return write_cutout(path, Cutout(cutout.objid, cutout.images, WCS(naxis=2), cutout.psf_fwhm, cutout.ivar))


def _band_missing(path: Path, cutout: Cutout) -> Path:
    images = {b: im for b, im in cutout.images.items() if b != "g"}
    return write_cutout(path, Cutout(cutout.objid, images, cutout.wcs, cutout.psf_fwhm, cutout.ivar))


def _nan_band(path: Path, cutout: Cutout) -> Path:
    images = dict(cutout.images, r=np.full_like(cutout.images["r"], np.nan))
    return write_cutout(path, Cutout(cutout.objid, images, cutout.wcs, cutout.psf_fwhm, cutout.ivar))


def write_huge(path: Path, cutout: Cutout, side: int = 5000) -> Path:
    """A valid cutout whose bands are ``side`` x ``side`` float32 images of zeros.

    The pixel blocks are holes of a sparse file: 5000 x 5000 x 5 bands is
    500 MB to a reader, next to nothing on disk.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    header = cutout.wcs.to_header()
    header["CRPIX1"] = header["CRPIX2"] = (side + 1) / 2
    nbytes = side * side * 4
    padded = -(-nbytes // 2880) * 2880
    with open(path, "wb") as handle:
        handle.write(fits.PrimaryHDU().header.tostring().encode())
        for band in cutout.images:
            hdu = fits.ImageHDU(header=header.copy(), name=band.upper())
            hdu.header["BITPIX"] = -32
            hdu.header["NAXIS"] = 2
            hdu.header.insert("NAXIS", ("NAXIS1", side), after=True)
            hdu.header.insert("NAXIS1", ("NAXIS2", side), after=True)
            hdu.header["BUNIT"] = "nanomaggy"
            hdu.header["PSF_FWHM"] = cutout.psf_fwhm[band]
            handle.write(hdu.header.tostring().encode())
            handle.seek(padded, 1)
        handle.truncate()
    return path


#: kind -> breaker(path, cutout) -> path
BREAKERS: dict[str, Callable[[Path, Cutout], Path]] = {
    "truncated": _truncated,
    "empty": _empty,
    "int16": _int16,
    "infinite": _infinite,
    "psf_nan": _psf_nan,
    "psf_negative": _psf_negative,
    "tiny_3x3": _tiny,
    "huge_5000": write_huge,
    "no_wcs": _no_wcs,
    "band_missing": _band_missing,
    "nan_band": _nan_band,
}

#: kind -> a fragment of the ledger reason
EXPECTED: dict[str, str] = {
    "truncated": "truncated",
    "empty": "empty file",
    "int16": "integer pixels",
    "infinite": "infinite pixel",
    "psf_nan": "PSF_FWHM must be > 0, got nan",
    "psf_negative": "PSF_FWHM must be > 0, got -1.2",
    "tiny_3x3": "3x3 px, under",
    "huge_5000": "5000x5000 px, over",
    "no_wcs": "no celestial WCS",
    "band_missing": "missing band(s) G",
    "nan_band": "all pixels are NaN",
}


def write_broken(folder: Path, kind: str, cutout: Cutout) -> Path:
    """Write ``cutout`` to ``folder/{objid}.fits`` broken as ``kind`` (a key of :data:`BREAKERS`)."""
    return BREAKERS[kind](Path(folder) / f"{cutout.objid}.fits", cutout)


#: (x, y, flux) of the clumps in the conftest galaxy the fault suite breaks.
SOURCES = ((20.0, 40.0, 3.0), (45.0, 25.0, 2.0))


def true_detections(objids) -> pd.DataFrame:
    """Detections at the true clump positions, standing in for ``detect`` where no model runs."""
    rows = []
    for objid in objids:
        for x, y, _flux in SOURCES:
            rows.append(
                dict(objid=objid, x=x, y=y, ra=0.0, dec=0.0, box_x0=x - 4.0, box_y0=y - 4.0)
                | dict(box_x1=x + 5.0, box_y1=y + 5.0, score=0.9, label="normal")
            )
    return pd.DataFrame(rows)
