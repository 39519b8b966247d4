"""``clumpcat train-classifier``: train the "Zoobot Clumps" backbone (paper App. B).

A clumpy / not-clumpy classifier (:mod:`clumpcat.detection.classifier`) is
fine-tuned on rendered galaxy images:

* labels come from a table (objid and a column of 0/1 or of Clump Scout vote
  fractions, clumpy at ``>= vote_threshold``) or, by default, from the
  synthetic survey's truth: clumpy when at least one clump has a u-band
  clump/host flux ratio ``>= min_flux_ratio``;
* the split is stratified by class, 80/10/10 as App. B (Table 7);
* images are the 200-px central crop of the 400-px render (Section 4.2: the
  clumps lie there), shifted by up to 10% of its side, flipped and rotated by
  multiples of 90 degrees in training (App. B's augmentations; rotations by
  90 degrees keep pixels exact), resized to ``image_size``;
* Adam on the binary cross-entropy; the epoch with the best validation ROC
  AUC is kept; a checkpoint after every epoch lets a killed run resume.

Outputs in ``--out-dir``: ``encoder.pt`` (best epoch,
:func:`clumpcat.detection.classifier.save_encoder`: the file
``weights.zoobot_clumps`` names), ``metrics.json`` (class balance per split,
validation and test ROC AUC, accuracy, confusion matrix, and the
majority-class baseline), ``history.csv`` (one row per epoch),
``split.json``, ``roc.png`` and ``checkpoint.pt``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.stats import rankdata

from clumpcat.constants import CROP_SIZE
from clumpcat.detection.classifier import ENCODERS, build_classifier, load_classifier, save_encoder
from clumpcat.detection.data import split_strata
from clumpcat.errors import InputError
from clumpcat.manifests import ManifestPaths, manifest_help
from clumpcat.settings import ClassifierSettings
from clumpcat.tables import read_table

__all__ = [
    "SPLIT_FRACTIONS",
    "DEFAULT_LR",
    "labels_from_truth",
    "labels_from_table",
    "stratified_class_split",
    "ClumpyDataset",
    "roc_auc",
    "binary_metrics",
    "train_classifier",
    "configure_parser",
    "run",
]

log = logging.getLogger(__name__)

#: Train / validation / test fractions of App. B (Table 7: 36,514 / 4,564 / 4,565 images).
SPLIT_FRACTIONS: tuple[float, float, float] = (0.8, 0.1, 0.1)
#: Adam learning rate per encoder when none is given: from scratch (cpu-small) or fine-tuning (resnet50).
DEFAULT_LR = {"cpu-small": 1e-3, "resnet50": 1e-4}
#: Network input side per encoder when none is given: the 200-px crop at the
#: detector set-up's input scale (model.py: 1 for cpu-small, 2 for ResNet50).
DEFAULT_IMAGE_SIZE = {"cpu-small": CROP_SIZE, "resnet50": 2 * CROP_SIZE}
# App. B's random crop "within a 10% margin" of the image.
_SHIFT_FRACTION = 0.1


# ---------------------------------------------------------------------------
# labels


def _render_table(paths: Sequence[str | Path]) -> pd.DataFrame:
    frames = []
    for path in paths:
        frame = read_table(path)
        missing = [c for c in ("objid", "png") if c not in frame.columns]
        if missing:
            raise InputError(f"render table {path} lacks column(s) {', '.join(missing)}")
        no_png = frame.loc[frame["png"].isna(), "objid"].astype(str).tolist()
        if no_png:
            raise InputError(
                f"render table {path}: {len(no_png)} galaxies have no PNG (e.g. {', '.join(no_png[:5])}); "
                "render them with `clumpcat render --png all` (workflow: render.png: all)"
            )
        frames.append(frame[["objid", "png"]])
    if not frames:
        raise InputError("no render tables given (--render)")
    table = pd.concat(frames, ignore_index=True).astype({"objid": str, "png": str})
    duplicated = table["objid"][table["objid"].duplicated()].unique()
    if len(duplicated):
        raise InputError(f"objid(s) rendered twice across --render tables: {', '.join(duplicated[:5])}")
    return table


def labels_from_truth(
    objids: Sequence[str], truth: pd.DataFrame, min_flux_ratio: float = ClassifierSettings.min_flux_ratio
) -> pd.Series:
    """Clumpy (1) / not clumpy (0) from the synthetic survey's truth.

    Parameters
    ----------
    objids : sequence of str
        The rendered galaxies to label.
    truth : pandas.DataFrame
        Truth rows (``objid``, ``label``, ``flux_ratio_u``), one per injected
        source; ``normal`` rows are clumps, ``odd`` rows foreground stars.
    min_flux_ratio : float
        A galaxy is clumpy when one of its clumps has a u-band clump/host
        flux ratio at or above this. The default 0.05 lies between the 3% and
        8% GSFC thresholds of Section 4.4.3 (Guo et al. 2015; Adams et al.
        2022), near their geometric mean 0.049; on the synthetic survey it
        makes 46% of the galaxies clumpy, as App. B's Clump Scout set (43.8%
        clumpy, Table 7).

    Returns
    -------
    pandas.Series
        int64 labels indexed by objid, in the order of ``objids``.

    Raises
    ------
    InputError
        If the truth table lacks a needed column.
    """
    missing = [c for c in ("objid", "label", "flux_ratio_u") if c not in truth.columns]
    if missing:
        raise InputError(f"truth table lacks column(s) {', '.join(missing)} (--truth)")
    clumps = truth[(truth["label"] == "normal") & (truth["flux_ratio_u"] >= min_flux_ratio)]
    clumpy = set(clumps["objid"].astype(str))
    ids = [str(o) for o in objids]
    return pd.Series([int(o in clumpy) for o in ids], index=pd.Index(ids, name="objid"), dtype="int64")


def labels_from_table(
    path: str | Path,
    objids: Sequence[str],
    column: str = ClassifierSettings.label_column,
    vote_threshold: float = ClassifierSettings.vote_threshold,
) -> pd.Series:
    """Clumpy (1) / not clumpy (0) from a label table (e.g. Clump Scout votes).

    Parameters
    ----------
    path : path-like
        Parquet or CSV table with ``objid`` and ``column``: 0/1, or the
        fraction of volunteers who marked a clump (App. B: clumpy when the
        consensus holds at least one clump).
    objids : sequence of str
        The rendered galaxies; those without a label are left out (logged).
    column : str
        The label column.
    vote_threshold : float
        Clumpy when the value is ``>= vote_threshold``.

    Returns
    -------
    pandas.Series
        int64 labels indexed by objid, for the rendered galaxies that have one.

    Raises
    ------
    InputError
        Naming the file and the column or rows at fault: missing columns,
        values outside [0, 1] or missing, duplicated objids, no overlap with
        the rendered galaxies.
    """
    table = read_table(path)
    missing = [c for c in ("objid", column) if c not in table.columns]
    if missing:
        raise InputError(
            f"label table {path} lacks column(s) {', '.join(missing)} (--label-column is {column!r}); "
            f"columns: {', '.join(map(str, table.columns))}"
        )
    values = pd.to_numeric(table[column], errors="coerce")
    bad = table.index[values.isna() | (values < 0) | (values > 1)]
    if len(bad):
        raise InputError(
            f"label table {path}: column {column!r} must hold 0/1 or a fraction in [0, 1]; "
            f"{len(bad)} row(s) do not, e.g. rows {', '.join(map(str, bad[:5]))} "
            f"({', '.join(map(repr, table[column].iloc[bad[:5]]))})"
        )
    ids = table["objid"].astype(str)
    duplicated = ids[ids.duplicated()].unique()
    if len(duplicated):
        raise InputError(f"label table {path}: objid(s) listed twice: {', '.join(duplicated[:5])}")
    labels = pd.Series(
        (values.to_numpy() >= vote_threshold).astype("int64"), index=pd.Index(ids, name="objid")
    )
    rendered = [str(o) for o in objids]
    kept = labels.reindex([o for o in rendered if o in labels.index])
    if kept.empty:
        raise InputError(
            f"label table {path}: none of its {len(labels)} objids is among the rendered galaxies"
        )
    if len(kept) < len(rendered):
        log.warning("%d rendered galaxies have no label in %s; left out", len(rendered) - len(kept), path)
    return kept


def stratified_class_split(
    labels: pd.Series, fractions: tuple[float, float, float] = SPLIT_FRACTIONS, seed: int = 0
) -> dict[str, list[str]]:
    """Split objids into train/val/test with the same clumpy fraction in each (App. B, Table 7).

    Parameters
    ----------
    labels : pandas.Series
        0/1 labels indexed by objid.
    fractions : tuple of float
        Train, validation and test fractions.
    seed : int
        Seed of the shuffle.

    Returns
    -------
    dict
        ``{"train": [...], "val": [...], "test": [...]}`` objids.

    Raises
    ------
    InputError
        If the fractions do not sum to 1, or a split would lack a class.
    """
    if not np.isclose(sum(fractions), 1.0) or min(fractions) < 0:
        raise InputError(f"split fractions must be >= 0 and sum to 1, got {fractions}")
    split = split_strata(
        [np.array(labels.index[labels.to_numpy() == value], dtype=object) for value in (0, 1)],
        fractions,
        seed,
    )
    for name, fraction in zip(split, fractions, strict=True):
        classes = set(labels.loc[split[name]]) if split[name] else set()
        if fraction > 0 and classes != {0, 1}:
            counts = labels.value_counts().to_dict()
            raise InputError(
                f"the {name} split lacks a class ({len(split[name])} galaxies): too few labelled galaxies "
                f"(clumpy: {counts.get(1, 0)}, not clumpy: {counts.get(0, 0)}) for a stratified "
                f"{'/'.join(f'{f:.0%}' for f in fractions)} split"
            )
    return split


# ---------------------------------------------------------------------------
# images


class ClumpyDataset(torch.utils.data.Dataset):
    """Central crops of rendered images with their clumpy label.

    Parameters
    ----------
    png : dict of str to str
        objid -> rendered PNG.
    labels : pandas.Series
        0/1 by objid.
    objids : sequence of str
        The galaxies of this dataset.
    image_size : int
        Side of the returned image.
    augment : bool
        Random shift of the crop (up to 10% of its side), flips and 90-degree
        rotations (App. B).
    seed : int
        Seed of the augmentation; :meth:`set_epoch` changes it per epoch.
    crop : int
        Side of the central crop in rendered pixels (Section 4.2).

    Notes
    -----
    Item ``i`` is ``(image, label)``: a 3 x image_size x image_size float
    tensor in [0, 1] and a float32 scalar 0 or 1.
    """

    def __init__(
        self,
        png: dict[str, str],
        labels: pd.Series,
        objids: Sequence[str],
        *,
        image_size: int,
        augment: bool = False,
        seed: int = 0,
        crop: int = CROP_SIZE,
    ):
        self.png = png
        self.labels = labels
        self.objids = list(objids)
        self.image_size = int(image_size)
        self.augment = augment
        self.seed = seed
        self.crop = crop
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw new augmentations for every item (call once per epoch)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.objids)

    def __getitem__(self, index: int):
        objid = self.objids[index]
        path = self.png[objid]
        try:
            with Image.open(path) as img:
                rgb = np.asarray(img.convert("RGB"))
        except OSError as exc:
            raise InputError(f"{path}: cannot read rendered image of {objid} ({exc})") from exc
        rng = np.random.default_rng((self.seed, self.epoch, index))
        crop = min(self.crop, *rgb.shape[:2])
        dx = dy = 0
        if self.augment:
            reach = int(_SHIFT_FRACTION * crop)
            dx, dy = (int(v) for v in rng.integers(-reach, reach + 1, size=2))
        ox = int(np.clip((rgb.shape[1] - crop) // 2 + dx, 0, rgb.shape[1] - crop))
        oy = int(np.clip((rgb.shape[0] - crop) // 2 + dy, 0, rgb.shape[0] - crop))
        rgb = rgb[oy : oy + crop, ox : ox + crop]
        if self.augment:
            if rng.random() < 0.5:
                rgb = rgb[:, ::-1]
            rgb = np.rot90(rgb, k=int(rng.integers(4)))
        # np.array: a writable, contiguous copy of the (read-only, maybe rotated) pixels
        image = torch.from_numpy(np.array(rgb)).permute(2, 0, 1).float().div_(255.0)
        if crop != self.image_size:
            image = F.interpolate(
                image[None],
                size=(self.image_size, self.image_size),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )[0].clamp_(0.0, 1.0)
        return image, torch.tensor(float(self.labels[objid]))


# ---------------------------------------------------------------------------
# metrics


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U / n_pos n_neg; ties count half).

    Returns NaN when only one class is present.
    """
    labels = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if not n_pos or not n_neg:
        return float("nan")
    ranks = rankdata(np.asarray(scores, dtype=float))
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def binary_metrics(labels: np.ndarray, scores: np.ndarray, majority: int, threshold: float = 0.5) -> dict:
    """ROC AUC, accuracy, confusion matrix and the majority-class baseline.

    Parameters
    ----------
    labels : array of 0/1
    scores : array of float
        Probability of clumpy.
    majority : int
        The training split's majority class, the baseline's constant answer.
    threshold : float
        Clumpy when ``score >= threshold``.

    Returns
    -------
    dict
        ``n``, ``clumpy_fraction``, ``roc_auc``, ``accuracy``,
        ``majority_accuracy`` (accuracy of always answering ``majority``),
        ``tp``, ``fp``, ``tn``, ``fn``.
    """
    labels = np.asarray(labels).astype(int)
    predicted = (np.asarray(scores) >= threshold).astype(int)
    return {
        "n": int(len(labels)),
        "clumpy_fraction": float(labels.mean()) if len(labels) else float("nan"),
        "roc_auc": roc_auc(labels, scores),
        "accuracy": float((predicted == labels).mean()) if len(labels) else float("nan"),
        "majority_accuracy": float((labels == majority).mean()) if len(labels) else float("nan"),
        "tp": int(((predicted == 1) & (labels == 1)).sum()),
        "fp": int(((predicted == 1) & (labels == 0)).sum()),
        "tn": int(((predicted == 0) & (labels == 0)).sum()),
        "fn": int(((predicted == 0) & (labels == 1)).sum()),
    }


