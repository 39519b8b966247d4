"""The "Zoobot Clumps" classifier (paper App. B): a ResNet encoder with a clumpy / not-clumpy head.

App. B fine-tuned Zoobot's ResNet50 as a binary classifier of Galaxy Zoo:
Clump Scout images (clumpy: at least one clump marked) and used its encoder
as the backbone of the ``zoobot-clumps`` detector set-up (Table 2). Here the
classifier is composed of

* an encoder: the body of one of the detector's set-ups, with the module
  names of torchvision's ResNet (``conv1``, ``bn1``, ``layer1``...), so its
  state dict is what :func:`clumpcat.detection.weights.load_backbone_weights`
  copies onto ``model.backbone.body``:

  ============ =================================== ==============================
  encoder      body                                initialisation
  ============ =================================== ==============================
  resnet50     torchvision ResNet50 (App. B)       zoobot, imagenet or random
  cpu-small    the ``cpu-small`` detector's body   random
  ============ =================================== ==============================

* global average and maximum pooling and one linear layer giving the
  clumpy logit.

The encoder file (:func:`save_encoder`) is a ``torch.save`` dict readable
with ``weights_only=True``: ``{"model": encoder state dict (torchvision key
names, no prefix), "head": ..., "config": ClassifierConfig, "epoch",
"metrics", "clumpcat_version"}``. :func:`clumpcat.detection.weights.read_state_dict`
unwraps ``model``, so a ResNet50 file is read by the same loader as a Zoobot
encoder (``weights.zoobot_clumps``); :func:`load_zoobot_clumps_encoder` also
returns the detector-config changes a ``cpu-small`` encoder needs.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.resnet import Bottleneck, ResNet

from clumpcat import __version__
from clumpcat.detection.model import SmallResNet, preset_config
from clumpcat.detection.weights import (
    load_imagenet_resnet50,
    load_zoobot_encoder,
    read_state_dict,
)
from clumpcat.errors import InputError

__all__ = [
    "ENCODERS",
    "INITS",
    "ClassifierConfig",
    "ClumpyClassifier",
    "build_classifier",
    "save_encoder",
    "load_classifier",
    "load_zoobot_clumps_encoder",
]

#: Encoder bodies, by name; each is the body of the detector set-up in ``_DETECTOR_SETUP``.
ENCODERS: tuple[str, ...] = ("cpu-small", "resnet50")
#: Initial encoder weights: Zoobot (App. B), ImageNet (the paper's other start), or random.
INITS: tuple[str, ...] = ("random", "zoobot", "imagenet")
# The detector set-up whose body (and input normalisation) each encoder shares.
_DETECTOR_SETUP = {"cpu-small": "cpu-small", "resnet50": "zoobot-clumps"}


@dataclasses.dataclass
class ClassifierConfig:
    """Everything needed to rebuild a classifier; stored in the encoder file.

    Attributes
    ----------
    encoder : str
        One of :data:`ENCODERS`.
    image_size : int
        Side in pixels of the square image the network sees.
    image_mean, image_std : list of float
        Per-channel normalisation of the [0, 1] RGB input: the detector
        set-up's, so the encoder sees the inputs it will see in the detector.
    """

    encoder: str
    image_size: int
    image_mean: list[float]
    image_std: list[float]

    def asdict(self) -> dict[str, Any]:
        """Return the configuration as a dict of plain values."""
        return dataclasses.asdict(self)

    @classmethod
    def for_encoder(cls, encoder: str, image_size: int) -> ClassifierConfig:
        """The configuration of an encoder, normalised as its detector set-up.

        Raises
        ------
        InputError
            For an unknown encoder or a non-positive image size.
        """
        if encoder not in ENCODERS:
            raise InputError(f"--encoder must be one of {', '.join(ENCODERS)}, got {encoder!r}")
        if image_size < 32:
            raise InputError(f"--image-size must be >= 32 px (the encoder's stride), got {image_size}")
        detector = preset_config(_DETECTOR_SETUP[encoder])
        return cls(encoder, int(image_size), list(detector.image_mean), list(detector.image_std))


def _encoder_body(encoder: str) -> tuple[nn.Module, int]:
    """A trainable encoder body (BatchNorm2d) and the channels of its last stage."""
    if encoder == "resnet50":
        body = ResNet(Bottleneck, [3, 4, 6, 3])
        del body.fc, body.avgpool  # the classifier has its own head
        return body, 2048
    preset = preset_config("cpu-small")
    return SmallResNet(preset.body_widths, preset.body_blocks), preset.body_widths[-1]


class ClumpyClassifier(nn.Module):
    """Encoder -> global mean and max pool -> one logit (clumpy).

    Parameters
    ----------
    config : ClassifierConfig
        Encoder and input normalisation.

    Notes
    -----
    Input: a batch Nx3xHxW of RGB images in [0, 1]; output: N logits
    (probability of clumpy after a sigmoid).
    """

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        self.encoder, channels = _encoder_body(config.encoder)
        self.head = nn.Linear(2 * channels, 1)
        self.register_buffer("mean", torch.tensor(config.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.image_std).view(1, 3, 1, 1), persistent=False)

    def features(self, images: Tensor) -> Tensor:
        """Pooled encoder features (N x 2 channels: mean, then max) of [0, 1] RGB images."""
        e = self.encoder
        x = (images - self.mean) / self.std
        x = e.maxpool(e.relu(e.bn1(e.conv1(x))))
        for name, module in e.named_children():
            if name.startswith("layer"):
                x = module(x)
        # Mean and maximum over the image: a galaxy is clumpy when one place
        # of it holds a clump, which the maximum sees and the mean dilutes.
        return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)

    def forward(self, images: Tensor) -> Tensor:
        """Clumpy logits, shape (N,)."""
        return self.head(self.features(images)).squeeze(1)


def _initial_state(init: str, path: str | os.PathLike | None) -> dict[str, Tensor]:
    if path is None:
        key = "weights.zoobot" if init == "zoobot" else "weights.imagenet"
        raise InputError(
            f"--init {init} starts from pretrained ResNet50 weights: give --init-weights FILE "
            f"(config key {key}; `clumpcat weights where` says which file)"
        )
    return load_zoobot_encoder(path) if init == "zoobot" else load_imagenet_resnet50(path)


def build_classifier(
    encoder: str = "cpu-small",
    *,
    init: str = "random",
    init_weights: str | os.PathLike | None = None,
    image_size: int = 200,
) -> ClumpyClassifier:
    """Build a clumpy / not-clumpy classifier.

    Parameters
    ----------
    encoder : str
        One of :data:`ENCODERS`.
    init : str
        One of :data:`INITS`; ``zoobot`` and ``imagenet`` need a ResNet50 and
        a file.
    init_weights : path-like, optional
        The Zoobot encoder (timm format) or torchvision ImageNet state dict.
    image_size : int
        Side of the network's input images in pixels.

    Returns
    -------
    ClumpyClassifier
        In training mode, every parameter trainable (App. B fine-tuned the
        whole network).

    Raises
    ------
    InputError
        For an unknown encoder or init, a pretrained init on ``cpu-small``, or
        a weights file that does not fit.
    """
    if init not in INITS:
        raise InputError(f"--init must be one of {', '.join(INITS)}, got {init!r}")
    config = ClassifierConfig.for_encoder(encoder, image_size)
    if init != "random" and encoder != "resnet50":
        raise InputError(
            f"--init {init} loads ResNet50 weights: use --encoder resnet50 (got --encoder {encoder})"
        )
    model = ClumpyClassifier(config)
    if init != "random":
        state = _initial_state(init, init_weights)
        result = model.encoder.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
        if missing:
            raise InputError(
                f"{init_weights} (--init-weights) lacks encoder tensors, e.g. {', '.join(missing[:5])}"
            )
    return model


def save_encoder(
    path: str | os.PathLike, model: ClumpyClassifier, *, epoch: int = -1, metrics: dict | None = None
) -> Path:
    """Write the classifier's encoder and head atomically (temporary file, then rename).

    Parameters
    ----------
    path : path-like
        Destination; its folder is created.
    model : ClumpyClassifier
        The classifier.
    epoch : int
        Epoch of these weights.
    metrics : dict, optional
        Plain numbers (validation metrics of that epoch).

    Returns
    -------
    Path
        The written file: ``weights.zoobot_clumps`` for the detector.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "model": {k: v.detach().cpu().clone() for k, v in model.encoder.state_dict().items()},
        "head": {k: v.detach().cpu().clone() for k, v in model.head.state_dict().items()},
        "config": model.config.asdict(),
        "epoch": int(epoch),
        "metrics": {k: float(v) for k, v in (metrics or {}).items()},
        "clumpcat_version": __version__,
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_classifier(path: str | os.PathLike) -> tuple[ClumpyClassifier, dict[str, Any]]:
    """Rebuild a classifier from :func:`save_encoder`'s file.

    Returns
    -------
    model : ClumpyClassifier
        In eval mode.
    meta : dict
        ``epoch``, ``metrics``, ``clumpcat_version``.

    Raises
    ------
    InputError
        If the file is missing or not a classifier file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"classifier file {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
        raise InputError(
            f"cannot read classifier file {path} with torch.load(weights_only=True): {exc}"
        ) from exc
    if not (isinstance(obj, dict) and {"model", "head", "config"} <= set(obj)):
        raise InputError(f"{path} is not a classifier file (no 'model', 'head' and 'config' entries)")
    config = ClassifierConfig(**obj["config"])
    model = ClumpyClassifier(config)
    model.encoder.load_state_dict(obj["model"])
    model.head.load_state_dict(obj["head"])
    model.eval()
    return model, {k: obj.get(k) for k in ("epoch", "metrics", "clumpcat_version")}


def load_zoobot_clumps_encoder(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read the ``zoobot-clumps`` detector's backbone and the config changes it needs.

    Parameters
    ----------
    path : path-like
        ``weights.zoobot_clumps``: a file of :func:`save_encoder` or any
        Zoobot-format ResNet50 encoder (timm keys, optional prefix).

    Returns
    -------
    state_dict : dict of str to Tensor
        The encoder's tensors in torchvision ResNet names.
    overrides : dict
        :class:`~clumpcat.detection.model.DetectorConfig` fields for
        ``build_detector("zoobot-clumps", ...)``: empty for a ResNet50; for a
        ``cpu-small`` encoder, the ``cpu-small`` detector's body, geometry
        and normalisation with the body frozen as Table 2's transfer-learning
        row (``trainable_layers=0``, frozen batch norms).

    Raises
    ------
    InputError
        If the file is missing or holds neither kind of encoder.
    """
    path = Path(path)
    encoder = None
    if path.is_file() and path.suffix != ".safetensors":
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - the Zoobot loader below names the problem
            raw = None
        config = raw.get("config") if isinstance(raw, dict) else None
        encoder = config.get("encoder") if isinstance(config, dict) else None
    if encoder in (None, "resnet50"):
        return load_zoobot_encoder(path), {}
    if encoder != "cpu-small":
        raise InputError(f"{path} (config key weights.zoobot_clumps) holds an unknown encoder {encoder!r}")
    state = read_state_dict(path, config_key="weights.zoobot_clumps")
    preset = preset_config("cpu-small").asdict()
    overrides = {k: v for k, v in preset.items() if k != "setup"}
    overrides.update(trainable_layers=0, norm="frozen")
    return state, overrides
