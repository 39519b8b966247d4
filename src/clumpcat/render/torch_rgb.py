"""The detector's RGB image rendered with torch, on the inference device.

The same composites as :mod:`clumpcat.render.rgb` (Lupton for SDSS and the
synthetic survey, App. A.1; per-band asinh for HSC, App. A.2) and the same
Pillow resize to ``RENDER_SIZE``, written as tensor operations so that
``clumpcat detect`` goes from cutout pixels to the model input without
writing and decoding a PNG. Each step reproduces the numpy/Pillow one:

* the composite is quantised to 8 bits as astropy does (``x * 255`` truncated);
* the resize is Pillow's separable convolution (Lanczos or bilinear, the
  filter widened when down-sampling), horizontal pass first, each pass
  rounded and clipped to 8 bits as Pillow's 8-bit path does. Each pass
  gathers the few input pixels under the filter of every output pixel and
  sums them with precomputed weights, cached per input length: a handful of
  tensor operations per image, on a GPU or a CPU.

In float32 a pixel may land on the other side of an 8-bit boundary, so the
result equals the PNG path within one grey level (tested).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping

import numpy as np
import torch

from clumpcat.constants import (
    LUPTON_MINIMUM,
    LUPTON_Q,
    LUPTON_SCALES,
    LUPTON_STRETCH,
    RENDER_SIZE,
    RGB_BANDS,
    SDSS_PIXEL_SCALE,
)
from clumpcat.render.rgb import HSC_ASINH_MAXIMUM, HSC_ASINH_SOFTENING, RESAMPLE, SURVEY_RENDERERS

__all__ = [
    "stack_bands",
    "flux_scale_of",
    "lupton_tensor",
    "asinh_tensor",
    "resize_weights",
    "resize_tensor",
    "render_tensor",
]

#: Fixed-point precision of Pillow's 8-bit resampling coefficients
#: (libImaging/Resample.c: 32 - 8 - 2 bits).
_PILLOW_PRECISION_BITS = 22

#: Filter support in input pixels (Pillow: Lanczos 3, bilinear 1).
_SUPPORT = {"lanczos": 3.0, "bilinear": 1.0}


def stack_bands(images: Mapping[str, np.ndarray], bands: tuple[str, str, str] = RGB_BANDS) -> np.ndarray:
    """The red, green and blue band images as one (3, ny, nx) float32 array, unscaled.

    Non-finite pixels are kept; :func:`render_tensor` sets them to 0 as
    :func:`clumpcat.render.rgb.lupton_rgb` does.

    Raises
    ------
    ValueError
        If a band is missing or the bands differ in shape.
    """
    missing = [b for b in bands if b not in images]
    if missing:
        raise ValueError(f"RGB composite needs bands {', '.join(bands)}; missing {', '.join(missing)}")
    shapes = {np.shape(images[b]) for b in bands}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"bands {', '.join(bands)} must be 2-D images of one shape, got {sorted(shapes)}")
    return np.stack([np.asarray(images[b], dtype=np.float32) for b in bands])


def flux_scale_of(survey: str, pixel_scale: float) -> float:
    """Flux multiplier of the composite: SDSS pixel area over the cutout's for asinh (HSC), else 1."""
    if SURVEY_RENDERERS[survey] == "asinh":
        return (SDSS_PIXEL_SCALE / pixel_scale) ** 2
    return 1.0


def _scaled(raw: torch.Tensor, scales, bands, factor: float) -> torch.Tensor:
    """Non-finite pixels to 0, each channel times its scale (and ``factor``)."""
    mult = torch.tensor([float(scales[b]) * factor for b in bands], dtype=raw.dtype, device=raw.device)
    return torch.nan_to_num(raw, nan=0.0, posinf=0.0, neginf=0.0) * mult.view(3, 1, 1)


def _to_8bit(x: torch.Tensor) -> torch.Tensor:
    """astropy's conversion: ``(x * 255).astype(uint8)`` of values in [0, 1] (truncation)."""
    return torch.floor(x * 255.0).clamp_(0.0, 255.0)


