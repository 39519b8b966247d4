"""Multi-scale RoIAlign as one sparse matrix product, for CPU training.

torchvision's CPU ``roi_align`` backward walks every RoI, channel, bin and
sample point in one thread and recomputes the bilinear weights for each
channel; on two cores it was a quarter of a ``cpu-small`` training step
(``benchmarks/bench_model.py``). RoIAlign is linear in the feature maps: each
output bin is a fixed weighted sum of at most ``4 * sampling_ratio**2`` feature
pixels. :class:`SparseRoIAlign` builds those weights once per call as a sparse
matrix ``W`` (RoI bins x feature pixels of every level) and computes
``W @ F`` forward and ``W.T @ dF`` backward, vectorised over the channels.
The sample points and weights follow torchvision's kernel exactly
(``aligned=False``, the clamping at the borders, the empty samples outside
``[-1, size]``), so the result equals ``torchvision.ops.roi_align`` to float
rounding, and the detector's weights, outputs and checkpoints are unchanged.

On CUDA, with an adaptive sampling ratio, or while tracing, the module is
torchvision's :class:`~torchvision.ops.MultiScaleRoIAlign`.
"""

from __future__ import annotations

import warnings

import torch
import torchvision
from torch import Tensor
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.poolers import _filter_input, _setup_scales

__all__ = ["SparseRoIAlign", "roi_align_matrix"]


