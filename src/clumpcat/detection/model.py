"""Faster R-CNN clump detectors: the paper's five Table 2 set-ups and a CPU preset.

Every model is a torchvision :class:`~torchvision.models.detection.FasterRCNN`
composed from explicit parts (a ResNet body under a feature pyramid exposing
``out_channels``, an :class:`AnchorGenerator`, an :class:`RPNHead`, a
:class:`MultiScaleRoIAlign` (on the CPU as :class:`SparseRoIAlign`), a :class:`TwoMLPHead`, a
:class:`FastRCNNPredictor` and the input transform). Nothing is patched after
construction except the input transform, which is one of the parts.

Set-ups (``setup`` argument of :func:`build_detector`):

==================== ========== ================== ==============================
setup                backbone   weights (caller)   trainable ResNet blocks
==================== ========== ================== ==============================
imagenet             ResNet50   ImageNet           none (transfer learning)
imagenet-finetuned   ResNet50   ImageNet           layer2, layer3, layer4
zoobot-clumps        ResNet50   Zoobot Clumps      none (transfer learning)
zoobot               ResNet50   Zoobot             none (transfer learning)
zoobot-finetuned     ResNet50   Zoobot             layer2, layer3, layer4
paper                ResNet50   released detector  (as the released code)
cpu-small            small      random init        all
==================== ========== ================== ==============================

The first five are the rows of Table 2 (Section 4.1). In transfer-learning
mode the whole ResNet body is frozen and its batch norms are
:class:`~torchvision.ops.FrozenBatchNorm2d`; in fine-tuning mode blocks 2, 3
and 4 (``layer2``-``layer4``) train. The feature pyramid, the RPN and the box
heads always train.

Geometry. The released code kept torchvision's defaults: every image is
resized so its short side is 800 px (a 200-px training crop is upsampled x4,
a 400-px inference image x2, so clumps appear at *different* scales in
training and inference) and anchors span 32-512 px with aspect ratios 0.5, 1
and 2 (Section 4.1). Clumps are 4-50 px (boxes of 2.5 x PSF FWHM, median
16.6 px, DESIGN.md). clumpcat's set-ups therefore use a
:class:`FixedScaleTransform` that multiplies every image by a constant
``input_scale`` whatever its size (2 for the ResNet50 set-ups, 1 for
``cpu-small``), so a clump has the same size in network pixels in training
on 200-px crops and in inference on 400-px images, and square anchors only
(Clump Scout boxes are squares, aspect ratio 1.0: a third of the anchors and
of the RPN cost, with no box shape lost). Only ``paper`` keeps torchvision's
resizing, so that the released state dicts behave as published.

Boxes everywhere are XYXY in pixels of the image handed to the model (the
*rendered* frame or a crop of it), 0-based; the transform maps them to and
from network pixels.

Measured speed (``benchmarks/bench_model.py``, images per second, random
200x200 crops with two boxes, batch 4 on CPU / 8 on GPU, best of 5):

======================== ======== ============= ============= ============== ==============
setup                    params   CPU train (2  CPU infer (2  H100 train     H100 infer
                                  threads)      threads)      (fp32)         (fp32)
======================== ======== ============= ============= ============== ==============
paper (800-px resize)    41.3 M   --            --            70             155
imagenet-finetuned (x2)  41.3 M   --            --            142            328
zoobot (x2, frozen)      41.3 M   --            --            170            358
cpu-small                1.34 M   23.0          73            274            381
narrow [16,32,64]        0.49 M   37.5          114           --             --
ResNet18 [2,2,2]         5.11 M   7.0           25            --             --
======================== ======== ============= ============= ============== ==============

On 200-px training crops clumpcat's ResNet50 geometry trains 2.0-2.4x and
infers 2.1-2.3x faster than the released code's (fewer pixels: 400 instead
of 800; one anchor per location instead of three; 500/300 proposals instead
of 2000/1000). On whole 400-px images both resize to 800 px and the gain is
the anchors and proposals only (H100, 400-px: train 80 vs 74, infer 180 vs
153 img/s). ``cpu-small`` is the middle CPU candidate: ResNet18-like widths
are 3x slower (a 500-crop epoch ~70 s instead of ~22 s, too few epochs in the
8-minute budget of issue 3), while the narrower body gains only 1.6x at a
third of the capacity, which the synthetic survey's arms, bars, stars and
close pairs need. Sanity check (toy 200-px crops: disc with arms, 1-5
Gaussian clumps of FWHM 2.5-6 px, noise; 500 training / 100 test crops;
match within 0.75 FWHM, score >= 0.5, cross-label NMS at IoU 0.2): from
random initialisation ``cpu-small`` reached completeness 0.95 and purity
0.99 after 3 epochs (375 steps of batch 4, ~1 min of 2 idle cores) with Adam
at lr 1e-3 and a linear warm-up; at lr 1e-4 it needed ~10 epochs for the same.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.rpn import RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from clumpcat.detection.roi_align import SparseRoIAlign
from clumpcat.detection.weights import load_backbone_weights

__all__ = [
    "SETUPS",
    "TABLE2_SETUPS",
    "BACKBONES",
    "RESNET_LAYERS",
    "DetectorConfig",
    "FixedScaleTransform",
    "SmallResNet",
    "preset_config",
    "build_detector",
    "build_from_config",
    "trainable_parameter_names",
]

#: The five set-ups of the paper's Table 2 (Section 4.1), in the table's order.
TABLE2_SETUPS: tuple[str, ...] = (
    "imagenet",
    "imagenet-finetuned",
    "zoobot-clumps",
    "zoobot",
    "zoobot-finetuned",
)
#: Every set-up :func:`build_detector` knows.
SETUPS: tuple[str, ...] = (*TABLE2_SETUPS, "paper", "cpu-small")
#: Backbone bodies: torchvision ResNet50 and ResNet18, or a narrow BasicBlock body.
BACKBONES: tuple[str, ...] = ("resnet50", "resnet18", "basic")
#: ResNet stages from the input side; ``trainable_layers = k`` unfreezes the last k.
RESNET_LAYERS: tuple[str, ...] = ("conv1", "layer1", "layer2", "layer3", "layer4")

# ImageNet normalisation, used by torchvision's detectors and therefore by the
# released code for every backbone, Zoobot included (Section 4.1).
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass
class DetectorConfig:
    """Everything needed to rebuild a detector; stored in checkpoints.

    Plain types only (str, int, float, bool, lists), so that
    :func:`dataclasses.asdict` gives a dict that ``torch.load(...,
    weights_only=True)`` reads back; :meth:`from_dict` restores it.

    Attributes
    ----------
    setup : str
        One of :data:`SETUPS`.
    backbone : str
        ``"resnet50"``, ``"resnet18"`` or ``"basic"`` (a narrow BasicBlock
        ResNet of ``body_widths`` channels and ``body_blocks`` blocks per stage).
    trainable_layers : int
        Trainable ResNet stages counted from the output side, torchvision's
        convention: 0 freezes the body (transfer learning), 3 trains
        ``layer2``-``layer4`` (fine-tuning, Table 2), 5 trains everything.
    norm : str
        ``"frozen"`` (:class:`~torchvision.ops.FrozenBatchNorm2d`, for
        pretrained bodies) or ``"batch"`` (:class:`~torch.nn.BatchNorm2d`, for
        bodies trained from random initialisation).
    returned_layers : list of int
        ResNet stages (1-4) feeding the feature pyramid; stage k has stride
        2**(k+1). A max-pooled level is added on top (stride twice the last).
    body_widths, body_blocks : list of int
        Channels and blocks per stage of the ``basic`` body (ignored otherwise).
    fpn_channels : int
        Channels of every pyramid level.
    input_scale : float or None
        Network pixels per image pixel (:class:`FixedScaleTransform`). None
        keeps torchvision's resizing to ``min_size``/``max_size``.
    min_size, max_size : int
        torchvision's resizing when ``input_scale`` is None.
    anchor_sizes : list of int
        One anchor side per pyramid level, in *network* pixels (image pixels
        x ``input_scale``); one entry per returned layer plus the pooled level.
    aspect_ratios : list of float
        Anchor aspect ratios (height / width), the same on every level.
    rpn_pre_nms_top_n_train, rpn_pre_nms_top_n_test : int
        Proposals kept per pyramid level before the RPN's NMS.
    rpn_post_nms_top_n_train, rpn_post_nms_top_n_test : int
        Proposals kept per image after the RPN's NMS.
    rpn_batch_size_per_image : int
        Anchors sampled per image for the RPN loss.
    box_batch_size_per_image : int
        Proposals sampled per image for the box-head loss.
    box_detections_per_img : int
        Most detections returned per image.
    box_score_thresh : float
        Floor on the returned class scores: low, so every candidate is kept
        and users choose a threshold later without rerunning the model.
    box_nms_thresh : float
        Per-class NMS IoU inside the model (the cross-label NMS of Section
        4.3.1 is post-processing's job).
    representation_size : int
        Width of the two fully connected layers of the box head.
    image_mean, image_std : list of float
        Per-channel normalisation of the [0, 1] RGB input.
    """

    setup: str
    backbone: str = "resnet50"
    trainable_layers: int = 0
    norm: str = "frozen"
    returned_layers: list[int] = dataclasses.field(default_factory=lambda: [1, 2, 3, 4])
    body_widths: list[int] = dataclasses.field(default_factory=list)
    body_blocks: list[int] = dataclasses.field(default_factory=list)
    fpn_channels: int = 256
    input_scale: float | None = 2.0
    min_size: int = 800
    max_size: int = 1333
    anchor_sizes: list[int] = dataclasses.field(default_factory=lambda: [8, 16, 32, 64, 128])
    aspect_ratios: list[float] = dataclasses.field(default_factory=lambda: [1.0])
    rpn_pre_nms_top_n_train: int = 1000
    rpn_pre_nms_top_n_test: int = 500
    rpn_post_nms_top_n_train: int = 500
    rpn_post_nms_top_n_test: int = 300
    rpn_batch_size_per_image: int = 256
    box_batch_size_per_image: int = 256
    box_detections_per_img: int = 100
    box_score_thresh: float = 0.01
    box_nms_thresh: float = 0.5
    representation_size: int = 1024
    image_mean: list[float] = dataclasses.field(default_factory=lambda: list(_IMAGENET_MEAN))
    image_std: list[float] = dataclasses.field(default_factory=lambda: list(_IMAGENET_STD))

    def asdict(self) -> dict[str, Any]:
        """Return the configuration as a dict of plain Python values."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DetectorConfig:
        """Rebuild a configuration from :meth:`asdict` output.

        Raises
        ------
        ValueError
            If ``data`` has keys that are not fields, or lacks ``setup``.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown detector config keys {unknown}; known: {sorted(names)}")
        if "setup" not in data:
            raise ValueError("detector config lacks 'setup'")
        values = {k: (list(v) if isinstance(v, tuple) else v) for k, v in data.items()}
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        """Check the fields against each other.

        Raises
        ------
        ValueError
            Naming the field at fault.
        """
        if self.setup not in SETUPS:
            raise ValueError(f"unknown detector setup {self.setup!r}; choose one of {', '.join(SETUPS)}")
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; choose one of {', '.join(BACKBONES)}")
        if not 0 <= self.trainable_layers <= 5:
            raise ValueError(f"trainable_layers must be 0-5, got {self.trainable_layers}")
        if self.norm not in ("frozen", "batch"):
            raise ValueError(f"norm must be 'frozen' or 'batch', got {self.norm!r}")
        if not self.returned_layers or sorted(set(self.returned_layers)) != list(self.returned_layers):
            raise ValueError(f"returned_layers must be increasing stage numbers, got {self.returned_layers}")
        n_stages = len(self.body_blocks) if self.backbone == "basic" else 4
        if self.returned_layers[0] < 1 or self.returned_layers[-1] > n_stages:
            raise ValueError(f"returned_layers must lie in 1-{n_stages}, got {self.returned_layers}")
        if self.backbone == "basic" and (
            len(self.body_widths) != len(self.body_blocks) or not 1 <= len(self.body_blocks) <= 4
        ):
            raise ValueError(
                f"the 'basic' body needs 1-4 stages with one width and one block count each, "
                f"got body_widths={self.body_widths}, body_blocks={self.body_blocks}"
            )
        n_levels = len(self.returned_layers) + 1  # + the max-pooled level
        if len(self.anchor_sizes) != n_levels:
            raise ValueError(
                f"anchor_sizes needs one size per pyramid level ({n_levels}: returned layers "
                f"{self.returned_layers} + pool), got {self.anchor_sizes}"
            )
        if self.input_scale is not None and not (math.isfinite(self.input_scale) and self.input_scale > 0):
            raise ValueError(f"input_scale must be a positive number or None, got {self.input_scale}")
        if len(self.image_mean) != 3 or len(self.image_std) != 3:
            raise ValueError("image_mean and image_std need three values (RGB)")
        if not 0.0 <= self.box_score_thresh < 1.0:
            raise ValueError(f"box_score_thresh must lie in [0, 1), got {self.box_score_thresh}")


# Section 4.1 and Table 2. The ResNet50 set-ups differ only in the weights the
# caller loads and in the trainable blocks. Geometry (see the module
# docstring): 200-px crops scaled x2 to 400 network px; FPN levels P2-P5 +
# pool at strides 4-64 with one square anchor each, 8-128 network px = 4-64
# image px, covering the 4-50 px clump boxes; at most 9 clumps per image
# (DESIGN.md), so 300 proposals at test time and 500 in training are ample
# (torchvision: 1000 and 2000 on an 800-px image).
_RESNET50 = dict(
    backbone="resnet50",
    norm="frozen",
    returned_layers=[1, 2, 3, 4],
    fpn_channels=256,
    input_scale=2.0,
    anchor_sizes=[8, 16, 32, 64, 128],
    aspect_ratios=[1.0],
    representation_size=1024,
)

# cpu-small: a narrow BasicBlock ResNet trained from random initialisation on
# two CPU cores (issue 3 item 6); chosen with benchmarks/bench_model.py. Native
# resolution (scale 1), pyramid levels at strides 4, 8, 16 + pool 32 with
# square anchors 8-64 px for clumps of 6-40 px.
_CPU_SMALL = dict(
    backbone="basic",
    trainable_layers=5,
    norm="batch",
    body_widths=[32, 64, 128],
    body_blocks=[1, 1, 1],
    returned_layers=[1, 2, 3],
    fpn_channels=64,
    input_scale=1.0,
    anchor_sizes=[8, 16, 32, 64],
    aspect_ratios=[1.0],
    rpn_pre_nms_top_n_train=600,
    rpn_pre_nms_top_n_test=300,
    rpn_post_nms_top_n_train=300,
    rpn_post_nms_top_n_test=100,
    rpn_batch_size_per_image=128,
    box_batch_size_per_image=64,
    box_detections_per_img=100,
    representation_size=256,
    image_mean=[0.5, 0.5, 0.5],
    image_std=[0.25, 0.25, 0.25],
)

# paper: exactly torchvision's fasterrcnn_resnet50_fpn defaults with a
# 3-class predictor, as in the released code (DESIGN.md): 800-1333 px resize,
# anchors 32-512 with ratios 0.5, 1, 2 (Section 4.1), 2000/1000 proposals,
# score threshold 0.05, representation 1024, layers 2-4 trainable.
_PAPER = dict(
    backbone="resnet50",
    trainable_layers=3,
    norm="frozen",
    returned_layers=[1, 2, 3, 4],
    fpn_channels=256,
    input_scale=None,
    min_size=800,
    max_size=1333,
    anchor_sizes=[32, 64, 128, 256, 512],
    aspect_ratios=[0.5, 1.0, 2.0],
    rpn_pre_nms_top_n_train=2000,
    rpn_pre_nms_top_n_test=1000,
    rpn_post_nms_top_n_train=2000,
    rpn_post_nms_top_n_test=1000,
    rpn_batch_size_per_image=256,
    box_batch_size_per_image=512,
    box_detections_per_img=100,
    box_score_thresh=0.05,
    box_nms_thresh=0.5,
    representation_size=1024,
)

_PRESETS: dict[str, dict[str, Any]] = {
    # Table 2 rows 1-5 (Section 4.1): transfer learning freezes the whole body,
    # fine-tuning trains blocks 2, 3 and 4 (trainable_layers=3).
    "imagenet": {**_RESNET50, "trainable_layers": 0},
    "imagenet-finetuned": {**_RESNET50, "trainable_layers": 3},
    "zoobot-clumps": {**_RESNET50, "trainable_layers": 0},
    "zoobot": {**_RESNET50, "trainable_layers": 0},
    "zoobot-finetuned": {**_RESNET50, "trainable_layers": 3},
    "paper": _PAPER,
    "cpu-small": _CPU_SMALL,
}


def preset_config(setup: str, **overrides: Any) -> DetectorConfig:
    """Return the :class:`DetectorConfig` of a named set-up.

    Parameters
    ----------
    setup : str
        One of :data:`SETUPS`.
    **overrides
        Field values replacing the preset's (e.g. ``box_score_thresh=0.05``).

    Raises
    ------
    ValueError
        For an unknown set-up or field, or an inconsistent result.
    """
    if setup not in _PRESETS:
        raise ValueError(f"unknown detector setup {setup!r}; choose one of {', '.join(SETUPS)}")
    values = {**_PRESETS[setup], **overrides, "setup": setup}
    return DetectorConfig.from_dict(
        {k: (list(v) if isinstance(v, list | tuple) else v) for k, v in values.items()}
    )


class FixedScaleTransform(GeneralizedRCNNTransform):
    """Normalise, then rescale every image by one constant factor.

    torchvision's transform rescales each image to a target short side, so
    the apparent size of a clump depends on the image size. Here a 200-px
    training crop and a 400-px inference image are both multiplied by
    ``scale``, so a clump keeps its size in network pixels. Boxes (XYXY,
    pixels) are scaled with the images and mapped back by
    :meth:`postprocess`, so outputs are in pixels of the input image.

    Parameters
    ----------
    scale : float
        Network pixels per input pixel.
    image_mean, image_std : sequence of float
        Per-channel normalisation.
    size_divisible : int
        Batched images are zero-padded to a multiple of this.
    """

    def __init__(
        self,
        scale: float,
        image_mean: Sequence[float],
        image_std: Sequence[float],
        size_divisible: int = 32,
    ) -> None:
        # min_size/max_size are unused by resize() below; kept for repr().
        super().__init__(
            min_size=0,
            max_size=0,
            image_mean=list(image_mean),
            image_std=list(image_std),
            size_divisible=size_divisible,
        )
        self.scale = float(scale)

    def resize(
        self, image: Tensor, target: dict[str, Tensor] | None = None
    ) -> tuple[Tensor, dict[str, Tensor] | None]:
        """Scale one CxHxW image (and its XYXY pixel boxes) by ``self.scale``."""
        if self.scale == 1.0:
            return image, target
        h, w = image.shape[-2:]
        new_size = [max(1, round(h * self.scale)), max(1, round(w * self.scale))]
        image = F.interpolate(image[None], size=new_size, mode="bilinear", align_corners=False)[0]
        if target is not None and "boxes" in target:
            target = dict(target)
            target["boxes"] = resize_boxes(target["boxes"], [h, w], new_size)
        return image, target

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(scale={self.scale}, mean={self.image_mean}, "
            f"std={self.image_std}, size_divisible={self.size_divisible})"
        )


class SmallResNet(nn.Module):
    """A narrow ResNet of torchvision BasicBlocks, for training from scratch on a CPU.

    Module names follow torchvision's ResNet (``conv1``, ``bn1``, ``relu``,
    ``maxpool``, ``layer1``...), so the same feature extractor and freezing
    rules apply. The stem is a 3x3 stride-2 convolution and a stride-2 max
    pool (stride 4, as ResNet's); each later stage halves the resolution.

    Parameters
    ----------
    widths : sequence of int
        Output channels of each stage.
    blocks : sequence of int
        BasicBlocks per stage.
    norm_layer : callable
        Normalisation layer constructor.
    """

    def __init__(
        self,
        widths: Sequence[int],
        blocks: Sequence[int],
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = norm_layer(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_ch = widths[0]
        for i, (width, n_blocks) in enumerate(zip(widths, blocks, strict=True)):
            stride = 1 if i == 0 else 2
            layers: list[nn.Module] = []
            for j in range(n_blocks):
                downsample = None
                s = stride if j == 0 else 1
                if s != 1 or in_ch != width:
                    downsample = nn.Sequential(
                        nn.Conv2d(in_ch, width, kernel_size=1, stride=s, bias=False), norm_layer(width)
                    )
                layers.append(
                    BasicBlock(in_ch, width, stride=s, downsample=downsample, norm_layer=norm_layer)
                )
                in_ch = width
            self.add_module(f"layer{i + 1}", nn.Sequential(*layers))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # Zero the last BN of each residual branch: each block starts as identity.
        for m in self.modules():
            if isinstance(m, BasicBlock) and isinstance(m.bn2, nn.BatchNorm2d):
                nn.init.zeros_(m.bn2.weight)

    def forward(self, x: Tensor) -> Tensor:  # pragma: no cover - used through IntermediateLayerGetter
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name, module in self.named_children():
            if name.startswith("layer"):
                x = module(x)
        return x


def _resnet_body(config: DetectorConfig) -> tuple[nn.Module, list[int]]:
    """Build the ResNet body and the channels of each of its stages."""
    norm_layer = FrozenBatchNorm2d if config.norm == "frozen" else nn.BatchNorm2d
    if config.backbone == "resnet50":
        body = ResNet(Bottleneck, [3, 4, 6, 3], norm_layer=norm_layer)
        channels = [256, 512, 1024, 2048]
    elif config.backbone == "resnet18":
        body = ResNet(BasicBlock, [2, 2, 2, 2], norm_layer=norm_layer)
        channels = [64, 128, 256, 512]
    else:
        body = SmallResNet(config.body_widths, config.body_blocks, norm_layer=norm_layer)
        channels = list(config.body_widths)
    return body, channels


def _freeze(body: nn.Module, trainable_layers: int) -> None:
    """Freeze every body parameter outside the last ``trainable_layers`` stages.

    Stage names are those of :data:`RESNET_LAYERS`; ``conv1`` stands for the
    stem (``conv1`` and ``bn1``). torchvision's convention, as in the
    released code's ``trainable_layers`` (Table 2: 0 or 3).
    """
    trainable = list(RESNET_LAYERS[len(RESNET_LAYERS) - trainable_layers :])
    if "conv1" in trainable:
        trainable.append("bn1")
    for name, param in body.named_parameters():
        if not any(name == t or name.startswith(t + ".") for t in trainable):
            param.requires_grad_(False)


def _backbone(config: DetectorConfig) -> BackboneWithFPN:
    """Body + feature pyramid; ``backbone.body`` is an IntermediateLayerGetter."""
    body, channels = _resnet_body(config)
    _freeze(body, config.trainable_layers)
    return_layers = {f"layer{k}": str(i) for i, k in enumerate(config.returned_layers)}
    in_channels = [channels[k - 1] for k in config.returned_layers]
    return BackboneWithFPN(
        body,
        return_layers=return_layers,
        in_channels_list=in_channels,
        out_channels=config.fpn_channels,
        extra_blocks=LastLevelMaxPool(),
    )


def build_from_config(config: DetectorConfig, *, num_classes: int = 3) -> FasterRCNN:
    """Compose a FasterRCNN from a :class:`DetectorConfig` (random weights).

    Parameters
    ----------
    config : DetectorConfig
        The full description, e.g. from a checkpoint.
    num_classes : int
        Classes including background: 3 = background, normal, odd.

    Returns
    -------
    FasterRCNN
        In training mode. Inputs: lists of CxHxW float images in [0, 1] and,
        in training, targets with ``boxes`` (XYXY, pixels of the input image)
        and ``labels``; in eval mode it returns per image ``boxes`` (XYXY,
        pixels of the input image), ``scores`` and ``labels``.
    """
    config.validate()
    if num_classes < 2:
        raise ValueError(f"num_classes counts the background and must be >= 2, got {num_classes}")
    backbone = _backbone(config)
    n_levels = len(config.returned_layers) + 1
    anchors = AnchorGenerator(
        sizes=tuple((int(s),) for s in config.anchor_sizes),
        aspect_ratios=(tuple(float(r) for r in config.aspect_ratios),) * n_levels,
    )
    rpn_head = RPNHead(backbone.out_channels, anchors.num_anchors_per_location()[0])
    # torchvision's RoIAlign on GPUs; on the CPU the same numbers as one sparse
    # product, whose backward is 4x faster there (clumpcat.detection.roi_align).
    roi_pool = SparseRoIAlign(
        featmap_names=[str(i) for i in range(len(config.returned_layers))], output_size=7, sampling_ratio=2
    )
    resolution = roi_pool.output_size[0]
    box_head = TwoMLPHead(backbone.out_channels * resolution**2, config.representation_size)
    box_predictor = FastRCNNPredictor(config.representation_size, num_classes)
    model = FasterRCNN(
        backbone,
        num_classes=None,  # the predictor fixes it
        min_size=config.min_size,
        max_size=config.max_size,
        image_mean=list(config.image_mean),
        image_std=list(config.image_std),
        rpn_anchor_generator=anchors,
        rpn_head=rpn_head,
        rpn_pre_nms_top_n_train=config.rpn_pre_nms_top_n_train,
        rpn_pre_nms_top_n_test=config.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_train=config.rpn_post_nms_top_n_train,
        rpn_post_nms_top_n_test=config.rpn_post_nms_top_n_test,
        rpn_batch_size_per_image=config.rpn_batch_size_per_image,
        box_roi_pool=roi_pool,
        box_head=box_head,
        box_predictor=box_predictor,
        box_score_thresh=config.box_score_thresh,
        box_nms_thresh=config.box_nms_thresh,
        box_detections_per_img=config.box_detections_per_img,
        box_batch_size_per_image=config.box_batch_size_per_image,
    )
    if config.input_scale is not None:
        model.transform = FixedScaleTransform(config.input_scale, config.image_mean, config.image_std)
    return model


def build_detector(
    setup: str,
    *,
    num_classes: int = 3,
    backbone_weights: dict[str, Tensor] | None = None,
    **overrides: Any,
) -> FasterRCNN:
    """Build the Faster R-CNN of a named set-up.

    Parameters
    ----------
    setup : str
        One of :data:`SETUPS`: the five Table 2 set-ups (Section 4.1),
        ``paper`` (the released code's model, for its state dicts) or
        ``cpu-small``.
    num_classes : int
        Classes including background (3: background, normal, odd).
    backbone_weights : dict of str to Tensor, optional
        A ResNet state dict (torchvision key names: ``conv1.weight``,
        ``layer1.0.conv1.weight``...) copied onto ``model.backbone.body``
        with :func:`clumpcat.detection.weights.load_backbone_weights`; use
        :func:`clumpcat.detection.weights.load_imagenet_resnet50` or
        :func:`clumpcat.detection.weights.load_zoobot_encoder` to read one.
    **overrides
        :class:`DetectorConfig` fields replacing the preset's.

    Returns
    -------
    FasterRCNN
        The model (training mode) with its configuration as
        ``model.clumpcat_config`` (a :class:`DetectorConfig`). Boxes in and
        out are XYXY in pixels of the input image.

    Raises
    ------
    ValueError
        For an unknown set-up (the message lists the allowed ones) or field.
    """
    config = preset_config(setup, **overrides)
    model = build_from_config(config, num_classes=num_classes)
    if backbone_weights is not None:
        load_backbone_weights(model, backbone_weights)
    model.clumpcat_config = config
    return model


def trainable_parameter_names(model: nn.Module) -> list[str]:
    """Names of the parameters that require gradients, in module order."""
    return [name for name, p in model.named_parameters() if p.requires_grad]
