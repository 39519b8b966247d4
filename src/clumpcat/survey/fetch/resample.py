"""Cut one galaxy out of several band images onto one pixel grid.

Survey bands are not pixel-aligned: SDSS takes the five bands of a field at
different times (the frames of one field differ by pixels and by a slight
rotation), and HSC cutouts near a patch edge differ in size. The cutout
contract wants one WCS for every band, so a reference band is cut with
:class:`astropy.nddata.Cutout2D` and every band is sampled on that grid by
bilinear interpolation through the WCSs (flux per pixel is conserved for equal
pixel scales, which holds within each survey). Pixels outside a band's image
become NaN.
"""

from __future__ import annotations

import numpy as np
from astropy.coordinates import SkyCoord
from astropy.nddata import Cutout2D
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales
from scipy.ndimage import map_coordinates

__all__ = ["reference_grid", "sample_on_grid", "cutout_side_pixels"]


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
        sampled = map_coordinates(
            np.asarray(sub, dtype=np.float64), coords, order=1, mode="constant", cval=np.nan, prefilter=False
        )
        out.append(sampled.reshape(side, side).astype(np.float32))
    return out
