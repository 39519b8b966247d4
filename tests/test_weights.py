"""Tests of clumpcat.detection.weights: file formats, mapping onto backbones, checkpoints, downloads."""

from __future__ import annotations

import argparse
import functools
import hashlib
import http.server
import socket
import threading
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from clumpcat.cli import main as cli_main
from clumpcat.detection import weights
from clumpcat.detection.checkpoint import load_detector, load_paper_detector, save_detector
from clumpcat.detection.model import build_detector
from clumpcat.detection.weights import (
    ChecksumError,
    WeightsSource,
    fetch_weights,
    load_backbone_weights,
    load_imagenet_resnet50,
    load_zoobot_encoder,
)
from clumpcat.errors import InputError, NetworkError

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def resnet50_state():
    """A real torchvision ResNet50 state dict (random init, so no download)."""
    torch.manual_seed(0)
    return torchvision.models.resnet50(weights=None).state_dict()


@pytest.fixture(scope="module")
def files(tmp_path_factory, resnet50_state):
    """One small set of weight files in every supported format."""
    root = tmp_path_factory.mktemp("weights")
    out = {}
    # torchvision's ImageNet file: a plain state dict saved with torch.save.
    out["imagenet"] = root / "resnet50-0676ba61.pth"
    torch.save(resnet50_state, out["imagenet"])
    # Zoobot on the HF hub: timm resnet50, num_classes=0 (no fc); here with a prefix.
    timm_like = {f"model.{k}": v.clone() for k, v in resnet50_state.items() if not k.startswith("fc.")}
    out["zoobot"] = root / "model.safetensors"
    save_file(timm_like, str(out["zoobot"]))
    # A greyscale (in_chans=1) encoder in pytorch_model.bin form with another prefix.
    grey = {f"encoder.{k}": v.clone() for k, v in resnet50_state.items() if not k.startswith("fc.")}
    grey["encoder.conv1.weight"] = resnet50_state["conv1.weight"][:, :1].clone()
    out["zoobot_grey"] = root / "pytorch_model.bin"
    torch.save(grey, out["zoobot_grey"])
    # A wrong file: ResNet18.
    out["resnet18"] = root / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), out["resnet18"])
    # A pickle that is not a tensor dict: refused by weights_only=True.
    out["pickle"] = root / "evil.pth"
    torch.save(argparse.Namespace(x=1), out["pickle"])
    return out


@pytest.fixture(scope="module")
def imagenet_model():
    return build_detector("imagenet")


def test_imagenet_state_dict_lands_on_the_body(files, resnet50_state, imagenet_model):
    sd = load_imagenet_resnet50(files["imagenet"])
    assert "fc.weight" not in sd and "conv1.weight" in sd
    report = load_backbone_weights(imagenet_model, sd, source=files["imagenet"])
    body = imagenet_model.backbone.body
    assert report.loaded == len(body.state_dict())
    assert report.unexpected == []
    torch.testing.assert_close(body.layer3[2].conv2.weight, resnet50_state["layer3.2.conv2.weight"])
    torch.testing.assert_close(body.layer4[0].bn1.running_var, resnet50_state["layer4.0.bn1.running_var"])
    torch.testing.assert_close(body.conv1.weight, resnet50_state["conv1.weight"])
    # still frozen (transfer learning) after loading
    assert not any(p.requires_grad for p in body.parameters())


def test_build_detector_takes_backbone_weights(files, resnet50_state):
    model = build_detector("zoobot-finetuned", backbone_weights=load_zoobot_encoder(files["zoobot"]))
    torch.testing.assert_close(
        model.backbone.body.layer2[1].conv3.weight, resnet50_state["layer2.1.conv3.weight"]
    )
    assert model.backbone.body.layer2[1].conv3.weight.requires_grad


def test_zoobot_timm_safetensors_with_prefix(files, resnet50_state):
    sd = load_zoobot_encoder(files["zoobot"])
    assert not any(k.startswith("model.") for k in sd)
    torch.testing.assert_close(
        sd["layer1.0.downsample.0.weight"], resnet50_state["layer1.0.downsample.0.weight"]
    )


