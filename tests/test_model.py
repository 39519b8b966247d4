"""Tests of clumpcat.detection.model: the Table 2 set-ups, the paper's model and cpu-small."""

from __future__ import annotations

import io
import math

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from clumpcat.detection.model import (
    SETUPS,
    TABLE2_SETUPS,
    DetectorConfig,
    FixedScaleTransform,
    build_detector,
    preset_config,
    trainable_parameter_names,
)

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def table2_models():
    """Each ResNet50 set-up built once for the module (they take ~1 s each)."""
    torch.manual_seed(0)
    return {setup: build_detector(setup) for setup in TABLE2_SETUPS}


def _two_boxes():
    return {
        "boxes": torch.tensor([[40.0, 50.0, 56.0, 66.0], [120.0, 100.0, 140.0, 120.0]]),
        "labels": torch.tensor([1, 2]),
    }


@pytest.mark.parametrize("setup", TABLE2_SETUPS)
def test_table2_setup_builds_resnet50_fpn(table2_models, setup):
    model = table2_models[setup]
    assert isinstance(model, torchvision.models.detection.FasterRCNN)
    assert model.clumpcat_config.setup == setup
    assert model.backbone.out_channels == 256
    # ResNet50 body: layer4 has three bottlenecks with 2048 output channels.
    assert model.backbone.body.layer4[2].conv3.out_channels == 2048
    assert model.roi_heads.box_predictor.cls_score.out_features == 3
    # Square anchors only (Clump Scout boxes are squares), one size per level.
    assert model.rpn.anchor_generator.num_anchors_per_location() == [1] * 5


@pytest.mark.parametrize("setup", ["imagenet", "zoobot-clumps", "zoobot"])
def test_transfer_learning_freezes_the_whole_body(table2_models, setup):
    model = table2_models[setup]
    body = model.backbone.body
    assert not any(p.requires_grad for p in body.parameters())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in body.modules())
    assert sum(isinstance(m, FrozenBatchNorm2d) for m in body.modules()) == 53
    # The FPN, the RPN and the heads always train (Section 4.1).
    for part in (model.backbone.fpn, model.rpn, model.roi_heads):
        assert all(p.requires_grad for p in part.parameters())


@pytest.mark.parametrize("setup", ["imagenet-finetuned", "zoobot-finetuned"])
def test_fine_tuning_trains_exactly_blocks_2_3_4(table2_models, setup):
    body = table2_models[setup].backbone.body
    trainable = {n.split(".")[0] for n, p in body.named_parameters() if p.requires_grad}
    frozen = {n.split(".")[0] for n, p in body.named_parameters() if not p.requires_grad}
    assert trainable == {"layer2", "layer3", "layer4"}
    assert frozen == {"conv1", "layer1"}
    every_param = {n for n, _ in body.named_parameters()}
    in_blocks = {n for n in every_param if n.startswith(("layer2.", "layer3.", "layer4."))}
    assert {n for n, p in body.named_parameters() if p.requires_grad} == in_blocks
    assert not any(isinstance(m, nn.BatchNorm2d) for m in body.modules())


def test_transfer_and_fine_tuning_differ_only_in_trainable_flags(table2_models):
    a, b = table2_models["zoobot"], table2_models["zoobot-finetuned"]
    assert [k for k in a.state_dict()] == [k for k in b.state_dict()]
    assert len(trainable_parameter_names(b)) > len(trainable_parameter_names(a))


def test_unknown_setup_names_the_allowed_ones():
    with pytest.raises(ValueError, match="imagenet-finetuned.*zoobot-finetuned.*cpu-small"):
        build_detector("resnet-imagenet")


def test_keyword_only_and_bad_overrides():
    with pytest.raises(TypeError):
        build_detector("cpu-small", 3)  # type: ignore[misc]
    with pytest.raises(ValueError, match="anchor_sizes"):
        build_detector("cpu-small", anchor_sizes=[8, 16])
    with pytest.raises(ValueError, match="unknown detector config keys"):
        build_detector("cpu-small", anchors=[8])


