"""COCO average precision and recall of detection boxes (Appendix D).

The COCO metrics compare boxes by IoU (Section 4.4.1, Appendix D): AP is the
area under the precision-recall curve averaged over IoU thresholds 0.50 to
0.95 (``AP``) or at IoU 0.50 (``AP50``); AR is twice the area under the
recall-IoU curve, i.e. the mean recall over the same IoU thresholds. The
paper picks the epoch with the best ``F1 = 2 AP AR / (AP + AR)`` (Section
4.4.1, Table 3). pycocotools does the counting; this module builds its
in-memory datasets and silences its printing.

Boxes are XYXY in pixels, 0-based, in whatever frame the caller uses
(cutout or rendered) as long as detections and truth share it.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Mapping

import numpy as np

from clumpcat.constants import LABEL_IDS, LABELS
from clumpcat.errors import InputError

__all__ = ["coco_ap_ar", "f1_score"]

log = logging.getLogger(__name__)


def f1_score(ap: float, ar: float) -> float:
    """Harmonic mean ``2 AP AR / (AP + AR)`` (Appendix D); 0 when both are 0, NaN if either is NaN."""
    ap, ar = float(ap), float(ar)
    if not (np.isfinite(ap) and np.isfinite(ar)):
        return float("nan")
    return 0.0 if ap + ar <= 0 else 2.0 * ap * ar / (ap + ar)


def _as_array(value, name: str, shape_tail: tuple = ()) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, possibly on a GPU
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if shape_tail == (4,):
        arr = arr.astype(float).reshape(-1, 4) if arr.size else np.zeros((0, 4))
    else:
        arr = arr.ravel()
    return arr


def _unpack(entry, image, side: str) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(boxes, scores, labels) of one image from an array or a mapping."""
    if isinstance(entry, Mapping):
        if "boxes" not in entry:
            raise InputError(f"{side} of image {image!r} has no 'boxes'")
        boxes = _as_array(entry["boxes"], "boxes", (4,))
        scores = _as_array(entry["scores"], "scores") if "scores" in entry else None
        labels = _as_array(entry["labels"], "labels") if "labels" in entry else None
    else:
        boxes, scores, labels = _as_array(entry, "boxes", (4,)), None, None
    for name, arr in (("scores", scores), ("labels", labels)):
        if arr is not None and len(arr) != len(boxes):
            raise InputError(f"{side} of image {image!r}: {len(boxes)} boxes but {len(arr)} {name}")
    return boxes, scores, labels


def _category_ids(labels: np.ndarray | None, n: int, image, side: str) -> np.ndarray:
    """Labels as class ids (1 normal, 2 odd); names or ids accepted."""
    if labels is None:
        raise InputError(f"{side} of image {image!r} has no 'labels' (needed for per_class=True)")
    out = np.empty(n, dtype=np.int64)
    for i, lab in enumerate(labels.tolist()):
        if isinstance(lab, str):
            if lab not in LABEL_IDS:
                raise InputError(f"{side} of image {image!r}: label must be one of {LABELS}, got {lab!r}")
            out[i] = LABEL_IDS[lab]
        else:
            if int(lab) not in LABEL_IDS.values():
                raise InputError(
                    f"{side} of image {image!r}: label id must be one of {sorted(LABEL_IDS.values())}, got {lab!r}"
                )
            out[i] = int(lab)
    return out


def _annotations(boxes, cats, scores, image_id, start_id) -> list[dict]:
    anns = []
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        w, h = float(x1 - x0), float(y1 - y0)
        ann = {
            "id": start_id + k,  # ids start at 1: pycocotools treats id 0 as "unmatched"
            "image_id": image_id,
            "category_id": int(cats[k]),
            "bbox": [float(x0), float(y0), w, h],  # COCO boxes are XYWH
            "area": max(w, 0.0) * max(h, 0.0),
            "iscrowd": 0,
        }
        if scores is not None:
            ann["score"] = float(scores[k])
        anns.append(ann)
    return anns


def _summary(precision: np.ndarray, recall: np.ndarray, iou_thrs: np.ndarray, k=slice(None)) -> dict:
    """AP, AP50, AP75 and AR from COCOeval arrays (area 'all', 100 detections)."""

    def mean(values):
        values = values[values > -1]
        return float(np.mean(values)) if values.size else float("nan")

    # precision: [IoU, recall, class, area, maxDets]; recall: [IoU, class, area, maxDets]
    p = precision[:, :, k, 0, -1]
    r = recall[:, k, 0, -1]
    i50 = int(np.argmin(np.abs(iou_thrs - 0.5)))
    i75 = int(np.argmin(np.abs(iou_thrs - 0.75)))
    out = {
        "AP": mean(p),
        "AP50": mean(p[i50]),
        "AP75": mean(p[i75]),
        "AR": mean(r),
        "AR50": mean(r[i50]),
    }
    out["F1"] = f1_score(out["AP"], out["AR"])
    out["F1_50"] = f1_score(out["AP50"], out["AR50"])
    return out