def lupton_tensor(
    raw: torch.Tensor,
    *,
    q: float = LUPTON_Q,
    stretch: float = LUPTON_STRETCH,
    minimum: float = LUPTON_MINIMUM,
    scales: Mapping[str, float] = LUPTON_SCALES,
    bands: tuple[str, str, str] = RGB_BANDS,
) -> torch.Tensor:
    """Lupton et al. (2004) composite (App. A.1) of a (3, ny, nx) band stack.

    Parameters
    ----------
    raw : Tensor, shape (3, ny, nx)
        The ``bands`` images in nanomaggies, unscaled (:func:`stack_bands`).
    q, stretch, minimum, scales, bands
        As :func:`clumpcat.render.rgb.lupton_rgb`.

    Returns
    -------
    Tensor, shape (3, ny, nx)
        8-bit grey levels (integers 0-255) in ``raw``'s dtype, channels R, G, B.

    Notes
    -----
    The steps of astropy's ``RGBImageMappingLupton``: intensity ``I`` = mean
    of the channels, each channel times ``asinh(I Q / stretch) slope / I``
    (0 where ``I <= 0``), clipped at 0, and divided by the channels' maximum
    where that exceeds 1.
    """
    rgb = _scaled(raw, scales, bands, 1.0) - float(minimum)
    intensity = rgb.mean(dim=0, keepdim=True)
    slope = 0.1 / math.asinh(0.1 * q)
    stretched = torch.asinh(intensity * (q / stretch)) * slope
    ratio = torch.where(intensity <= 0, torch.zeros_like(intensity), stretched / intensity)
    rgb = (rgb * ratio).clamp_(min=0.0)
    top = rgb.amax(dim=0, keepdim=True)
    rgb = torch.where(top > 1.0, rgb / top.clamp(min=1.0), rgb)
    return _to_8bit(rgb)


def asinh_tensor(
    raw: torch.Tensor,
    *,
    softening: float = HSC_ASINH_SOFTENING,
    maximum: float = HSC_ASINH_MAXIMUM,
    minimum: float = 0.0,
    scales: Mapping[str, float] = LUPTON_SCALES,
    bands: tuple[str, str, str] = RGB_BANDS,
    flux_scale: float = 1.0,
) -> torch.Tensor:
    """Per-band asinh composite (App. A.2) of a (3, ny, nx) band stack.

    Parameters as :func:`clumpcat.render.rgb.asinh_rgb`; returns 8-bit grey
    levels in ``raw``'s dtype.
    """
    if not (softening > 0 and maximum > minimum):
        raise ValueError(
            f"asinh stretch needs softening > 0 and maximum > minimum, got "
            f"softening={softening}, minimum={minimum}, maximum={maximum}"
        )
    a = min(softening / (maximum - minimum), 1.0)
    x = (_scaled(raw, scales, bands, flux_scale) - minimum) / (maximum - minimum)
    x = torch.asinh(x.clamp_(0.0, 1.0) / a) / math.asinh(1.0 / a)
    return _to_8bit(x)


def _filter(name: str, x: np.ndarray) -> np.ndarray:
    """Pillow's Lanczos (sinc(x) sinc(x/3) on [-3, 3)) or bilinear (triangle) kernel."""
    if name == "lanczos":
        return np.where((x >= -3.0) & (x < 3.0), np.sinc(x) * np.sinc(x / 3.0), 0.0)
    return np.clip(1.0 - np.abs(x), 0.0, None)


@functools.lru_cache(maxsize=1024)
def _taps_numpy(n_in: int, size: int, resample: str) -> tuple[np.ndarray, np.ndarray]:
    # Pillow's precompute_coeffs (libImaging/Resample.c) followed by its
    # fixed-point rounding of the coefficients (normalize_coeffs_8bpc).
    # Output pixel j reads input pixels index[j, k] with weight[j, k].
    scale = n_in / size
    filterscale = max(scale, 1.0)
    support = _SUPPORT[resample] * filterscale
    centre = (np.arange(size) + 0.5) * scale
    # C's (int) cast truncates toward zero; both bounds are then clipped.
    xmin = np.maximum(np.trunc(centre - support + 0.5), 0).astype(np.int64)
    xmax = np.minimum(np.trunc(centre + support + 0.5), n_in).astype(np.int64)
    taps = int((xmax - xmin).max())
    index = xmin[:, None] + np.arange(taps)[None, :]
    inside = index < xmax[:, None]
    weight = np.where(inside, _filter(resample, (index - centre[:, None] + 0.5) / filterscale), 0.0)
    total = weight.sum(axis=1, keepdims=True)
    weight = np.divide(weight, total, out=weight, where=total != 0.0)
    unit = float(1 << _PILLOW_PRECISION_BITS)
    weight = np.trunc(weight * unit + np.where(weight < 0, -0.5, 0.5)) / unit
    return np.minimum(index, n_in - 1), weight


