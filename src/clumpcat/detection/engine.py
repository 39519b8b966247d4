"""One epoch of training and one pass of validation of a torchvision detector.

Validation follows the paper's model selection (Section 4.4.1): COCO AP and
AR of the raw boxes, and completeness, purity and F1 after post-processing
(NMS across labels, merging within one PSF FWHM) for score thresholds 0.1 to
0.9, matching centroids within 0.75 x the PSF FWHM (Section 4.4.2).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist

from clumpcat.candidates import merge_within_fwhm, nms_across_labels
from clumpcat.coco_metrics import coco_ap_ar
from clumpcat.constants import LABELS, MATCH_FWHM, MERGE_FWHM, NMS_IOU
from clumpcat.errors import ClumpcatError
from clumpcat.geometry import box_centres
from clumpcat.matching import completeness_purity

__all__ = ["autocast", "train_one_epoch", "predict", "validate", "THRESHOLDS"]

log = logging.getLogger(__name__)

#: Score thresholds of the validation sweep (Section 4.4.1: 0.1 to 0.9).
THRESHOLDS = np.round(np.arange(0.1, 0.91, 0.1), 2)


def autocast(device: torch.device, enabled: bool = True):
    """bfloat16 autocast on CUDA (no loss scaling needed); nothing on CPU."""
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _to_device(images, targets, device):
    images = [img.to(device, non_blocking=True) for img in images]
    moved = []
    for t in targets:
        moved.append(
            {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()}
        )
    return images, moved


def _finite_everywhere(value: float, device: torch.device) -> bool:
    """True when the loss is finite on every DDP process (all stop together)."""
    bad = torch.tensor([0.0 if math.isfinite(value) else 1.0], device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(bad)
    return float(bad) == 0.0


def train_one_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    loader: Iterable,
    device: torch.device,
    *,
    epoch: int,
    amp: bool = True,
    log_every: int = 20,
) -> dict[str, float]:
    """Train for one epoch.

    Parameters
    ----------
    model : torch.nn.Module
        A torchvision detector (or its DDP wrapper) returning a loss dict in
        training mode.
    optimizer, scheduler
        Stepped once per iteration (the scheduler carries the warm-up).
    loader : iterable
        Batches of ``(images, targets)`` as made by :func:`clumpcat.detection.data.collate`;
        boxes XYXY in pixels.
    device : torch.device
    epoch : int
        For messages.
    amp : bool
        bfloat16 autocast on CUDA.
    log_every : int
        Iterations between progress lines in the log.

    Returns
    -------
    dict
        Mean of each loss term and of their sum (``loss``) over the epoch.

    Raises
    ------
    ClumpcatError
        If a loss becomes non-finite (diverged training must not continue).
    """
    model.train()
    sums: dict[str, float] = defaultdict(float)
    n = 0
    start = time.perf_counter()
    for i, (images, targets) in enumerate(loader):
        images, targets = _to_device(images, targets, device)
        targets = [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets]
        with autocast(device, amp):
            losses = model(images, targets)
        loss = sum(losses.values())
        value = float(loss.detach())
        if not _finite_everywhere(value, device):
            raise ClumpcatError(
                f"epoch {epoch}, iteration {i}: non-finite loss {value} "
                f"({ {k: float(v) for k, v in losses.items()} }); lower the learning rate"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        for k, v in losses.items():
            sums[k] += float(v.detach())
        sums["loss"] += value
        n += 1
        if log_every and (i + 1) % log_every == 0:
            rate = n / (time.perf_counter() - start)
            log.info("epoch %d it %d loss %.4f (%.2f it/s)", epoch, i + 1, sums["loss"] / n, rate)
    return {k: v / max(n, 1) for k, v in sums.items()}


@torch.inference_mode()
def predict(model, loader: Iterable, device: torch.device, *, amp: bool = True) -> dict:
    """Run the model over a loader.

    Returns
    -------
    dict
        objid -> ``{"boxes": (N, 4) XYXY pixels of the input image, "scores",
        "labels" (ids 1/2)}`` as numpy arrays, plus the targets under
        ``"_targets"`` (objid -> ``{"boxes", "labels"}``).
    """
    model.eval()
    out, truth = {}, {}
    for images, targets in loader:
        images_dev = [img.to(device, non_blocking=True) for img in images]
        with autocast(device, amp):
            results = model(images_dev)
        for res, tgt in zip(results, targets, strict=True):
            out[tgt["objid"]] = {k: res[k].float().cpu().numpy() for k in ("boxes", "scores")}
            out[tgt["objid"]]["labels"] = res["labels"].cpu().numpy()
            truth[tgt["objid"]] = {"boxes": tgt["boxes"].numpy(), "labels": tgt["labels"].numpy()}
    out["_targets"] = truth
    return out


def _postprocessed(pred: Mapping, fwhm_px: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres and scores after NMS and merging (Section 4.3), in the input frame."""
    boxes, scores = pred["boxes"], pred["scores"]
    if len(scores) == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    keep = nms_across_labels(boxes, scores, NMS_IOU)
    boxes, scores, labels = boxes[keep], scores[keep], pred["labels"][keep]
    names = np.array(LABELS, dtype=object)[np.asarray(labels) - 1]
    x, y = box_centres(boxes)
    merged = merge_within_fwhm(x, y, scores, names, boxes, fwhm_px, merge_fwhm=MERGE_FWHM)
    return merged.x, merged.y, merged.score