def test_zoobot_greyscale_stem_is_spread_over_rgb(files, resnet50_state):
    sd = load_zoobot_encoder(files["zoobot_grey"])
    assert sd["conv1.weight"].shape == (64, 3, 7, 7)
    expected = resnet50_state["conv1.weight"][:, :1] / 3.0
    for channel in range(3):
        torch.testing.assert_close(sd["conv1.weight"][:, channel : channel + 1], expected)


def test_wrong_file_fails_naming_file_and_keys(files, imagenet_model):
    with pytest.raises(InputError, match=r"resnet18\.pth.*weights\.imagenet.*missing.*conv3"):
        load_imagenet_resnet50(files["resnet18"])
    small = torch.load(files["resnet18"], weights_only=True)
    with pytest.raises(InputError, match=r"from r18.*missing.*layer1\.0\.conv3\.weight"):
        load_backbone_weights(imagenet_model, small, source="r18")
    with pytest.raises(InputError, match=r"evil\.pth.*weights_only=True"):
        load_zoobot_encoder(files["pickle"])
    with pytest.raises(InputError, match=r"nowhere\.pth.*does not exist"):
        load_imagenet_resnet50(files["imagenet"].parent / "nowhere.pth")


def test_shape_mismatch_is_an_error(resnet50_state, imagenet_model):
    bad = dict(resnet50_state)
    bad["layer2.0.conv1.weight"] = torch.zeros(1, 1, 1, 1)
    before = imagenet_model.backbone.body.conv1.weight.clone()
    with pytest.raises(InputError, match=r"layer2\.0\.conv1\.weight"):
        load_backbone_weights(imagenet_model, bad)
    torch.testing.assert_close(imagenet_model.backbone.body.conv1.weight, before)  # nothing half-loaded


def test_paper_dataparallel_state_dict_loads(tmp_path):
    torch.manual_seed(2)
    # As the released code: torchvision's builder, 3-class predictor, nn.DataParallel.
    reference = torchvision.models.detection.fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=3
    )
    state = nn.DataParallel(reference).state_dict()
    assert all(k.startswith("module.") for k in state)
    path = tmp_path / "Zoobot_pre_trained_run20_120.pth"
    torch.save(state, path)
    sd = load_paper_detector(path)
    assert "roi_heads.box_predictor.cls_score.weight" in sd
    model, meta = load_detector(path)
    assert meta["source"] == "paper" and meta["config"].setup == "paper"
    assert meta["classes"] == ["background", "normal", "odd"]
    assert not model.training
    torch.testing.assert_close(
        model.roi_heads.box_predictor.bbox_pred.weight, reference.roi_heads.box_predictor.bbox_pred.weight
    )
    torch.testing.assert_close(
        model.backbone.body.layer4[2].bn3.running_mean, reference.backbone.body.layer4[2].bn3.running_mean
    )


def test_not_a_detector_is_refused(files):
    with pytest.raises(InputError, match=r"resnet50-0676ba61\.pth.*not a Faster R-CNN"):
        load_paper_detector(files["imagenet"])


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(3)
    model = build_detector("cpu-small", box_score_thresh=0.0)
    model.train()
    image = torch.rand(3, 200, 200)
    target = {"boxes": torch.tensor([[40.0, 50.0, 56.0, 66.0]]), "labels": torch.tensor([1])}
    sum(model([image], [target]).values()).backward()  # also moves the BN statistics
    path = tmp_path / "models" / "demo" / "model.pt"
    save_detector(path, model, model.clumpcat_config, epoch=7, metrics={"f1": 0.5})
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temporary file left
    raw = torch.load(path, weights_only=True)
    assert set(raw) >= {"model", "config", "classes", "epoch", "metrics", "clumpcat_version"}
    loaded, meta = load_detector(path)
    assert meta["epoch"] == 7 and meta["metrics"] == {"f1": 0.5} and meta["source"] == "clumpcat"
    assert meta["config"] == model.clumpcat_config
    model.eval()
    test = torch.rand(3, 400, 400)
    with torch.inference_mode():
        a, b = model([test])[0], loaded([test])[0]
    assert len(a["boxes"]) > 0
    for key in ("boxes", "scores", "labels"):
        assert torch.equal(a[key], b[key])