def _roc_figure(path: Path, labels: np.ndarray, scores: np.ndarray, auc: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = np.argsort(-np.asarray(scores), kind="stable")
    y = np.asarray(labels)[order].astype(int)
    tpr = np.concatenate([[0.0], np.cumsum(y) / max(y.sum(), 1)])
    fpr = np.concatenate([[0.0], np.cumsum(1 - y) / max((1 - y).sum(), 1)])
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot(fpr, tpr, drawstyle="steps-post", label=f"classifier (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], ls=":", c="grey", label="chance / majority class")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="Zoobot Clumps, test split")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------
# training


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda asked for, but CUDA is not available")
    return torch.device(name)


def _predict(model, loader, device, amp: bool) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    labels, scores = [], []
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        for images, y in loader:
            logits = model(images.to(device, non_blocking=True))
            scores.append(torch.sigmoid(logits.float()).cpu().numpy())
            labels.append(y.numpy())
    if not labels:
        return np.zeros(0, dtype=int), np.zeros(0)
    return np.concatenate(labels).astype(int), np.concatenate(scores)


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def train_classifier(
    render_paths: Sequence[str | Path],
    out_dir: str | Path,
    *,
    truth_paths: Sequence[str | Path] = (),
    labels: str | Path | None = None,
    init_weights: str | Path | None = None,
    encoder: str = ClassifierSettings.encoder,
    init: str = ClassifierSettings.init,
    label_column: str = ClassifierSettings.label_column,
    vote_threshold: float = ClassifierSettings.vote_threshold,
    min_flux_ratio: float = ClassifierSettings.min_flux_ratio,
    image_size: int | None = ClassifierSettings.image_size,
    epochs: int = ClassifierSettings.epochs,
    batch_size: int = ClassifierSettings.batch_size,
    lr: float | None = ClassifierSettings.lr,
    weight_decay: float = ClassifierSettings.weight_decay,
    seed: int = ClassifierSettings.seed,
    device: str = ClassifierSettings.device,
    num_workers: int = ClassifierSettings.num_workers,
    amp: bool = ClassifierSettings.amp,
    threads: int | None = None,
    resume: bool = True,
) -> dict:
    """Train the clumpy / not-clumpy classifier and keep the epoch with the best validation ROC AUC.

    Parameters
    ----------
    render_paths : sequence of path
        ``render.parquet`` tables (objid, png) of the galaxies.
    out_dir : path
        Receives encoder.pt, metrics.json, history.csv, split.json, roc.png
        and checkpoint.pt.
    truth_paths : sequence of path
        Truth tables of the synthetic survey (used when ``labels`` is None).
    labels : path, optional
        Label table (objid, ``label_column``); see :func:`labels_from_table`.
    init_weights : path, optional
        Zoobot or ImageNet ResNet50 file for ``init`` zoobot / imagenet.
    encoder, init, label_column, vote_threshold, min_flux_ratio, image_size, epochs, batch_size, lr, weight_decay, seed, device, num_workers, amp
        :class:`clumpcat.settings.ClassifierSettings`.
    threads : int, optional
        CPU threads for torch.
    resume : bool
        Continue from ``checkpoint.pt`` when present.

    Returns
    -------
    dict
        The content of metrics.json.
    """
    if encoder not in ENCODERS:
        raise InputError(f"--encoder must be one of {', '.join(ENCODERS)}, got {encoder!r}")
    image_size = DEFAULT_IMAGE_SIZE[encoder] if image_size is None else int(image_size)
    lr = DEFAULT_LR[encoder] if lr is None else lr
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dev = _device(device)
    amp = bool(amp and dev.type == "cuda")
    if threads and dev.type == "cpu":
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    # Built first: a bad encoder / init / weights combination fails before any data is read.
    model = build_classifier(encoder, init=init, init_weights=init_weights, image_size=image_size).to(dev)

    render = _render_table(render_paths)
    objids = render["objid"].tolist()
    if labels is not None:
        y = labels_from_table(labels, objids, label_column, vote_threshold)
        source = str(labels)
    else:
        if not truth_paths:
            raise InputError("give --labels TABLE or the synthetic survey's --truth tables")
        truth = pd.concat([read_table(p) for p in truth_paths], ignore_index=True)
        y = labels_from_truth(objids, truth, min_flux_ratio)
        source = f"truth, u-band flux ratio >= {min_flux_ratio}"
    split = stratified_class_split(y, seed=seed)
    (out_dir / "split.json").write_text(json.dumps(split, indent=1))
    majority = int(y.loc[split["train"]].mean() >= 0.5)
    log.info(
        "%d galaxies (%s), %.1f%% clumpy: %d train / %d val / %d test",
        len(y),
        source,
        100 * y.mean(),
        len(split["train"]),
        len(split["val"]),
        len(split["test"]),
    )

    if dev.type == "cuda":
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    png = dict(zip(render["objid"], render["png"], strict=True))
    train_set = ClumpyDataset(png, y, split["train"], image_size=image_size, augment=True, seed=seed)

    def loader(dataset, shuffle: bool, epoch: int = 0):
        return torch.utils.data.DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=num_workers,
            generator=torch.Generator().manual_seed(seed * 1000 + epoch),
            pin_memory=dev.type == "cuda",
            drop_last=shuffle and len(dataset) > batch_size,  # BatchNorm needs > 1 image per batch
        )

    val_loader = loader(ClumpyDataset(png, y, split["val"], image_size=image_size), False)
    checkpoint_path = out_dir / "checkpoint.pt"
    config_key = {"encoder": encoder, "init": init, "image_size": image_size, "split": split}
    history: list[dict] = []
    best: dict = {"auc": -1.0, "epoch": -1, "metrics": {}, "model": None}
    start = 0
    if resume and checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location=dev, weights_only=True)
        if state.get("run") != config_key:
            raise InputError(
                f"{checkpoint_path} was written for another encoder, init, image size or split; "
                "remove it (or the output folder) to train this one from the start"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history, best, start = list(state["history"]), dict(state["best"]), int(state["epoch"]) + 1
        log.info("resuming after epoch %d from %s", start - 1, checkpoint_path)

    for epoch in range(start, epochs):
        began = time.perf_counter()
        model.train()
        train_set.set_epoch(epoch)
        total, count = 0.0, 0
        for images, targets in loader(train_set, True, epoch):
            images = images.to(dev, non_blocking=True)
            if dev.type == "cuda":
                images = images.to(memory_format=torch.channels_last)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                logits = model(images)
            loss = F.binary_cross_entropy_with_logits(logits.float(), targets.to(dev))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite training loss at epoch {epoch}: {loss.item()}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(targets)
            count += len(targets)
        val = binary_metrics(*_predict(model, val_loader, dev, amp), majority=majority)
        row = {
            "epoch": epoch,
            "train_loss": total / max(count, 1),
            **{f"val_{k}": v for k, v in val.items()},
            "seconds": time.perf_counter() - began,
        }
        history.append(row)
        log.info(
            "epoch %d: loss %.4f, val AUC %.3f, accuracy %.3f (majority %.3f), %.0f s",
            epoch,
            row["train_loss"],
            val["roc_auc"],
            val["accuracy"],
            val["majority_accuracy"],
            row["seconds"],
        )
        auc = val["roc_auc"] if np.isfinite(val["roc_auc"]) else -1.0
        if auc > best["auc"]:
            best = {
                "auc": auc,
                "epoch": epoch,
                "metrics": val,
                "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            }
        _atomic_save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "epoch": epoch,
                "history": history,
                "best": best,
                "run": config_key,
            },
            checkpoint_path,
        )
        pd.DataFrame(history).to_csv(out_dir / "history.csv", index=False)

    if best["model"] is not None:
        model.load_state_dict(best["model"])
    weights = save_encoder(
        out_dir / "encoder.pt",
        model,
        epoch=best["epoch"],
        metrics={k: v for k, v in best["metrics"].items() if isinstance(v, float)},
    )
    model, _meta = load_classifier(weights)  # test what was written
    model.to(dev)
    test_labels, test_scores = _predict(
        model, loader(ClumpyDataset(png, y, split["test"], image_size=image_size), False), dev, amp
    )
    test = binary_metrics(test_labels, test_scores, majority=majority)
    result = {
        "labels": source,
        "encoder": encoder,
        "init": init,
        "image_size": image_size,
        "lr": lr,
        "epochs": epochs,
        "best_epoch": best["epoch"],
        "majority_class": majority,
        "class_balance": {name: float(y.loc[ids].mean()) if ids else None for name, ids in split.items()},
        "counts": {name: len(ids) for name, ids in split.items()},
        "validation": best["metrics"],
        "test": test,
        "weights": str(weights),
    }
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=1, default=float))
    if len(test_labels):
        _roc_figure(out_dir / "roc.png", test_labels, test_scores, test["roc_auc"])
    log.info(
        "test: AUC %.3f, accuracy %.3f vs majority-class %.3f (%d galaxies)",
        test["roc_auc"],
        test["accuracy"],
        test["majority_accuracy"],
        test["n"],
    )
    return result


