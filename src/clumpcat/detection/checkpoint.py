"""Detector checkpoints: clumpcat's own files and the paper's released state dicts.

Every file is read with ``torch.load(..., weights_only=True)``: nothing is
unpickled as code.

* the paper's released detector state dicts (saved from ``nn.DataParallel``,
  keys prefixed ``module.``, 3 classes) -> :func:`load_paper_detector`;
* clumpcat's own checkpoints -> :func:`save_detector` / :func:`load_detector`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from clumpcat import __version__
from clumpcat.detection.model import DetectorConfig, build_detector, build_from_config
from clumpcat.detection.weights import CLASSES, read_state_dict
from clumpcat.errors import InputError, one_line

__all__ = ["load_paper_detector", "save_detector", "load_detector"]


def _is_detector_state_dict(sd: dict[str, Tensor]) -> bool:
    return any(k.startswith("backbone.body.") for k in sd) and any(k.startswith("roi_heads.") for k in sd)


def load_paper_detector(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read one of the paper's released detector state dicts.

    Parameters
    ----------
    path : path-like
        A ``*_run20_*.pth`` file of the released code: the state dict of
        torchvision's ``fasterrcnn_resnet50_fpn`` with a 3-class predictor,
        saved from ``nn.DataParallel`` (keys prefixed ``module.``).

    Returns
    -------
    dict of str to Tensor
        The state dict without the ``module.`` prefix, ready for
        ``build_detector("paper").load_state_dict``.

    Raises
    ------
    InputError
        If the file is missing or is not a Faster R-CNN state dict.
    """
    path = Path(path)
    sd = read_state_dict(path, config_key="weights.paper")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    if not _is_detector_state_dict(sd):
        raise InputError(
            f"{path} (config key weights.paper) is not a Faster R-CNN state dict: no "
            f"'backbone.body.*' and 'roi_heads.*' keys; keys start {', '.join(list(sd)[:3])}"
        )
    return sd


def _unwrap(model: nn.Module) -> nn.Module:
    """The module inside DataParallel / DistributedDataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, nn.DataParallel | nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def save_detector(path: str | os.PathLike, model: nn.Module, config: DetectorConfig, **meta: Any) -> Path:
    """Write a clumpcat checkpoint atomically (temporary file, then rename).

    The file is ``{"model": state_dict, "config": config.asdict(), "classes":
    [...], "epoch": int, "metrics": {...}, "clumpcat_version": str, ...}``,
    readable with ``torch.load(weights_only=True)``.

    Parameters
    ----------
    path : path-like
        Destination (e.g. ``models/NAME/model.pt``); its folder is created.
    model : nn.Module
        The detector, possibly wrapped in (Distributed)DataParallel.
    config : DetectorConfig
        The configuration that built it.
    **meta
        ``classes`` (default background, normal, odd), ``epoch`` (default
        -1), ``metrics`` (default {}) and any other plain values (numbers,
        strings, lists, dicts of those).

    Returns
    -------
    Path
        The written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").clone() for k, v in _unwrap(model).state_dict().items()}
    payload = {
        "model": state,
        "config": config.asdict(),
        "classes": list(meta.pop("classes", CLASSES)),
        "epoch": int(meta.pop("epoch", -1)),
        "metrics": dict(meta.pop("metrics", {})),
        "clumpcat_version": __version__,
        **meta,
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_detector(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a detector from a clumpcat checkpoint or a paper state dict.

    Parameters
    ----------
    path : path-like
        A file written by :func:`save_detector`, or one of the paper's
        released state dicts (then the ``paper`` set-up is built).
    device : str or torch.device
        Where to put the model.

    Returns
    -------
    model : FasterRCNN
        In eval mode on ``device``; ``model.clumpcat_config`` holds its
        :class:`DetectorConfig`. Outputs: per image ``boxes`` (XYXY, pixels
        of the input image), ``scores``, ``labels`` (indices into
        ``meta["classes"]``).
    meta : dict
        ``config`` (DetectorConfig), ``classes``, ``epoch``, ``metrics``,
        ``clumpcat_version`` (None for a paper file), ``source``
        (``"clumpcat"`` or ``"paper"``) and any extra saved values.

    Raises
    ------
    InputError
        If the file is missing, unsafe to read, or neither format, or its
        tensors do not fit the configuration.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"detector file {path} (config key model) does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise InputError(
            f"detector file {path} was refused: it is not a plain tensor file that "
            f"torch.load(weights_only=True) reads without running code ({one_line(exc, 200)}); "
            "use a model written by `clumpcat train` or a released .pth state dict"
        ) from exc
    if isinstance(obj, dict) and "model" in obj and "config" in obj:
        config = DetectorConfig.from_dict(dict(obj["config"]))
        classes = list(obj.get("classes", CLASSES))
        model = build_from_config(config, num_classes=len(classes))
        state = obj["model"]
        meta = {k: v for k, v in obj.items() if k not in ("model", "config")}
        meta.update(config=config, classes=classes, source="clumpcat")
    else:
        state = load_paper_detector(path)
        n_classes = int(state["roi_heads.box_predictor.cls_score.weight"].shape[0])
        model = build_detector("paper", num_classes=n_classes)
        config = model.clumpcat_config
        classes = list(CLASSES) if n_classes == len(CLASSES) else [f"class{i}" for i in range(n_classes)]
        meta = dict(
            config=config, classes=classes, epoch=None, metrics={}, clumpcat_version=None, source="paper"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InputError(
            f"detector file {path} does not fit its configuration ({config.setup}): {exc}"
        ) from exc
    model.clumpcat_config = config
    model.eval()
    return model.to(device), meta