def _axis_weights(
    start: Tensor, length: Tensor, bins: int, grid: int, size: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Bilinear taps along one axis, as torchvision's CPU kernel places them.

    Parameters
    ----------
    start, length : Tensor, shape (R,)
        RoI start and length in feature pixels (length already at least 1).
    bins, grid : int
        Output bins and sample points per bin along this axis.
    size : int
        Feature map size along this axis.

    Returns
    -------
    low, high : Tensor of int64, shape (R, bins, grid)
        The two pixel indices each sample point interpolates between.
    w_low, w_high : Tensor, shape (R, bins, grid)
        Their weights; both zero for a sample point outside ``[-1, size]``.
    """
    dtype, device = start.dtype, start.device
    bin_size = length / bins
    b = torch.arange(bins, device=device, dtype=dtype)
    g = torch.arange(grid, device=device, dtype=dtype) + 0.5
    # Same operation order as the kernel: start + b * bin + (g + .5) * bin / grid.
    pos = (
        start[:, None, None]
        + b[None, :, None] * bin_size[:, None, None]
        + g[None, None, :] * bin_size[:, None, None] / grid
    )
    inside = (pos >= -1.0) & (pos <= size)
    pos = pos.clamp(min=0.0)
    low = pos.to(torch.int64)
    at_edge = low >= size - 1
    low = torch.where(at_edge, torch.full_like(low, size - 1), low)
    high = torch.where(at_edge, low, low + 1)
    pos = torch.where(at_edge, low.to(dtype), pos)
    frac = pos - low.to(dtype)
    keep = inside.to(dtype)
    return low, high, (1.0 - frac) * keep, frac * keep


def roi_align_matrix(
    rois: Tensor,
    levels: Tensor,
    shapes: list[tuple[int, int, int]],
    scales: list[float],
    output_size: tuple[int, int],
    sampling_ratio: int,
) -> Tensor:
    """The sparse matrix mapping stacked feature pixels to RoIAlign bins.

    Parameters
    ----------
    rois : Tensor, shape (R, 5)
        Batch index and XYXY box in image pixels, as torchvision's ``roi_align``.
    levels : Tensor of int64, shape (R,)
        Pyramid level of each RoI.
    shapes : list of (N, H, W)
        Feature map size of each level.
    scales : list of float
        Feature pixels per image pixel of each level.
    output_size : (int, int)
        Bins per RoI (height, width).
    sampling_ratio : int
        Sample points per bin along each axis (> 0).

    Returns
    -------
    Tensor
        Sparse CSR matrix of shape ``(R * PH * PW, sum(N * H * W))``. Its
        columns are the pixels of every level in turn, each level flattened as
        (image, row, column); its rows are the bins of every RoI in turn.
    """
    ph, pw = output_size
    g = sampling_ratio
    dtype, device = rois.dtype, rois.device
    n_rois = rois.shape[0]
    scale = torch.tensor(scales, dtype=dtype, device=device)[levels]
    heights = torch.tensor([s[1] for s in shapes], device=device)[levels]
    widths = torch.tensor([s[2] for s in shapes], device=device)[levels]
    sizes = [n * h * w for n, h, w in shapes]
    offsets = torch.tensor([0, *sizes[:-1]], device=device).cumsum(0)[levels]

    box = rois[:, 1:] * scale[:, None]
    roi_w = (box[:, 2] - box[:, 0]).clamp(min=1.0)
    roi_h = (box[:, 3] - box[:, 1]).clamp(min=1.0)
    # One level at a time: the clamping depends on the level's height and width.
    y_low = torch.empty((n_rois, ph, g), dtype=torch.int64, device=device)
    y_high = torch.empty_like(y_low)
    x_low = torch.empty((n_rois, pw, g), dtype=torch.int64, device=device)
    x_high = torch.empty_like(x_low)
    wy_low, wy_high = torch.empty_like(y_low, dtype=dtype), torch.empty_like(y_low, dtype=dtype)
    wx_low, wx_high = torch.empty_like(x_low, dtype=dtype), torch.empty_like(x_low, dtype=dtype)
    for level, (_, height, width) in enumerate(shapes):
        sel = torch.where(levels == level)[0]
        if sel.numel() == 0:
            continue
        ys = _axis_weights(box[sel, 1], roi_h[sel], ph, g, height)
        xs = _axis_weights(box[sel, 0], roi_w[sel], pw, g, width)
        y_low[sel], y_high[sel], wy_low[sel], wy_high[sel] = ys
        x_low[sel], x_high[sel], wx_low[sel], wx_high[sel] = xs

    # Taps (R, PH, g, 2) along y and (R, PW, g, 2) along x, combined to
    # (R, PH, PW, g, g, 2, 2): every bin's 4 g^2 weighted pixels.
    yi = torch.stack([y_low, y_high], dim=-1)[:, :, None, :, None, :, None]
    xi = torch.stack([x_low, x_high], dim=-1)[:, None, :, None, :, None, :]
    wy = torch.stack([wy_low, wy_high], dim=-1)[:, :, None, :, None, :, None]
    wx = torch.stack([wx_low, wx_high], dim=-1)[:, None, :, None, :, None, :]
    image = rois[:, 0].to(torch.int64)
    base = offsets + image * heights * widths
    cols = (
        base[:, None, None, None, None, None, None] + yi * widths[:, None, None, None, None, None, None] + xi
    )
    vals = wy * wx / (g * g)
    full = (n_rois, ph, pw, g, g, 2, 2)
    cols = cols.expand(full).reshape(-1)
    vals = vals.expand(full).reshape(-1)
    # Every row holds exactly 4 g^2 entries (zeros and repeats included), in
    # row order, so the CSR row pointers are a range: nothing to sort. The
    # product sums each row's entries, so unsorted and repeated columns are fine.
    per_row = 4 * g * g
    crow = torch.arange(0, cols.numel() + 1, per_row, device=device)
    return _csr(crow, cols, vals, (n_rois * ph * pw, sum(sizes)))


def _csr(crow: Tensor, cols: Tensor, vals: Tensor, shape: tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():
        # torch flags its sparse CSR layout as beta; the product used here is long stable.
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, cols, vals, shape, check_invariants=False)


def _transpose(matrix: Tensor) -> Tensor:
    """The CSR transpose of a CSR matrix (rows sorted by a counting pass)."""
    crow, cols, vals = matrix.crow_indices(), matrix.col_indices(), matrix.values()
    n_rows, n_cols = matrix.shape
    rows = torch.repeat_interleave(torch.arange(n_rows, device=cols.device), crow.diff())
    order = torch.argsort(cols)
    crow_t = torch.zeros(n_cols + 1, dtype=torch.int64, device=cols.device)
    crow_t[1:] = torch.bincount(cols, minlength=n_cols).cumsum(0)
    return _csr(crow_t, rows[order], vals[order], (n_cols, n_rows))


class _SparseProduct(torch.autograd.Function):
    """``W @ F`` with the gradient ``W.T @ dY`` for F only (W is fixed)."""

    @staticmethod
    def forward(ctx, matrix: Tensor, features: Tensor) -> Tensor:  # noqa: D102
        ctx.matrix = matrix
        return matrix @ features

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor]:  # noqa: D102
        # The transpose is built only here: inference never pays for it.
        return None, _transpose(ctx.matrix) @ grad.contiguous()


class SparseRoIAlign(MultiScaleRoIAlign):
    """:class:`~torchvision.ops.MultiScaleRoIAlign` computed as a sparse product on the CPU.

    Same constructor, attributes (no parameters or buffers) and results as
    torchvision's module; only the arithmetic is arranged differently. See the
    module docstring for why.
    """

    def forward(
        self,
        x: dict[str, Tensor],
        boxes: list[Tensor],
        image_shapes: list[tuple[int, int]],
    ) -> Tensor:
        """Pool every box from its pyramid level (torchvision's signature and result)."""
        x_filtered = _filter_input(x, self.featmap_names)
        if (
            x_filtered[0].device.type != "cpu"
            or self.sampling_ratio <= 0
            or torchvision._is_tracing()
            or torch.jit.is_scripting()
        ):
            return super().forward(x, boxes, image_shapes)
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = _setup_scales(
                x_filtered, image_shapes, self.canonical_scale, self.canonical_level
            )
        dtype = x_filtered[0].dtype
        rois = torch.cat(
            [torch.cat([b.new_full((len(b), 1), i), b], dim=1) for i, b in enumerate(boxes)], dim=0
        ).to(dtype)
        levels = (
            self.map_levels(boxes) if len(x_filtered) > 1 else rois.new_zeros(len(rois), dtype=torch.int64)
        )
        ph, pw = self.output_size
        channels = x_filtered[0].shape[1]
        if rois.shape[0] == 0:
            return x_filtered[0].new_zeros((0, channels, ph, pw))
        # Only the levels that pool a RoI enter the product (with the usual
        # anchor sizes nearly every clump proposal maps to the finest level).
        used = torch.unique(levels).tolist()
        remap = torch.full((len(x_filtered),), -1, dtype=torch.int64)
        remap[used] = torch.arange(len(used))
        feats = [x_filtered[i] for i in used]
        matrix = roi_align_matrix(
            rois.detach(),
            remap.to(levels.device)[levels.to(torch.int64)],
            [(f.shape[0], f.shape[2], f.shape[3]) for f in feats],
            [self.scales[i] for i in used],
            (ph, pw),
            self.sampling_ratio,
        )
        # Pixels as rows, channels as columns: (sum N*H*W, C).
        stacked = torch.cat([f.to(dtype).permute(0, 2, 3, 1).reshape(-1, channels) for f in feats])
        pooled = _SparseProduct.apply(matrix, stacked)
        return pooled.reshape(rois.shape[0], ph, pw, channels).permute(0, 3, 1, 2).contiguous()
