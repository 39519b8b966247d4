"""Cut one galaxy out of several band images onto one pixel grid.

Survey bands are not pixel-aligned: SDSS takes the five bands of a field at
different times (the frames of one field differ by pixels and by a slight
rotation), and HSC cutouts near a patch edge differ in size. The cutout
contract wants one WCS for every band, so a reference band is cut with
:class:`astropy.nddata.Cutout2D` and every band is sampled on that grid by
bilinear interpolation through the WCSs (flux per pixel is conserved for equal
pixel scales, which holds within each survey). Pixels outside a band's image
become NaN; a grid point on the image's last row or column stays valid even
when the WCS round trip puts it a hair (1e-10 px) outside.
"""

from __future__ import annotations

import numpy as np
from astropy.coordinates import SkyCoord
from astropy.nddata import Cutout2D
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales
from scipy.ndimage import map_coordinates

__all__ = ["reference_grid", "sample_on_grid", "cutout_side_pixels", "psf_on_grid"]

#: Share of a grid point's interpolation weight that must fall on image pixels
#: for it to count as inside: a point 1e-3 px beyond the last pixel still does.
_INSIDE_WEIGHT = 0.999


def _partial_cutout(image, position: SkyCoord, side: int, wcs: WCS) -> Cutout2D:
    """A ``side`` x ``side`` float32 cutout, NaN where it leaves the image."""
    return Cutout2D(
        np.asarray(image, dtype=np.float32),
        position,
        (side, side),
        wcs=wcs,
        mode="partial",
        fill_value=np.nan,
        copy=True,
    )


def cutout_side_pixels(width_arcsec: float, pixel_scale: float, minimum: int = 16) -> int:
    """Odd number of pixels spanning ``width_arcsec`` (at least ``minimum``)."""
    side = int(np.ceil(width_arcsec / pixel_scale))
    side = max(side, minimum)
    return side + 1 if side % 2 == 0 else side


def reference_grid(
    image: np.ndarray, wcs: WCS, position: SkyCoord, side: int
) -> tuple[np.ndarray, WCS, float]:
    """Cut the reference band around ``position``.

    Parameters
    ----------
    image : ndarray
        Full 2-D image of the reference band.
    wcs : WCS
        Its celestial WCS.
    position : SkyCoord
        Galaxy centre.
    side : int
        Cutout side in pixels.

    Returns
    -------
    data : ndarray
        ``(side, side)`` float32 cutout, NaN where it leaves the image.
    wcs : WCS
        WCS of the cutout (the grid every band is sampled on).
    outside : float
        Fraction of cutout pixels outside the image (0 inside, 1 entirely off).

    Raises
    ------
    astropy.nddata.NoOverlapError
        If the cutout does not touch the image.
    """
    cut = _partial_cutout(image, position, side, wcs)
    inside = np.zeros((side, side), dtype=bool)
    inside[cut.slices_cutout] = True
    return cut.data.astype(np.float32), cut.wcs, float(1.0 - inside.mean())


def sample_on_grid(
    images: list[np.ndarray], wcs: WCS, grid_wcs: WCS, side: int, position: SkyCoord
) -> list[np.ndarray]:
    """Sample images of one band (sharing ``wcs``) on the reference grid.

    Parameters
    ----------
    images : list of ndarray
        Full 2-D images on the same pixel grid (e.g. a band's image and its
        inverse variance).
    wcs : WCS
        Celestial WCS of those images.
    grid_wcs : WCS
        WCS of the reference cutout (from :func:`reference_grid`).
    side : int
        Reference cutout side in pixels.
    position : SkyCoord
        Galaxy centre, to cut a small padded region first.

    Returns
    -------
    list of ndarray
        ``(side, side)`` float32 arrays, NaN outside the band's image.
    """
    scale_ratio = float(np.mean(proj_plane_pixel_scales(grid_wcs)) / np.mean(proj_plane_pixel_scales(wcs)))
    pad = int(np.ceil(side * max(scale_ratio, 1.0) * 1.5)) + 4
    first = _partial_cutout(images[0], position, pad, wcs)
    yy, xx = np.mgrid[0:side, 0:side]
    sky = grid_wcs.pixel_to_world(xx.ravel(), yy.ravel())
    bx, by = first.wcs.world_to_pixel(sky)
    coords = np.vstack([np.asarray(by).ravel(), np.asarray(bx).ravel()])
    out = []
    for k, image in enumerate(images):
        sub = first.data if k == 0 else _partial_cutout(image, position, pad, wcs).data
        out.append(_bilinear(np.asarray(sub, dtype=np.float64), coords).reshape(side, side))
    return out


