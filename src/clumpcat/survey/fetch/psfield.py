"""The SDSS PSF at a position of a field, rebuilt from the psField KL basis.

SDSS ``photo`` models the PSF of each field and band as a Karhunen-Loeve
expansion whose weights vary as polynomials over the frame. The psField data
model (data.sdss.org, ``PHOTO_REDUX/RERUN/RUN/objcs/CAMCOL/psField``) stores,
in HDUs 1-5 for u, g, r, i, z, one table row per eigen-image ``k`` with

- ``RROWS``: the eigen-image, flattened (``RNROW`` x ``RNCOL`` pixels used);
- ``NROW_B``, ``NCOL_B``: the polynomial orders in row and column;
- ``C``: the coefficients, ``C_k[i, j]`` for ``row**i col**j``.

The PSF at frame pixel ``(row, col)`` is (SDSS DR17 "Extracting PSF Images",
www.sdss4.org/dr17/imaging/images/#psf, quoting esheldon/sdssidl
``pro/sdss/sdss_psfrec.pro``)::

    a_k = sum_i sum_j C_k[i, j] (0.001 row)^i (0.001 col)^j
    psf = sum_k a_k RROWS_k

The order of ``C`` is checked against that IDL: there the term
``(row*rcs)^(i mod nrow_b) * (col*rcs)^(i/nrow_b)`` takes ``cmat(i/nrow_b, i
mod nrow_b, k)``, i.e. IDL ``cmat(col power, row power)``; IDL's first index
varies fastest, so astropy (and a C-order reshape of the flat column) gives
NumPy ``C_k[row power, col power]``, the indexing used here. The eigen-image
is IDL ``reform(p, rncol, rnrow)``, NumPy ``(rnrow, rncol)``.

with ``row`` and ``col`` in photo's convention (the first pixel's centre at
0.5). HDU 6 holds ``PSF_WIDTH``, an effective-area width 10-20% wider than the
half-maximum FWHM the paper's apertures are scaled to; it is not used here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from clumpcat.constants import SDSS_BANDS
from clumpcat.survey.fetch.common import truncation_checked
from clumpcat.survey.fetch.http import TransferError

__all__ = ["PsfBasis", "read_psfield", "PSFIELD_ROWCOL_SCALE"]

#: Scale of row and column in the psField polynomials (data model).
PSFIELD_ROWCOL_SCALE = 0.001


@dataclass(frozen=True)
class PsfBasis:
    """The KL basis of one band of a psField file.

    Attributes
    ----------
    eigen : ndarray
        ``(n_eigen, rnrow, rncol)`` eigen-images.
    coeffs : list of ndarray
        Per eigen-image, ``(nrow_b, ncol_b)`` coefficients indexed [row power, column power].
    """

    eigen: np.ndarray
    coeffs: list[np.ndarray]

    def at(self, row: float, col: float) -> np.ndarray:
        """The PSF image at frame pixel ``(row, col)`` (0-based pixel indices).

        Returns
        -------
        ndarray
            ``(rnrow, rncol)`` image centred on its central pixel, as photo
            normalises it (close to unit sum).
        """
        # photo counts the first pixel's centre as 0.5.
        r = (float(row) + 0.5) * PSFIELD_ROWCOL_SCALE
        c = (float(col) + 0.5) * PSFIELD_ROWCOL_SCALE
        image = np.zeros(self.eigen.shape[1:], dtype=np.float64)
        for eigen, coeff in zip(self.eigen, self.coeffs, strict=True):
            powers_r = r ** np.arange(coeff.shape[0])
            powers_c = c ** np.arange(coeff.shape[1])
            image += float(powers_r @ coeff @ powers_c) * eigen
        return image


def _band_basis(hdu, name: str, band: str) -> PsfBasis:
    data = hdu.data
    columns = {c.upper() for c in data.columns.names}
    missing = [c for c in ("RROWS", "RNROW", "RNCOL", "NROW_B", "NCOL_B", "C") if c not in columns]
    if missing:
        raise TransferError(f"{name}: HDU {hdu.name or band} lacks column(s) {', '.join(missing)}")
    if len(data) == 0:
        raise TransferError(f"{name}: no eigen-images for band {band}")
    rnrow, rncol = int(data["RNROW"][0]), int(data["RNCOL"][0])
    eigen, coeffs = [], []
    for k in range(len(data)):
        flat = np.asarray(data["RROWS"][k], dtype=np.float64).ravel()
        if flat.size < rnrow * rncol:
            raise TransferError(
                f"{name}: band {band} eigen-image {k} has {flat.size} < {rnrow}x{rncol} pixels"
            )
        eigen.append(flat[: rnrow * rncol].reshape(rnrow, rncol))
        nrow_b, ncol_b = int(data["NROW_B"][k]), int(data["NCOL_B"][k])
        c = np.asarray(data["C"][k], dtype=np.float64)
        side = int(round(np.sqrt(c.size)))
        if c.ndim == 1 and side * side == c.size:
            # Without TDIM the flat column is the C array c[row power][col power] in memory order.
            c = c.reshape(side, side)
        if c.ndim != 2 or c.shape[0] < nrow_b or c.shape[1] < ncol_b:
            raise TransferError(f"{name}: band {band} C has shape {c.shape}, need {nrow_b}x{ncol_b}")
        coeffs.append(c[:nrow_b, :ncol_b])
    return PsfBasis(np.stack(eigen), coeffs)


def read_psfield(path: str | Path) -> dict[str, PsfBasis]:
    """The KL PSF basis of every band of a psField file (HDUs 1-5).

    Raises
    ------
    TransferError
        If the file is truncated, not FITS, or lacks the KL tables of the
        data model (the client fetches it again; a mirror reports it corrupt).
    """
    name = Path(path).name
    try:
        with truncation_checked(name), fits.open(path, memmap=False) as hdul:
            if len(hdul) < 1 + len(SDSS_BANDS):
                raise TransferError(f"{name}: {len(hdul)} HDUs, the psField data model has 7")
            return {band: _band_basis(hdul[k + 1], name, band) for k, band in enumerate(SDSS_BANDS)}
    except TransferError:
        raise
    except (OSError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError, Warning) as exc:
        raise TransferError(f"{name}: not a whole psField ({type(exc).__name__}: {exc})") from None
