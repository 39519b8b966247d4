"""HSC-SSP DAS cutout files: planes, mask bits and the noise they really have.

A DAS coadd cutout asked for with ``image=on&mask=on&variance=on`` holds four
HDUs (hscPipe's exposure layout): ``PRIMARY`` (empty), ``IMAGE`` (counts at
zero point 27 AB, with the WCS), ``MASK`` (an integer bit mask whose header
names each bit: ``MP_<PLANE> = bit``, e.g. ``MP_BAD``, ``MP_SAT``, ``MP_CR``,
``MP_EDGE``, ``MP_NO_DATA``, ``MP_DETECTED``) and ``VARIANCE`` (counts^2).

Pixels flagged in a configured set of planes become NaN in the image and 0 in
the inverse variance. The variance plane of a warped, coadded image ignores the
noise correlated between pixels by the warping, so the scatter of sky pixels
exceeds ``sqrt(variance)`` (by 1.2-1.4 on real PDR3 cutouts): the ratio,
measured per cutout and band as the robust standard deviation
(:func:`astropy.stats.mad_std`) of ``image / sqrt(variance)`` over sky pixels
(neither masked nor ``DETECTED``), is kept as the band's noise correction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.stats import mad_std
from astropy.wcs import WCS

from clumpcat.constants import HSC_MASK_PLANES, HSC_ZEROPOINT, NANOMAGGY_ZEROPOINT
from clumpcat.survey.fetch.common import truncation_checked
from clumpcat.survey.fetch.http import TransferError

__all__ = [
    "COUNTS_TO_NANOMAGGY",
    "DAS_PLANES",
    "DEFAULT_MASK_PLANES",
    "DasCutout",
    "read_das_cutout",
    "noise_correction",
]

log = logging.getLogger(__name__)

#: Multiply HSC coadd counts (zero point 27 AB) by this to get nanomaggies (22.5 AB).
COUNTS_TO_NANOMAGGY = 10.0 ** (-0.4 * (HSC_ZEROPOINT - NANOMAGGY_ZEROPOINT))
#: HDUs of a DAS coadd cutout with every plane requested.
DAS_PLANES: tuple[str, ...] = ("IMAGE", "MASK", "VARIANCE")
#: Mask planes whose pixels are not data (``hsc.mask_planes`` in config.yaml).
DEFAULT_MASK_PLANES: tuple[str, ...] = HSC_MASK_PLANES
#: Fewest sky pixels for a noise correction; with fewer it is taken as 1.
MIN_SKY_PIXELS = 100


@dataclass
class DasCutout:
    """One band of a DAS cutout, in nanomaggies.

    Attributes
    ----------
    image : ndarray
        Pixels in nanomaggies.
    variance : ndarray or None
        Variance in nanomaggy^2 (None: no VARIANCE HDU).
    mask : ndarray or None
        Integer bit mask (None: no MASK HDU).
    planes : dict of str to int
        Mask plane name (without ``MP_``) to its bit.
    wcs : WCS
        Celestial WCS.
    """

    image: np.ndarray
    variance: np.ndarray | None
    mask: np.ndarray | None
    planes: dict[str, int]
    wcs: WCS

    def missing_planes(self) -> list[str]:
        """Planes of :data:`DAS_PLANES` the file lacks (or that do not match the image)."""
        missing = []
        if self.mask is None or not self.planes:
            missing.append("MASK")
        if self.variance is None:
            missing.append("VARIANCE")
        return missing

    def plane_pixels(self, names) -> np.ndarray:
        """Boolean image: pixels flagged in any of the named mask planes present."""
        if self.mask is None:
            return np.zeros(self.image.shape, dtype=bool)
        bits = 0
        for name in names:
            if name.upper() in self.planes:
                bits |= 1 << self.planes[name.upper()]
        return (self.mask.astype(np.int64) & bits) != 0

    def data_and_ivar(self, mask_planes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Image with masked pixels NaN, inverse variance 0 there, and the masked pixels.

        Raises
        ------
        ValueError
            If the variance plane is missing.
        """
        if self.variance is None:
            raise ValueError("no VARIANCE plane")
        bad = self.plane_pixels(mask_planes) | ~np.isfinite(self.image) | ~(self.variance > 0)
        image = np.where(bad, np.nan, self.image).astype(np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):
            ivar = np.where(bad, 0.0, 1.0 / self.variance).astype(np.float32)
        return image, ivar, bad