def test_paper_setup_matches_torchvision_fasterrcnn_resnet50_fpn():
    ours = build_detector("paper")
    reference = torchvision.models.detection.fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=3
    )
    ref_shapes = {k: v.shape for k, v in reference.state_dict().items() if "num_batches_tracked" not in k}
    assert {k: v.shape for k, v in ours.state_dict().items()} == ref_shapes
    assert ours.transform.min_size == reference.transform.min_size == (800,)
    assert ours.transform.max_size == reference.transform.max_size == 1333
    assert ours.rpn.anchor_generator.sizes == reference.rpn.anchor_generator.sizes
    assert ours.rpn.anchor_generator.aspect_ratios == reference.rpn.anchor_generator.aspect_ratios
    assert ours.rpn._pre_nms_top_n == reference.rpn._pre_nms_top_n
    assert ours.rpn._post_nms_top_n == reference.rpn._post_nms_top_n
    for attr in ("score_thresh", "nms_thresh", "detections_per_img"):
        assert getattr(ours.roi_heads, attr) == getattr(reference.roi_heads, attr)


@pytest.mark.parametrize("setup", SETUPS)
def test_config_round_trips_through_a_weights_only_file(setup):
    config = preset_config(setup)
    buffer = io.BytesIO()
    torch.save({"config": config.asdict()}, buffer)
    buffer.seek(0)
    data = torch.load(buffer, weights_only=True)["config"]
    assert DetectorConfig.from_dict(data) == config


def test_config_defaults_keep_every_candidate():
    for setup in (*TABLE2_SETUPS, "cpu-small"):
        config = preset_config(setup)
        assert config.box_score_thresh <= 0.01
        assert config.aspect_ratios == [1.0]
        # anchors in image pixels cover clumps of 4-50 px (DESIGN.md, 2.5 x FWHM)
        image_px = [s / config.input_scale for s in config.anchor_sizes]
        assert min(image_px) <= 8 and max(image_px) >= 50


def test_fixed_scale_transform_keeps_clump_size_for_any_image_size():
    transform = FixedScaleTransform(2.0, [0.0] * 3, [1.0] * 3)
    transform.train()
    for side in (200, 400):
        image = torch.rand(3, side, side)
        target = {"boxes": torch.tensor([[10.0, 20.0, 26.0, 36.0]]), "labels": torch.tensor([1])}
        batch, targets = transform([image], [target])
        assert batch.image_sizes[0] == (2 * side, 2 * side)
        torch.testing.assert_close(targets[0]["boxes"], torch.tensor([[20.0, 40.0, 52.0, 72.0]]))
        transform.eval()  # postprocess maps boxes back in eval mode only
        back = transform.postprocess([{"boxes": targets[0]["boxes"]}], batch.image_sizes, [(side, side)])
        torch.testing.assert_close(back[0]["boxes"], target["boxes"])
        transform.train()


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(1)
    return build_detector("cpu-small")


def test_cpu_small_trains_one_step(small_model):
    model = small_model
    model.train()
    image = torch.rand(3, 200, 200)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    losses = model([image], [_two_boxes()])
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    loss = sum(losses.values())
    assert math.isfinite(loss.item())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert all(p.requires_grad for p in model.parameters())  # trained from scratch: everything


def test_cpu_small_eval_returns_boxes_in_the_input_frame(small_model):
    model = small_model
    model.eval()
    with torch.inference_mode():
        out = model([torch.rand(3, 200, 200), torch.rand(3, 400, 400)])
    for result, side in zip(out, (200, 400), strict=True):
        assert set(result) == {"boxes", "scores", "labels"}
        boxes = result["boxes"]
        assert boxes.ndim == 2 and boxes.shape[1] == 4
        assert len(boxes) == len(result["scores"]) == len(result["labels"])
        if len(boxes):
            assert float(boxes.min()) >= 0 and float(boxes.max()) <= side
            assert float(result["scores"].min()) >= model.roi_heads.score_thresh
            assert set(result["labels"].tolist()) <= {1, 2}
