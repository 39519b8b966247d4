"""Tests of clumpcat.render.torch_rgb: the torch rendering equals the PNG's pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clumpcat.constants import HSC_BANDS, HSC_PIXEL_SCALE
from clumpcat.render.rgb import asinh_rgb, lupton_rgb, render_cutout, resize_rgb
from clumpcat.render.torch_rgb import (
    asinh_tensor,
    flux_scale_of,
    lupton_tensor,
    render_tensor,
    resize_tensor,
    resize_weights,
    stack_bands,
)


def as_uint8(image: torch.Tensor) -> np.ndarray:
    """A (3, H, W) tensor in [0, 1] as the (H, W, 3) uint8 array of a PNG."""
    return (image * 255).round().to(torch.uint8).permute(1, 2, 0).numpy().astype(int)


def levels(image: torch.Tensor) -> np.ndarray:
    return image.permute(1, 2, 0).numpy().astype(int)


@pytest.mark.parametrize("shape", [(57, 83), (120, 120), (400, 400), (431, 517)])
def test_render_equals_the_png_within_one_grey_level(make_cutout, shape):
    """Up-sampled, untouched and down-sampled cutouts, with NaN and masked pixels."""
    cutout = make_cutout(shape=shape)
    for band in ("g", "r", "i"):
        cutout.images[band] = cutout.images[band].copy()
    cutout.images["r"][5:9, 10:20] = np.nan  # a masked stripe in one band
    cutout.images["g"][-6:, :] = np.nan  # a missing edge
    cutout.images["i"][0, 0] = np.inf
    expected, _geometry = render_cutout(cutout, "sdss")
    got = as_uint8(render_tensor(torch.from_numpy(stack_bands(cutout.images)), "sdss"))
    assert got.shape == expected.shape == (400, 400, 3)
    diff = np.abs(got - expected.astype(int))
    assert diff.max() <= 1
    assert (diff > 0).mean() < 0.01  # float32 vs float64 flips a level only rarely
    assert expected.max() > 100  # a visible galaxy, not an empty image


def test_lupton_levels_equal_astropy(make_cutout):
    cutout = make_cutout(shape=(64, 90))
    images = {b: v.copy() for b, v in cutout.images.items()}
    images["i"][20:30, 20:30] = np.nan
    expected = lupton_rgb(images).astype(int)
    got = levels(lupton_tensor(torch.from_numpy(stack_bands(images)).double()))
    np.testing.assert_array_equal(got, expected)  # float64 like astropy: exact
    assert (got[20:30, 20:30, 0] == 0).all()  # NaN in i renders as no red


def test_asinh_for_hsc_equals_numpy(make_cutout):
    cutout = make_cutout(shape=(150, 150), bands=HSC_BANDS, pixel_scale=HSC_PIXEL_SCALE)
    scale = flux_scale_of("hsc", cutout.pixel_scale)
    assert scale == pytest.approx((0.396 / HSC_PIXEL_SCALE) ** 2, rel=1e-3)
    expected = asinh_rgb(cutout.images, flux_scale=scale).astype(int)
    raw = torch.from_numpy(stack_bands(cutout.images)).double()
    np.testing.assert_array_equal(levels(asinh_tensor(raw, flux_scale=scale)), expected)
    png, _ = render_cutout(cutout, "hsc")
    got = as_uint8(render_tensor(raw.float(), "hsc", flux_scale=scale))
    assert np.abs(got - png.astype(int)).max() <= 1


@pytest.mark.parametrize("resample", ["lanczos", "bilinear"])
@pytest.mark.parametrize("n_in", [37, 200, 401, 1000])
def test_resize_is_pillows(resample, n_in):
    rng = np.random.default_rng(n_in)
    rgb = rng.integers(0, 256, size=(n_in // 2 + 3, n_in, 3), dtype=np.uint8)
    expected = resize_rgb(rgb, size=128, resample=resample).astype(int)
    got = levels(resize_tensor(torch.from_numpy(rgb).permute(2, 0, 1).float(), size=128, resample=resample))
    # Noise is the hardest case for the one-level rounding: every pixel differs.
    assert np.abs(got - expected).max() <= 1
    assert (got != expected).mean() < 0.02


def test_resize_weights_are_a_normalised_local_filter():
    up, down = resize_weights(100, 400), resize_weights(1000, 400)
    assert up.shape == (400, 100) and down.shape == (400, 1000)
    np.testing.assert_allclose(up.sum(1).numpy(), 1.0, atol=1e-5)
    np.testing.assert_allclose(down.sum(1).numpy(), 1.0, atol=1e-5)
    # Lanczos-3 reaches 3 input pixels either side up-sampling, 3 x 2.5 down-sampling.
    assert int((up[200] != 0).sum()) <= 7 and int((down[200] != 0).sum()) <= 2 * 8 + 1
    # A constant image stays constant.
    flat = torch.full((3, 100, 100), 77.0)
    assert torch.equal(resize_tensor(flat), torch.full((3, 400, 400), 77.0))


def test_unknown_survey_and_filter_are_named():
    raw = torch.zeros((3, 10, 10))
    with pytest.raises(ValueError, match="'survey' must be one of"):
        render_tensor(raw, "euclid")
    with pytest.raises(ValueError, match="'resample' must be one of"):
        resize_weights(10, 20, "nearest")
