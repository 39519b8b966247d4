"""The sparse-product RoIAlign equals torchvision's, values and gradients."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign, roi_align

from clumpcat.detection.model import build_detector
from clumpcat.detection.roi_align import SparseRoIAlign, roi_align_matrix


def _features(generator: torch.Generator, n: int = 3) -> dict[str, torch.Tensor]:
    sizes = {"0": 48, "1": 24, "2": 12}
    return {
        k: torch.randn(n, 8, s, s + 3, generator=generator).requires_grad_(True) for k, s in sizes.items()
    }


def _boxes(generator: torch.Generator, n_images: int, per_image: int, extent: float) -> list[torch.Tensor]:
    """Boxes of all sizes, some reaching past the image edges, some under one feature pixel."""
    out = []
    for _ in range(n_images):
        corner = torch.rand(per_image, 2, generator=generator) * (extent + 40) - 20
        size = torch.rand(per_image, 2, generator=generator) ** 2 * extent + 0.3
        out.append(torch.cat([corner, corner + size], dim=1))
    return out


def _weighted_sum(pooled: torch.Tensor) -> torch.Tensor:
    # A fixed, non-uniform weighting so every bin's gradient is checked.
    return (pooled * torch.linspace(-1.0, 2.0, pooled.numel()).reshape(pooled.shape)).sum()


@pytest.mark.parametrize("sampling_ratio", [1, 2, 3])
def test_matches_torchvision_values_and_gradients(sampling_ratio):
    gen = torch.Generator().manual_seed(3)
    names = ["0", "1", "2"]
    ours = SparseRoIAlign(names, output_size=7, sampling_ratio=sampling_ratio)
    theirs = MultiScaleRoIAlign(names, output_size=7, sampling_ratio=sampling_ratio)
    feats = _features(gen)
    # Up to 600 px: RoIs land on every pyramid level (LevelMapper: 224 px is level 4).
    boxes = _boxes(gen, 3, 40, extent=600.0)
    shapes = [(192, 204)] * 3
    expected = theirs(feats, boxes, shapes)
    got = ours(feats, boxes, shapes)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    levels = theirs.map_levels(boxes)
    assert len(torch.unique(levels)) == 3, "the test must cover every level"

    grads_expected = torch.autograd.grad(_weighted_sum(expected), list(feats.values()))
    grads_got = torch.autograd.grad(_weighted_sum(got), list(feats.values()))
    for level, (g_ours, g_theirs) in enumerate(zip(grads_got, grads_expected, strict=True)):
        torch.testing.assert_close(g_ours, g_theirs, rtol=1e-4, atol=1e-5, msg=f"level {level}")


def test_matrix_rows_sum_to_one_inside_the_map():
    """A RoI well inside the map averages its samples: each bin's weights sum to 1."""
    rois = torch.tensor([[0.0, 10.0, 12.0, 30.0, 25.0], [1.0, 0.5, 0.5, 3.0, 40.0]])
    matrix = roi_align_matrix(rois, torch.zeros(2, dtype=torch.int64), [(2, 48, 48)], [1.0], (7, 7), 2)
    assert matrix.shape == (2 * 49, 2 * 48 * 48)
    row_sums = (matrix @ torch.ones(2 * 48 * 48, 1)).squeeze(1)
    torch.testing.assert_close(row_sums, torch.ones(98))
    # The second RoI's pixels are all in image 1's block of columns.
    assert int(matrix.col_indices()[49 * 16 :].min()) >= 48 * 48


def test_single_roi_equals_roi_align_on_a_ramp():
    """Bilinear interpolation of a linear ramp is exact: the bins hold the ramp at their centres."""
    ramp = torch.arange(20.0).repeat(20, 1)[None, None]  # value = x
    box = torch.tensor([[0.0, 2.0, 3.0, 16.0, 17.0]])
    expected = roi_align(ramp, box, output_size=7, spatial_scale=1.0, sampling_ratio=2)
    pool = SparseRoIAlign(["0"], output_size=7, sampling_ratio=2)
    got = pool({"0": ramp}, [box[:, 1:]], [(20, 20)])
    torch.testing.assert_close(got, expected)
    centres = 2.0 + (torch.arange(7.0) + 0.5) * 14.0 / 7.0
    torch.testing.assert_close(got[0, 0, 0], centres)


def test_no_boxes_gives_an_empty_batch():
    pool = SparseRoIAlign(["0"], output_size=7, sampling_ratio=2)
    out = pool({"0": torch.zeros(1, 4, 16, 16)}, [torch.zeros(0, 4)], [(64, 64)])
    assert out.shape == (0, 4, 7, 7)


def test_detector_training_step_is_unchanged():
    """cpu-small's losses and gradients with the sparse pool equal torchvision's pool."""
    gen = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 96, 96, generator=gen) for _ in range(2)]
    targets = [
        {
            "boxes": torch.tensor([[20.0, 22.0, 36.0, 38.0], [50.0, 40.0, 62.0, 52.0]]),
            "labels": torch.tensor([1, 2]),
        }
        for _ in range(2)
    ]
    results = []
    for pool_class in (SparseRoIAlign, MultiScaleRoIAlign):
        torch.manual_seed(0)
        model = build_detector("cpu-small")
        assert isinstance(model.roi_heads.box_roi_pool, SparseRoIAlign)
        model.roi_heads.box_roi_pool.__class__ = pool_class
        model.train()
        torch.manual_seed(1)  # the RoI sampler draws
        losses = model(images, targets)
        total = sum(losses.values())
        total.backward()
        grad = model.backbone.body.conv1.weight.grad.clone()
        results.append(({k: v.item() for k, v in losses.items()}, grad))
    (losses_a, grad_a), (losses_b, grad_b) = results
    assert losses_a == pytest.approx(losses_b, rel=1e-5)
    torch.testing.assert_close(grad_a, grad_b, rtol=1e-4, atol=1e-6)
