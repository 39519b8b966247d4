"""Cutout <-> rendered-image pixel geometry, shared by every stage.

Frames and conventions
----------------------
* The *cutout* frame is the FITS pixel grid, 0-based; the *rendered* frame is
  the 400x400 PNG. Row ``j`` of the PNG (counted from the top of the file)
  holds cutout row ``y`` scaled, i.e. the array is written in numpy order
  with no vertical flip; shown with ``origin='upper'`` a north-up WCS appears
  south-up. Every stage maps coordinates through :class:`RenderGeometry`, so
  the orientation never has to be guessed.
* **Points** use the pixel-centre convention (pixel ``i`` has its centre at
  ``i``): ``render = (cutout + 0.5) * scale - 0.5``.
* **Boxes** are XYXY in continuous *edge* coordinates (pixel ``i`` spans
  ``[i, i + 1]``, the torchvision/COCO convention): ``render_edge =
  cutout_edge * scale``. A box around the point ``x`` therefore has centre
  ``(x0 + x1) / 2 = x + 0.5``; :func:`box_centres` and
  :func:`boxes_around` make this explicit. Both maps agree: the centre of a
  mapped box is the mapped centre of the box.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from clumpcat.constants import RENDER_SIZE

__all__ = ["RenderGeometry", "box_centres", "boxes_around"]


@dataclass(frozen=True)
class RenderGeometry:
    """Mapping between a cutout's pixels and its rendered image's pixels.

    Parameters
    ----------
    nx, ny : int
        Cutout width and height in cutout pixels.
    scale_x, scale_y : float
        Rendered pixels per cutout pixel (``RENDER_SIZE / nx`` and
        ``RENDER_SIZE / ny`` for a render).

    Notes
    -----
    Points use the pixel-centre convention, ``render = (cutout + 0.5) *
    scale - 0.5``; XYXY boxes use edge coordinates, ``render = cutout *
    scale`` (see the module docstring).

    Examples
    --------
    >>> g = RenderGeometry.for_shape((100, 100))
    >>> g.cutout_to_render(49.5, 49.5)
    (199.5, 199.5)
    """

    nx: int
    ny: int
    scale_x: float
    scale_y: float

    @classmethod
    def for_shape(cls, shape: tuple[int, int], size: int = RENDER_SIZE) -> RenderGeometry:
        """Geometry of a cutout of ``shape = (ny, nx)`` rendered at ``size`` x ``size``."""
        ny, nx = int(shape[0]), int(shape[1])
        if nx <= 0 or ny <= 0:
            raise ValueError(f"cutout shape must be positive, got {shape}")
        return cls(nx=nx, ny=ny, scale_x=size / nx, scale_y=size / ny)

    @property
    def scale(self) -> float:
        """Geometric-mean scale, for lengths such as a FWHM (rendered px per cutout px)."""
        return math.sqrt(self.scale_x * self.scale_y)

    def cutout_to_render(self, x, y):
        """Map points (pixel centres) from the cutout frame to the rendered frame.

        Parameters
        ----------
        x, y : float or array_like
            0-based cutout pixel coordinates.

        Returns
        -------
        x, y : float or ndarray
            0-based rendered pixel coordinates.
        """
        xr = (np.asarray(x, dtype=float) + 0.5) * self.scale_x - 0.5
        yr = (np.asarray(y, dtype=float) + 0.5) * self.scale_y - 0.5
        return _unwrap(xr), _unwrap(yr)

    def render_to_cutout(self, x, y):
        """Map points (pixel centres) from the rendered frame to the cutout frame.

        Inverse of :meth:`cutout_to_render`.
        """
        xc = (np.asarray(x, dtype=float) + 0.5) / self.scale_x - 0.5
        yc = (np.asarray(y, dtype=float) + 0.5) / self.scale_y - 0.5
        return _unwrap(xc), _unwrap(yc)

    def boxes_cutout_to_render(self, boxes) -> np.ndarray:
        """Map XYXY boxes (edge coordinates) from the cutout to the rendered frame.

        Parameters
        ----------
        boxes : array_like, shape (N, 4) or (4,)
            ``x0, y0, x1, y1`` in cutout pixels.

        Returns
        -------
        ndarray
            Same shape, in rendered pixels.
        """
        return np.asarray(boxes, dtype=float) * self._box_scale()

    def boxes_render_to_cutout(self, boxes) -> np.ndarray:
        """Map XYXY boxes (edge coordinates) from the rendered to the cutout frame."""
        return np.asarray(boxes, dtype=float) / self._box_scale()

    def _box_scale(self) -> np.ndarray:
        return np.array([self.scale_x, self.scale_y, self.scale_x, self.scale_y])


def _unwrap(a: np.ndarray):
    return float(a) if a.ndim == 0 else a


def box_centres(boxes) -> tuple[np.ndarray, np.ndarray]:
    """Centres of XYXY edge-coordinate boxes as pixel-centre points.

    Parameters
    ----------
    boxes : array_like, shape (N, 4)

    Returns
    -------
    x, y : ndarray
        ``(x0 + x1) / 2 - 0.5`` and ``(y0 + y1) / 2 - 0.5``, in the same frame.
    """
    b = np.atleast_2d(np.asarray(boxes, dtype=float))
    return (b[:, 0] + b[:, 2]) / 2 - 0.5, (b[:, 1] + b[:, 3]) / 2 - 0.5


def boxes_around(x, y, side_x, side_y=None) -> np.ndarray:
    """XYXY edge-coordinate boxes centred on pixel-centre points.

    Parameters
    ----------
    x, y : array_like
        Pixel-centre coordinates of the box centres.
    side_x : float or array_like
        Box width in pixels.
    side_y : float or array_like, optional
        Box height; default ``side_x`` (squares).

    Returns
    -------
    ndarray, shape (N, 4)
        Inverse of :func:`box_centres`.
    """
    x = np.atleast_1d(np.asarray(x, dtype=float)) + 0.5
    y = np.atleast_1d(np.asarray(y, dtype=float)) + 0.5
    hx = np.broadcast_to(np.asarray(side_x, dtype=float), x.shape) / 2
    hy = hx if side_y is None else np.broadcast_to(np.asarray(side_y, dtype=float), y.shape) / 2
    return np.stack([x - hx, y - hy, x + hx, y + hy], axis=1)