def test_load_detector_missing_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_detector(tmp_path / "model.pt")


# ---------------------------------------------------------------------------
# downloads from a local HTTP server

PAYLOAD = b"clump weights " * 1000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("www")
    (root / "files").mkdir()
    (root / "files" / "tiny.bin").write_bytes(PAYLOAD)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _register(monkeypatch, sha):
    source = WeightsSource(
        "files/tiny.bin", "tiny.bin", sha, "http://example.invalid", "weights.tiny", "test"
    )
    monkeypatch.setitem(weights.REGISTRY, "tiny", source)


def test_fetch_checks_the_sha256(server, tmp_path, monkeypatch):
    _register(monkeypatch, hashlib.sha256(PAYLOAD).hexdigest())
    path = fetch_weights("tiny", tmp_path / "w", base_url=server)
    assert path == tmp_path / "w" / "tiny.bin" and path.read_bytes() == PAYLOAD
    assert sorted(p.name for p in path.parent.iterdir()) == ["tiny.bin"]
    # present and verified: no second download needed (server not contacted)
    assert fetch_weights("tiny", tmp_path / "w", base_url="http://127.0.0.1:9") == path


def test_fetch_accepts_a_torchvision_style_hash_prefix(server, tmp_path, monkeypatch):
    _register(monkeypatch, hashlib.sha256(PAYLOAD).hexdigest()[:8])
    assert fetch_weights("tiny", tmp_path, base_url=server).read_bytes() == PAYLOAD


def test_fetch_checksum_mismatch_leaves_no_file(server, tmp_path, monkeypatch):
    _register(monkeypatch, "0" * 64)
    dest = tmp_path / "w"
    with pytest.raises(ChecksumError, match="SHA-256"):
        fetch_weights("tiny", dest, base_url=server)
    assert list(dest.iterdir()) == []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fetch_offline_says_what_to_put_where(tmp_path, monkeypatch):
    _register(monkeypatch, None)
    port = _closed_port()
    dest = tmp_path / "w"
    with pytest.raises(NetworkError) as info:
        fetch_weights("tiny", dest, base_url=f"http://127.0.0.1:{port}", retries=1, timeout=5)
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message
    assert str(dest / "tiny.bin") in message and "weights.tiny" in message
    assert list(dest.iterdir()) == []


def test_unknown_weights_name():
    with pytest.raises(InputError, match="imagenet"):
        fetch_weights("resnet", "/nonexistent")


def test_cli_fetch_and_where(server, tmp_path, monkeypatch, capsys):
    _register(monkeypatch, hashlib.sha256(PAYLOAD).hexdigest())
    dest = tmp_path / "w"
    assert cli_main(["weights", "fetch", "tiny", "--dest", str(dest), "--base-url", server]) == 0
    assert (dest / "tiny.bin").read_bytes() == PAYLOAD
    assert cli_main(["weights", "where", "--dest", str(dest)]) == 0
    out = capsys.readouterr().out
    assert "weights.imagenet" in out and "weights.zoobot" in out
    line = next(row for row in out.splitlines() if row.startswith("tiny\t"))
    assert str(Path(dest) / "tiny.bin") in line and "\tyes\t" in line


def test_fetch_missing_file_is_not_retried(server, tmp_path, monkeypatch):
    source = WeightsSource("files/missing.bin", "missing.bin", None, server, "weights.tiny", "test")
    monkeypatch.setitem(weights.REGISTRY, "missing", source)
    with pytest.raises(NetworkError, match=r"HTTP 404.*weights\.tiny"):
        fetch_weights("missing", tmp_path, retries=5)
    assert list(tmp_path.iterdir()) == []