def noise_correction(
    image: np.ndarray, ivar: np.ndarray, sources: np.ndarray | None = None, minimum: int = MIN_SKY_PIXELS
) -> float:
    """Measured scatter of sky pixels over the scatter the inverse variance predicts.

    Parameters
    ----------
    image : ndarray
        Image, NaN where masked.
    ivar : ndarray
        Inverse variance, 0 where masked.
    sources : ndarray of bool, optional
        Pixels on detected sources, left out.
    minimum : int
        Fewest usable sky pixels; with fewer the correction is 1.

    Returns
    -------
    float
        ``mad_std(image * sqrt(ivar))`` over sky pixels (1 for pure white
        noise that the variance describes).
    """
    sky = np.isfinite(image) & (ivar > 0)
    if sources is not None:
        sky &= ~sources
    if sky.sum() < minimum:
        log.warning("only %d sky pixels; noise correction set to 1", int(sky.sum()))
        return 1.0
    value = float(mad_std(image[sky] * np.sqrt(ivar[sky])))
    return value if np.isfinite(value) and value > 0 else 1.0


def _hdu(hdul, name):
    return next((h for h in hdul if h.name == name and h.data is not None), None)


def read_das_cutout(path: str | Path) -> DasCutout:
    """Read a DAS cutout's ``IMAGE``, ``MASK`` and ``VARIANCE`` HDUs, in nanomaggies.

    Missing planes are reported by :meth:`DasCutout.missing_planes`, not
    raised: a whole file that lacks them is the service's answer, not a
    transfer error.

    Raises
    ------
    TransferError
        If the file is truncated, not FITS, or holds no 2-D image with a WCS.
    """
    name = Path(path).name
    try:
        with truncation_checked(name), fits.open(path, memmap=False) as hdul:
            image_hdu = _hdu(hdul, "IMAGE")
            if image_hdu is None:
                image_hdu = next(h for h in hdul if h.data is not None and np.ndim(h.data) == 2)
            image = np.asarray(image_hdu.data, dtype=np.float64)
            header = image_hdu.header.copy()
            var_hdu, mask_hdu = _hdu(hdul, "VARIANCE"), _hdu(hdul, "MASK")
            variance = None if var_hdu is None else np.asarray(var_hdu.data, dtype=np.float64)
            mask = None if mask_hdu is None else np.asarray(mask_hdu.data)
            planes = {}
            if mask_hdu is not None:
                planes = {
                    key[3:]: int(value) for key, value in mask_hdu.header.items() if key.startswith("MP_")
                }
    except (OSError, EOFError, ValueError, TypeError, IndexError, KeyError, StopIteration, Warning) as exc:
        raise TransferError(f"{name}: not a whole DAS cutout ({type(exc).__name__}: {exc})") from None
    if image.ndim != 2:
        raise TransferError(f"{name}: image is {image.ndim}-D, expected 2-D")
    wcs = WCS(header, naxis=2)
    if not wcs.has_celestial:
        raise TransferError(f"{name}: no celestial WCS")
    if variance is not None and variance.shape != image.shape:
        variance = None
    if mask is not None and mask.shape != image.shape:
        mask, planes = None, {}
    return DasCutout(
        image=image * COUNTS_TO_NANOMAGGY,
        variance=None if variance is None else variance * COUNTS_TO_NANOMAGGY**2,
        mask=mask,
        planes=planes,
        wcs=wcs.celestial,
    )