def resize_weights(
    n_in: int, size: int = RENDER_SIZE, resample: str = "lanczos", *, device=None, dtype=torch.float32
) -> torch.Tensor:
    """The (size, n_in) matrix of Pillow's one-axis resize from ``n_in`` to ``size`` pixels.

    Parameters
    ----------
    n_in : int
        Input length in pixels.
    size : int
        Output length.
    resample : {'lanczos', 'bilinear'}
        Pillow filter (:data:`clumpcat.render.rgb.RESAMPLE`).
    device, dtype
        Of the returned tensor.

    Returns
    -------
    Tensor
        Row ``j`` holds the weights of output pixel ``j`` (Pillow samples at
        pixel centres; rows sum to 1 up to Pillow's fixed-point rounding).
    """
    index, weight = _taps(n_in, size, resample, torch.device("cpu"), torch.float64)
    dense = torch.zeros((size, n_in), dtype=torch.float64)
    dense.scatter_add_(1, index, weight)
    return dense.to(device=device, dtype=dtype)


@functools.lru_cache(maxsize=256)
def _taps(n_in: int, size: int, resample: str, device: torch.device, dtype: torch.dtype):
    if resample not in RESAMPLE:
        raise ValueError(f"'resample' must be one of {sorted(RESAMPLE)}, got {resample!r}")
    if n_in < 1 or size < 1:
        raise ValueError(f"resize lengths must be positive, got {n_in} -> {size}")
    index, weight = _taps_numpy(int(n_in), int(size), resample)
    index = torch.from_numpy(np.ascontiguousarray(index.T)).to(device).T
    weight = torch.from_numpy(np.ascontiguousarray(weight.T)).to(device=device, dtype=dtype).T
    return index, weight


def _resize_last_axis(x: torch.Tensor, size: int, resample: str) -> torch.Tensor:
    """One Pillow pass along the last axis: a few taps per output pixel, not a dense product."""
    index, weight = _taps(x.shape[-1], size, resample, x.device, x.dtype)
    # One index_select per tap (7 when up-sampling with Lanczos): contiguous
    # copies, much faster than one gather of every tap or a dense product.
    out = x.index_select(-1, index[:, 0]) * weight[:, 0]
    for k in range(1, index.shape[1]):
        out.addcmul_(x.index_select(-1, index[:, k]), weight[:, k])
    return out


def _round_8bit(x: torch.Tensor) -> torch.Tensor:
    """Pillow's clip8 of a pass: round half up, clip to [0, 255]."""
    return torch.floor(x + 0.5).clamp_(0.0, 255.0)


def resize_tensor(levels: torch.Tensor, size: int = RENDER_SIZE, resample: str = "lanczos") -> torch.Tensor:
    """Resize 8-bit grey levels (3, ny, nx) to (3, size, size) as Pillow does.

    Horizontal pass first, then vertical, each rounded to 8 bits; an axis
    already ``size`` long is left alone (Pillow skips that pass).
    """
    _, ny, nx = levels.shape
    out = levels
    if nx != size:
        out = _round_8bit(_resize_last_axis(out, size, resample))
    if ny != size:
        out = _round_8bit(_resize_last_axis(out.transpose(-1, -2), size, resample)).transpose(-1, -2)
    return out


def render_tensor(
    raw: torch.Tensor,
    survey: str,
    *,
    flux_scale: float = 1.0,
    size: int = RENDER_SIZE,
    resample: str = "lanczos",
) -> torch.Tensor:
    """The detector's input image from a (3, ny, nx) band stack, on ``raw``'s device.

    Parameters
    ----------
    raw : Tensor, shape (3, ny, nx)
        Unscaled i, r, g images in nanomaggies (:func:`stack_bands`), float32
        or float64; NaN pixels render as empty sky.
    survey : {'sdss', 'synthetic', 'hsc'}
        Lupton composite for SDSS-like surveys, asinh for HSC.
    flux_scale : float
        For the asinh composite: SDSS pixel area over the cutout pixel area
        (:func:`flux_scale_of`).
    size : int
        Output side (App. A.1, A.2: 400).
    resample : {'lanczos', 'bilinear'}

    Returns
    -------
    Tensor, shape (3, size, size)
        Values in [0, 1]: the rendered PNG divided by 255, within one grey
        level.
    """
    method = SURVEY_RENDERERS.get(survey)
    if method is None:
        allowed = ", ".join(repr(s) for s in SURVEY_RENDERERS)
        raise ValueError(f"'survey' must be one of {allowed}, got {survey!r}")
    if method == "lupton":
        levels = lupton_tensor(raw)
    else:
        levels = asinh_tensor(raw, flux_scale=flux_scale)
    return resize_tensor(levels, size=size, resample=resample).div_(255.0)