# ---------------------------------------------------------------------------
# CLI


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``clumpcat train-classifier``: inputs and outputs, then :class:`ClassifierSettings`."""
    many = {"nargs": "+", "action": ManifestPaths}
    parser.add_argument("--render", **many, required=True, help=manifest_help("render.parquet tables"))
    parser.add_argument(
        "--truth", **many, default=[], help=manifest_help("truth tables of the synthetic survey")
    )
    parser.add_argument("--labels", help="label table: objid and the --label-column (0/1 or vote fraction)")
    parser.add_argument("--out-dir", required=True, help="folder for encoder.pt and metrics.json")
    parser.add_argument(
        "--init-weights", help="Zoobot (timm) or ImageNet ResNet50 file for --init zoobot/imagenet"
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU threads")
    parser.add_argument("--resume", action="store_true", help="continue from checkpoint.pt")
    ClassifierSettings.add_options(parser)


def run(args: argparse.Namespace) -> int:
    """Run ``clumpcat train-classifier``."""
    settings = ClassifierSettings.from_args(args)
    for option, paths in (("--render", args.render), ("--truth", args.truth), ("--labels", [args.labels])):
        missing = [str(p) for p in paths if p is not None and not Path(p).is_file()]
        if missing:
            raise InputError(f"{option}: no such file: {', '.join(missing)}")
    train_classifier(
        args.render,
        args.out_dir,
        truth_paths=args.truth,
        labels=args.labels,
        init_weights=args.init_weights,
        threads=args.threads,
        resume=args.resume,
        **settings.cli_values(),
    )
    return 0