def _bilinear(data: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``data`` at ``coords``, NaN where they leave its finite pixels.

    NaN pixels (outside the image) get zero weight instead of poisoning their
    neighbours, and the value is renormalised by the weight on finite pixels:
    a point whose weight lies (almost) wholly on finite pixels keeps their
    value; one with more than ``1 - _INSIDE_WEIGHT`` of it outside is NaN.
    """
    # A WCS round trip lands 1e-10 px off a pixel centre: snap such points so
    # that equal grids pass the frame's own pixels through unchanged.
    nearest = np.round(coords)
    coords = np.where(np.abs(coords - nearest) < 1e-6, nearest, coords)
    valid = np.isfinite(data)
    kwargs = {"order": 1, "mode": "constant", "cval": 0.0, "prefilter": False}
    weight = map_coordinates(valid.astype(np.float64), coords, **kwargs)
    total = map_coordinates(np.where(valid, data, 0.0), coords, **kwargs)
    with np.errstate(invalid="ignore", divide="ignore"):
        sampled = np.where(weight >= _INSIDE_WEIGHT, total / weight, np.nan)
    return sampled.astype(np.float32)


def psf_on_grid(psf: np.ndarray, psf_scale: float, grid_scale: float, rtol: float = 1e-3) -> np.ndarray:
    """A PSF image on a cutout's pixel grid: odd side, centred, unit sum.

    An odd-sided image at the grid's scale is only normalised. Otherwise it
    is resampled (cubic spline about its centroid, averaged over each output
    pixel) onto an odd grid of pixels ``grid_scale`` wide spanning the same
    field, so that the PSF of a survey whose PSF images come at another scale
    (or with an even side) matches the cutout contract.

    Parameters
    ----------
    psf : ndarray
        2-D PSF image, peak near the centre.
    psf_scale, grid_scale : float
        Pixel scales (arcsec per pixel) of the PSF image and of the cutout.
    rtol : float
        Relative scale difference below which the scales count as equal.

    Returns
    -------
    ndarray
        ``float64`` image of odd side summing to 1.

    Raises
    ------
    ValueError
        If the image is not a finite 2-D image with a positive sum.
    """
    image = np.asarray(psf, dtype=np.float64)
    if image.ndim != 2 or not np.isfinite(image).all() or not image.sum() > 0:
        raise ValueError("PSF image must be a finite 2-D image with a positive sum")
    ratio = grid_scale / psf_scale
    if abs(ratio - 1.0) <= rtol and image.shape[0] % 2 == 1 and image.shape[1] % 2 == 1:
        return image / image.sum()
    weights = np.clip(image, 0.0, None)
    yy, xx = np.indices(image.shape)
    yc, xc = (weights * yy).sum() / weights.sum(), (weights * xx).sum() / weights.sum()
    half = int(np.floor((min(image.shape) - 1) / 2.0 / ratio))
    # Onto coarser pixels, integrate: the spline is averaged over n x n points
    # per grid pixel, as a pixel collects light. Onto pixels as fine or finer,
    # the input is already pixel-integrated and is only interpolated.
    n = 1 if ratio <= 1.0 + rtol else 2 * int(np.ceil(ratio))
    sub = (np.arange(n) + 0.5) / n - 0.5
    axis = ((np.arange(-half, half + 1)[:, None] + sub[None, :]) * ratio).ravel()
    gy, gx = np.meshgrid(yc + axis, xc + axis, indexing="ij")
    sampled = map_coordinates(image, [gy.ravel(), gx.ravel()], order=3, mode="constant", cval=0.0)
    side = 2 * half + 1
    sampled = sampled.reshape(side, n, side, n).mean(axis=(1, 3))
    if not sampled.sum() > 0:
        raise ValueError("PSF image has no flux left after resampling")
    return sampled / sampled.sum()