def coco_ap_ar(
    detections_boxes_by_image: Mapping,
    truth_boxes_by_image: Mapping,
    *,
    per_class: bool = False,
    score_threshold: float | None = None,
    max_dets: int = 100,
) -> dict:
    """COCO AP, AR and F1 of detection boxes against true boxes.

    Parameters
    ----------
    detections_boxes_by_image : mapping
        image id -> ``{"boxes": (N, 4) XYXY pixels, "scores": (N,),
        "labels": (N,) optional}`` (arrays or torch tensors; labels as
        names ``normal``/``odd`` or ids 1/2).
    truth_boxes_by_image : mapping
        image id -> ``{"boxes": (M, 4) XYXY, "labels": (M,) optional}`` or
        directly an (M, 4) XYXY array. Every image of the evaluation must
        appear here, even with no boxes; detections of images absent here
        are ignored with a log message.
    per_class : bool
        If True, match only boxes of the same label and add a ``per_class``
        entry with each label's metrics; ``AP``/``AR`` are then the means
        over the labels with truth (mAP and mAR, Eqs. 7 and 9). If False
        (default), labels are ignored (one "clump" class).
    score_threshold : float, optional
        Drop detections below this score first (the paper evaluates after
        post-processing at thresholds 0.1 to 0.9, Section 4.4.1).
    max_dets : int
        Detections kept per image, highest score first (COCO's 100).

    Returns
    -------
    dict
        ``AP`` (IoU 0.50:0.95), ``AP50``, ``AP75``, ``AR`` (IoU 0.50:0.95,
        ``max_dets`` per image), ``AR50``, ``F1`` = 2 AP AR / (AP + AR),
        ``F1_50`` (from AP50 and AR50), ``n_images``, ``n_truth``, ``n_det``;
        with ``per_class`` also ``per_class = {label: {...}}``. A metric is
        NaN when there is no true box; AP and AR are 0 with truth but no
        detections.

    Raises
    ------
    InputError
        If a detection entry lacks boxes or scores, array lengths differ, or
        a label is unknown.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images = list(truth_boxes_by_image)
    image_ids = {img: i + 1 for i, img in enumerate(images)}
    extra = [img for img in detections_boxes_by_image if img not in image_ids]
    if extra:
        log.info("ignoring detections of %d image(s) without truth entry, e.g. %r", len(extra), extra[0])
    categories = (
        [{"id": LABEL_IDS[name], "name": name} for name in LABELS]
        if per_class
        else [{"id": 1, "name": "clump"}]
    )
    gt_anns, dt_anns = [], []
    n_det = 0
    for img in images:
        boxes, _, labels = _unpack(truth_boxes_by_image[img], img, "truth")
        cats = _category_ids(labels, len(boxes), img, "truth") if per_class else np.ones(len(boxes), int)
        gt_anns += _annotations(boxes, cats, None, image_ids[img], len(gt_anns) + 1)
        if img not in detections_boxes_by_image:
            continue
        boxes, scores, labels = _unpack(detections_boxes_by_image[img], img, "detections")
        if scores is None:
            raise InputError(f"detections of image {img!r} have no 'scores'")
        scores = scores.astype(float)
        cats = _category_ids(labels, len(boxes), img, "detections") if per_class else np.ones(len(boxes), int)
        keep = np.ones(len(boxes), dtype=bool) if score_threshold is None else scores >= score_threshold
        boxes, scores, cats = boxes[keep], scores[keep], cats[keep]
        order = np.argsort(-scores, kind="stable")[:max_dets]
        boxes, scores, cats = boxes[order], scores[order], cats[order]
        n_det += len(boxes)
        dt_anns += _annotations(boxes, cats, scores, image_ids[img], len(dt_anns) + 1)

    result = {"n_images": len(images), "n_truth": len(gt_anns), "n_det": n_det}
    nan_metrics = dict.fromkeys(("AP", "AP50", "AP75", "AR", "AR50", "F1", "F1_50"), float("nan"))
    if not gt_anns:
        result.update(nan_metrics)
        if per_class:
            result["per_class"] = {name: dict(nan_metrics) for name in LABELS}
        return result

    image_list = [{"id": i, "width": 0, "height": 0} for i in image_ids.values()]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": image_list, "categories": categories, "annotations": gt_anns}
        gt.createIndex()
        dt = COCO()
        dt.dataset = {"images": image_list, "categories": categories, "annotations": dt_anns}
        dt.createIndex()
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.params.imgIds = list(image_ids.values())
        ev.params.maxDets = [1, 10, int(max_dets)]
        ev.evaluate()
        ev.accumulate()
    precision, recall = ev.eval["precision"], ev.eval["recall"]
    iou_thrs = np.asarray(ev.params.iouThrs)
    result.update(_summary(precision, recall, iou_thrs))
    if per_class:
        cat_ids = list(ev.params.catIds)
        result["per_class"] = {
            cat["name"]: _summary(precision, recall, iou_thrs, k=[cat_ids.index(cat["id"])])
            for cat in categories
        }
    return result
