"""Backbone and detector weights: read local files, map them onto models, fetch them.

Every file is read without unpickling code: ``torch.load(...,
weights_only=True)`` for ``.pt``/``.pth``/``.bin`` files and
:func:`safetensors.torch.load_file` for ``.safetensors``.

Formats understood:

* torchvision ResNet50 ImageNet state dicts (``conv1.weight``, ``bn1.*``,
  ``layer1``-``layer4``, ``fc.*``) -> :func:`load_imagenet_resnet50`;
* Zoobot ResNet50 encoders in timm format, as published on the Hugging Face
  hub (``mwalmsley/zoobot-encoder-resnet50``: ``pytorch_model.bin`` or
  ``model.safetensors`` of a timm ``resnet50`` with ``num_classes=0``; timm's
  ResNet keys are torchvision's; a prefix such as ``model.`` or ``encoder.``
  is stripped, a greyscale stem is spread over RGB) ->
  :func:`load_zoobot_encoder`;
* either of the above copied onto ``model.backbone.body`` ->
  :func:`load_backbone_weights` (Table 2's weight initialisations, Section
  4.1);

Whole detectors (the paper's released state dicts, clumpcat's checkpoints)
are read and written by :mod:`clumpcat.detection.checkpoint`.

``clumpcat weights fetch NAME --dest DIR`` downloads a registered file with a
checksum; ``clumpcat weights where`` lists the expected files.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import logging
import os
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from clumpcat import __version__
from clumpcat.constants import LABELS
from clumpcat.errors import ClumpcatError, InputError, NetworkError, one_line

__all__ = [
    "CLASSES",
    "WeightsSource",
    "REGISTRY",
    "ChecksumError",
    "BackboneLoadReport",
    "read_state_dict",
    "load_imagenet_resnet50",
    "load_zoobot_encoder",
    "load_backbone_weights",
    "fetch_weights",
    "expected_path",
    "configure_parser",
    "run",
]

log = logging.getLogger(__name__)

#: Class names by detector label id; 0 is torchvision's background.
CLASSES: tuple[str, ...] = ("background", *LABELS)


class WeightsSource(NamedTuple):
    """Where a registered weights file comes from.

    Attributes
    ----------
    relative_url : str
        Path appended to the base URL.
    filename : str
        File name under the destination folder.
    sha256 : str or None
        Expected SHA-256 hex digest, or a prefix of it (torchvision puts the
        first 8 hex digits in its file names); None: not checked.
    base_url : str
        Default base URL (a mirror may replace it).
    config_key : str
        The config key naming this file for the pipeline.
    description : str
        One line for ``clumpcat weights where``.
    """

    relative_url: str
    filename: str
    sha256: str | None
    base_url: str
    config_key: str
    description: str


_TORCHVISION = "https://download.pytorch.org/models"
_ZOOBOT_HF = "https://huggingface.co/mwalmsley/zoobot-encoder-resnet50/resolve/main"
# The released code's final detectors, Git LFS objects of
# ou-astrophysics/Faster-R-CNN-for-Galaxy-Zoo-Clump-Scout at commit b3b7937;
# the LFS object id is the file's SHA-256.
_PAPER_REPO = (
    "https://github.com/ou-astrophysics/Faster-R-CNN-for-Galaxy-Zoo-Clump-Scout/raw/"
    "b3b7937a32b223a6171192da06503706c43c870b/Faster-RCNN-Detection/models_final"
)

#: Registered downloads, by name.
REGISTRY: dict[str, WeightsSource] = {
    "imagenet": WeightsSource(
        "resnet50-0676ba61.pth",
        "resnet50-0676ba61.pth",
        "0676ba61",
        _TORCHVISION,
        "weights.imagenet",
        "torchvision ResNet50 IMAGENET1K_V1 (the released code's ImageNet weights)",
    ),
    "imagenet-v2": WeightsSource(
        "resnet50-11ad3fa6.pth",
        "resnet50-11ad3fa6.pth",
        "11ad3fa6",
        _TORCHVISION,
        "weights.imagenet",
        "torchvision ResNet50 IMAGENET1K_V2",
    ),
    "zoobot": WeightsSource(
        "pytorch_model.bin",
        "zoobot-encoder-resnet50.bin",
        None,
        _ZOOBOT_HF,
        "weights.zoobot",
        "Zoobot ResNet50 encoder (timm, Hugging Face hub)",
    ),
    "paper": WeightsSource(
        "Zoobot_pre_trained_run20_120.pth",
        "Zoobot_pre_trained_run20_120.pth",
        "13951d78313b66a02885887aec8c0103f2214eb6d70273bc079edb3ac7e6ee8a",
        _PAPER_REPO,
        "weights.paper",
        "paper's Zoobot-backbone detector (the released catalogue's model)",
    ),
    "paper-zoobot-finetuned": WeightsSource(
        "Zoobot_pre_trained_trainable_run20_120.pth",
        "Zoobot_pre_trained_trainable_run20_120.pth",
        "d83a6ccf69fb648b5bd9b10f095a28e25e9f5f5666f135a700a5a1ade577af7c",
        _PAPER_REPO,
        "weights.paper",
        "paper's Zoobot-backbone-finetuned detector",
    ),
    "paper-zoobot-clumps": WeightsSource(
        "Zoobot_fine_tuned_run20_120.pth",
        "Zoobot_fine_tuned_run20_120.pth",
        "a8d219cc51ca559f7f0f183d9e93f39dc351590c0d5fe8e4454b751337bfd8a4",
        _PAPER_REPO,
        "weights.paper",
        "paper's Zoobot-clumps-backbone detector",
    ),
    "paper-imagenet": WeightsSource(
        "Resnet_Imagenet_run20_20.pth",
        "Resnet_Imagenet_run20_20.pth",
        "ec9842b87a40003863eae5e0eddd4c4dfd1d5e4fac6a1c91f5bc24b2884f9ed3",
        _PAPER_REPO,
        "weights.paper",
        "paper's Imagenet-backbone detector",
    ),
    "paper-imagenet-finetuned": WeightsSource(
        "Resnet_Imagenet_trainable_run20_20.pth",
        "Resnet_Imagenet_trainable_run20_20.pth",
        "7d6bf9249e2b9d3a3aec3a639e65444078e521e5c1134653fb973d96bc4667f6",
        _PAPER_REPO,
        "weights.paper",
        "paper's Imagenet-backbone-finetuned detector",
    ),
}


class ChecksumError(ClumpcatError, ValueError):
    """A downloaded file's SHA-256 digest differs from the registered one."""