def validate(predictions: Mapping, fwhm_px: Mapping[str, float], thresholds=THRESHOLDS) -> dict[str, float]:
    """COCO AP/AR and post-processed completeness, purity and F1.

    Parameters
    ----------
    predictions : mapping
        Output of :func:`predict`.
    fwhm_px : mapping
        objid -> r-band PSF FWHM in pixels of the model's input image.
    thresholds : array_like
        Score thresholds of the sweep.

    Returns
    -------
    dict
        ``ap``, ``ar``, ``coco_f1``, and at the best threshold ``threshold``,
        ``completeness``, ``purity``, ``f1``; ``f1_at_0.5`` too.
    """
    targets = predictions["_targets"]
    objids = [k for k in predictions if k != "_targets"]
    coco = coco_ap_ar({k: predictions[k] for k in objids}, {k: targets[k] for k in objids})
    thresholds = np.asarray(thresholds, dtype=float)
    dets, truth = [], []
    for objid in objids:
        x, y, score = _postprocessed(predictions[objid], float(fwhm_px[objid]))
        dets.append(pd.DataFrame({"objid": objid, "x": x, "y": y, "score": score}))
        tx, ty = box_centres(targets[objid]["boxes"].reshape(-1, 4))
        truth.append(pd.DataFrame({"objid": objid, "x": tx, "y": ty}))
    # The evaluation's own sweep (4.4.2 matching), so that the epoch kept by
    # validation is judged exactly as the released catalogue will be.
    sweep = completeness_purity(
        pd.concat(dets, ignore_index=True),
        pd.concat(truth, ignore_index=True),
        thresholds,
        fwhm_px_by_objid={k: float(fwhm_px[k]) for k in objids},
        objids=objids,
        max_fwhm=MATCH_FWHM,
    )
    n_truth = int(sweep["n_truth"].iloc[0]) if len(sweep) else 0
    completeness = sweep["completeness"].fillna(0.0).to_numpy(float)
    purity = sweep["purity"].fillna(0.0).to_numpy(float)
    f1 = sweep["f1"].fillna(0.0).to_numpy(float)
    best = int(np.argmax(f1))
    half = int(np.argmin(np.abs(thresholds - 0.5)))
    return {
        "ap": float(coco["AP"]),
        "ar": float(coco["AR"]),
        "coco_f1": float(coco.get("F1", 0.0)),
        "threshold": float(thresholds[best]),
        "completeness": float(completeness[best]),
        "purity": float(purity[best]),
        "f1": float(f1[best]),
        "completeness_at_0.5": float(completeness[half]),
        "purity_at_0.5": float(purity[half]),
        "f1_at_0.5": float(f1[half]),
        "n_truth": int(n_truth),
    }