@dataclass
class BackboneLoadReport:
    """What :func:`load_backbone_weights` did.

    Attributes
    ----------
    loaded : int
        Tensors copied onto ``model.backbone.body``.
    unexpected : list of str
        Keys of the file that the body does not have (e.g. ``layer4.*`` for a
        body that stops at ``layer3``); not copied.
    ignored : list of str
        Classifier keys (``fc.*``) and batch counters, skipped on purpose.
    missing : list of str
        Body keys absent from the file; always empty on return (a missing key
        is an error).
    """

    loaded: int
    unexpected: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------
# reading files


def read_state_dict(path: str | os.PathLike, *, config_key: str | None = None) -> dict[str, Tensor]:
    """Read a tensor dict from a ``.safetensors`` file or a torch file, safely.

    Torch files are read with ``weights_only=True``; a checkpoint wrapping its
    tensors under ``state_dict`` or ``model`` (Lightning, clumpcat) is unwrapped.

    Parameters
    ----------
    path : path-like
        The file.
    config_key : str, optional
        Config key that named the file, quoted in error messages.

    Raises
    ------
    InputError
        If the file is missing, unreadable or not a dict of tensors.
    """
    path = Path(path)
    where = f" (config key {config_key})" if config_key else ""
    if not path.is_file():
        raise InputError(f"weights file {path}{where} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
        raise InputError(
            f"weights file {path}{where} was refused: it is not a plain tensor dict that "
            f"torch.load(weights_only=True) or safetensors reads without running code "
            f"({one_line(exc, 200)}); fetch it again with `clumpcat weights fetch` or convert it to .safetensors"
        ) from exc
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise InputError(f"weights file {path}{where} does not hold a dict of tensors")
    return dict(obj)


def _strip_prefix(state_dict: dict[str, Tensor], anchor: str = "conv1.weight") -> dict[str, Tensor]:
    """Drop the prefix in front of a ResNet's keys (``model.``, ``encoder.``, ``module.``...).

    The prefix is what stands before the stem's ``conv1.weight``; keys
    without it (other heads of a wider checkpoint) are dropped.
    """
    stems = []
    for key in state_dict:
        if not key.endswith(anchor):
            continue
        prefix = key[: -len(anchor)]
        if (not prefix or prefix.endswith(".")) and not any(
            part.startswith("layer") for part in prefix.split(".")
        ):
            stems.append(key)
    if not stems:
        return dict(state_dict)
    prefix = min(stems, key=len)[: -len(anchor)]
    if not prefix:
        return dict(state_dict)
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


@functools.lru_cache(maxsize=1)
def _resnet50_shapes() -> dict[str, tuple[int, ...]]:
    """Key -> shape of a torchvision ResNet50 body (no ``fc``, no batch counters)."""
    from torchvision.models.resnet import Bottleneck, ResNet
    from torchvision.ops import FrozenBatchNorm2d

    with torch.device("meta"):
        net = ResNet(Bottleneck, [3, 4, 6, 3], norm_layer=FrozenBatchNorm2d)
    return {k: tuple(v.shape) for k, v in net.state_dict().items() if not k.startswith("fc.")}


def _check_resnet50(state_dict: dict[str, Tensor], path: Path, what: str, config_key: str) -> None:
    expected = _resnet50_shapes()
    missing = [k for k in expected if k not in state_dict]
    if missing:
        raise InputError(
            f"{path} (config key {config_key}) is not a {what}: {len(missing)} of {len(expected)} "
            f"ResNet50 keys missing, e.g. {', '.join(missing[:5])}; file keys start "
            f"{', '.join(list(state_dict)[:3])}"
        )
    wrong = [
        f"{k} {tuple(state_dict[k].shape)} != {s}"
        for k, s in expected.items()
        if tuple(state_dict[k].shape) != s
    ]
    if wrong:
        raise InputError(
            f"{path} (config key {config_key}) is not a {what}: shapes differ: {'; '.join(wrong[:3])}"
        )


def _body_keys_only(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Drop classifier heads and batch counters of a ResNet state dict."""
    return {
        k: v
        for k, v in state_dict.items()
        if not (k.startswith(("fc.", "head.")) or k.endswith("num_batches_tracked"))
    }


def load_imagenet_resnet50(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read torchvision's ImageNet ResNet50 state dict (``resnet50-*.pth``).

    Parameters
    ----------
    path : path-like
        The file torchvision downloads for ``ResNet50_Weights.IMAGENET1K_V1``
        (or V2): keys ``conv1.weight``, ``bn1.*``, ``layer1``-``layer4``, ``fc.*``.

    Returns
    -------
    dict of str to Tensor
        The body's tensors in torchvision key names, ``fc`` dropped.

    Raises
    ------
    InputError
        If the file is missing or is not a ResNet50 (the message names the
        file and some missing keys).
    """
    path = Path(path)
    sd = _strip_prefix(read_state_dict(path, config_key="weights.imagenet"))
    sd = _body_keys_only(sd)
    _check_resnet50(sd, path, "torchvision ResNet50 state dict", "weights.imagenet")
    return sd


def load_zoobot_encoder(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a Zoobot ResNet50 encoder in timm format.

    Parameters
    ----------
    path : path-like
        ``pytorch_model.bin`` or ``model.safetensors`` from
        ``mwalmsley/zoobot-encoder-resnet50`` (a timm ``resnet50`` with
        ``num_classes=0``), or any state dict of such a model whose keys carry
        a prefix (``model.``, ``encoder.``...). The "Zoobot Clumps" backbone
        of Table 2 (App. B) is read the same way.

    Returns
    -------
    dict of str to Tensor
        The body's tensors in torchvision key names. A greyscale stem
        (``in_chans=1``) is replicated over the three RGB channels and
        divided by 3, so a grey image gives the features it gave before.

    Raises
    ------
    InputError
        If the file is missing or holds no ResNet50 (naming missing keys).
    """
    path = Path(path)
    sd = _body_keys_only(_strip_prefix(read_state_dict(path, config_key="weights.zoobot")))
    stem = sd.get("conv1.weight")
    if stem is not None and stem.ndim == 4 and stem.shape[1] == 1:
        sd["conv1.weight"] = stem.repeat(1, 3, 1, 1) / 3.0
    _check_resnet50(sd, path, "Zoobot ResNet50 encoder (timm resnet50)", "weights.zoobot")
    return sd


def load_backbone_weights(
    model: nn.Module, state_dict: dict[str, Tensor], *, source: str | os.PathLike | None = None
) -> BackboneLoadReport:
    """Copy a ResNet state dict onto ``model.backbone.body`` (Table 2's initialisations).

    Parameters
    ----------
    model : FasterRCNN
        A detector from :func:`clumpcat.detection.model.build_detector`; its
        ``backbone.body`` is an ``IntermediateLayerGetter`` over a ResNet.
    state_dict : dict of str to Tensor
        ResNet tensors in torchvision names (a prefix such as ``model.`` is
        stripped); ``fc.*`` and batch counters are ignored.
    source : str or path-like, optional
        Where the tensors came from, quoted in errors.

    Returns
    -------
    BackboneLoadReport
        Counts and the keys not used.

    Raises
    ------
    InputError
        If a convolution or batch-norm tensor of the body is missing from the
        file or has another shape (strict: a wrong file never half-loads).
    """
    body = model.backbone.body
    origin = f" from {source}" if source else ""
    sd = _strip_prefix(state_dict)
    ignored = [k for k in sd if k.startswith(("fc.", "head.")) or k.endswith("num_batches_tracked")]
    skip = set(ignored)
    sd = {k: v for k, v in sd.items() if k not in skip}
    target = body.state_dict()
    target = {k: v for k, v in target.items() if not k.endswith("num_batches_tracked")}
    missing = [k for k in target if k not in sd]
    if missing:
        raise InputError(
            f"backbone weights{origin} do not fit model.backbone.body: {len(missing)} of "
            f"{len(target)} tensors missing, e.g. {', '.join(missing[:5])}"
        )
    wrong = [
        f"{k} {tuple(sd[k].shape)} != {tuple(v.shape)}" for k, v in target.items() if sd[k].shape != v.shape
    ]
    if wrong:
        raise InputError(f"backbone weights{origin} do not fit model.backbone.body: {'; '.join(wrong[:3])}")
    unexpected = [k for k in sd if k not in target]
    with torch.no_grad():
        for key, value in target.items():
            value.copy_(sd[key].to(dtype=value.dtype))
    log.debug("loaded %d backbone tensors%s", len(target), origin)
    return BackboneLoadReport(loaded=len(target), unexpected=unexpected, ignored=ignored)


# ---------------------------------------------------------------------------
# downloads


def expected_path(name: str, dest: str | os.PathLike) -> Path:
    """Where ``fetch_weights(name, dest)`` puts (or expects) the file."""
    return Path(dest) / _source(name).filename


def _source(name: str) -> WeightsSource:
    if name not in REGISTRY:
        raise InputError(f"unknown weights {name!r}; choose one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_weights(
    name: str,
    dest: str | os.PathLike,
    base_url: str | None = None,
    *,
    timeout: float = 60.0,
    retries: int = 3,
    force: bool = False,
) -> Path:
    """Download a registered weights file into ``dest``, checking its SHA-256.

    The file is written under a temporary name in ``dest`` and renamed only
    once complete and verified, so a killed or failed download never leaves
    a file with the final name.

    Parameters
    ----------
    name : str
        A key of :data:`REGISTRY`.
    dest : path-like
        Folder to write into (created).
    base_url : str, optional
        Replaces the registered base URL (a mirror, or a local server).
    timeout : float
        Seconds of socket inactivity before a try fails.
    retries : int
        Tries before giving up (1 s, 2 s, 4 s... apart).
    force : bool
        Download even if a file with a matching checksum is there.

    Returns
    -------
    Path
        The verified file.

    Raises
    ------
    NetworkError
        When the host cannot be reached; the message names the host, the
        destination file and the config key to set after placing it by hand.
    ChecksumError
        When the digest differs (no file is left behind).
    """
    source = _source(name)
    dest = Path(dest)
    target = dest / source.filename
    url = f"{(base_url or source.base_url).rstrip('/')}/{source.relative_url}"
    host = urllib.parse.urlsplit(url).netloc or url
    if target.is_file() and not force:
        if source.sha256 is None or _sha256(target).startswith(source.sha256):
            log.info("%s already present: %s", name, target)
            return target
        log.warning("%s exists with another checksum; downloading again", target)
    dest.mkdir(parents=True, exist_ok=True)
    last_error: Exception | None = None
    for attempt in range(max(1, retries)):
        if attempt:
            time.sleep(2 ** (attempt - 1))
        fd, tmp_name = tempfile.mkstemp(prefix=f".{source.filename}.", suffix=".part", dir=dest)
        tmp = Path(tmp_name)
        try:
            digest = hashlib.sha256()
            request = urllib.request.Request(url, headers={"User-Agent": f"clumpcat/{__version__}"})
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as response:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    digest.update(chunk)
                    out.write(chunk)
            hexdigest = digest.hexdigest()
            if source.sha256 is not None and not hexdigest.startswith(source.sha256):
                raise ChecksumError(
                    f"{name}: {url} has SHA-256 {hexdigest}, expected {source.sha256}...; "
                    f"nothing written to {target}"
                )
            os.replace(tmp, target)
            log.info("fetched %s -> %s (sha256 %s)", url, target, hexdigest)
            return target
        except ChecksumError:
            tmp.unlink(missing_ok=True)
            raise
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            tmp.unlink(missing_ok=True)
            last_error = exc
            if isinstance(exc, urllib.error.HTTPError) and 400 <= exc.code < 500 and exc.code != 429:
                break  # not found / forbidden: trying again will not help
            log.warning("try %d/%d of %s failed: %s", attempt + 1, max(1, retries), url, exc)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    if isinstance(last_error, urllib.error.HTTPError):
        reason: Any = f"HTTP {last_error.code} {last_error.reason}"
    else:
        reason = getattr(last_error, "reason", last_error)
    raise NetworkError(
        f"cannot download {name} from {host} ({url}): {reason}. Offline? Fetch that URL on a "
        f"connected machine and put the file at {target}, then set config key "
        f"{source.config_key}={target}"
    )


# ---------------------------------------------------------------------------
# CLI


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add ``fetch`` and ``where`` subcommands to ``clumpcat weights``."""
    sub = parser.add_subparsers(dest="weights_command", metavar="ACTION", required=True)
    fetch = sub.add_parser("fetch", help="download a registered weights file with a checksum")
    fetch.add_argument("name", choices=sorted(REGISTRY), metavar="NAME", help=f"one of {', '.join(REGISTRY)}")
    fetch.add_argument("--dest", required=True, metavar="DIR", help="folder to write into")
    fetch.add_argument("--base-url", metavar="URL", help="mirror replacing the registered base URL")
    fetch.add_argument("--timeout", type=float, default=60.0, help="socket timeout in seconds")
    fetch.add_argument("--force", action="store_true", help="download even if a verified file is there")
    where = sub.add_parser("where", help="list registered weights, their config keys and expected files")
    where.add_argument("--dest", default="weights", metavar="DIR", help="folder holding the files")


def run(args: argparse.Namespace) -> int:
    """Run ``clumpcat weights fetch|where``."""
    if args.weights_command == "fetch":
        path = fetch_weights(args.name, args.dest, args.base_url, timeout=args.timeout, force=args.force)
        print(path)
        return 0
    print("name\tconfig_key\tpath\tpresent\turl")
    for name, source in REGISTRY.items():
        path = expected_path(name, args.dest)
        url = f"{source.base_url}/{source.relative_url}"
        print(f"{name}\t{source.config_key}\t{path}\t{'yes' if path.is_file() else 'no'}\t{url}")
    print(
        "zoobot-clumps\tweights.zoobot_clumps\t(no public PyTorch file: `snakemake zoobot_clumps` trains it, App. B)\tno\t-"
    )
    return 0
