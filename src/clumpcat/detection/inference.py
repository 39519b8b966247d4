"""``clumpcat detect``: batched inference of a trained detector over a shard.

The whole 400-px rendered image goes through the model (as in the released
code); the model's fixed input scale keeps clumps at the size they had in the
200-px training crops. Every candidate down to a low score floor is kept, so
users choose their threshold later without rerunning anything. Boxes are
mapped from the rendered frame back to cutout pixels and to RA/Dec through the
cutout's WCS.

On CUDA: bfloat16 autocast, channels-last memory and pinned, prefetched
batches from DataLoader workers; on CPU: a fixed thread count.
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning
from astropy.wcs import WCS
from torchvision.io import ImageReadMode, decode_image

from clumpcat.constants import LABELS
from clumpcat.detection.data import collate
from clumpcat.detection.engine import autocast
from clumpcat.errors import InputError
from clumpcat.geometry import RenderGeometry, box_centres
from clumpcat.ledger import LedgerEntry, pending, read_status, write_status
from clumpcat.logs import progress
from clumpcat.paths import objid_path
from clumpcat.settings import DetectSettings
from clumpcat.tables import ColumnDoc, read_table, write_table

__all__ = ["DETECTION_COLUMNS", "RenderedImages", "detect_images", "detect_shard", "configure_parser", "run"]

log = logging.getLogger(__name__)

#: The detections contract (DESIGN.md), plus the r-band FWHM used downstream.
DETECTION_COLUMNS: dict[str, ColumnDoc] = {
    "objid": ("", "Galaxy identifier"),
    "x": ("pix", "Candidate centre, cutout x pixel (0-based)"),
    "y": ("pix", "Candidate centre, cutout y pixel (0-based)"),
    "ra": ("deg", "Candidate centre right ascension (ICRS)"),
    "dec": ("deg", "Candidate centre declination (ICRS)"),
    "box_x0": ("pix", "Box left edge, cutout frame (XYXY, pixel edges)"),
    "box_y0": ("pix", "Box bottom edge, cutout frame (XYXY, pixel edges)"),
    "box_x1": ("pix", "Box right edge, cutout frame (XYXY, pixel edges)"),
    "box_y1": ("pix", "Box top edge, cutout frame (XYXY, pixel edges)"),
    "score": ("", "Detection score of the Faster R-CNN"),
    "label": ("", "normal or odd"),
    "fwhm_r_px": ("pix", "r-band PSF FWHM in cutout pixels"),
}


class RenderedImages(torch.utils.data.Dataset):
    """Rendered PNGs of a shard as 3xHxW float tensors in [0, 1]."""

    def __init__(self, table: pd.DataFrame):
        self.objids = table["objid"].astype(str).tolist()
        self.pngs = table["png"].astype(str).tolist()

    def __len__(self) -> int:
        return len(self.objids)

    def __getitem__(self, index: int):
        try:
            rgb = decode_image(self.pngs[index], mode=ImageReadMode.RGB)
        except (OSError, RuntimeError) as exc:
            return None, self.objids[index], f"{self.pngs[index]}: unreadable PNG ({exc})"
        return rgb.float().div_(255.0), self.objids[index], ""


def _cutout_wcs(path: Path) -> WCS:
    """Celestial WCS of a cutout, from its r-band header (the first band if no R)."""
    with fits.open(path, memmap=False) as hdul:
        names = [h.name.upper() for h in hdul]
        hdu = hdul["R"] if "R" in names else hdul[1]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            return WCS(hdu.header, naxis=2).celestial


def detect_images(
    model: torch.nn.Module,
    table: pd.DataFrame,
    *,
    device: torch.device,
    batch_size: int = 8,
    num_workers: int = 0,
    score_floor: float = 0.05,
    amp: bool = True,
) -> tuple[dict[str, dict[str, np.ndarray]], list[LedgerEntry]]:
    """Run the detector over rendered images.

    Parameters
    ----------
    model : torch.nn.Module
        A torchvision detector in eval mode on ``device``.
    table : pandas.DataFrame
        Render table rows (``objid``, ``png``).
    device : torch.device
    batch_size, num_workers : int
        Batching and DataLoader worker processes.
    score_floor : float
        Candidates below this score are dropped.
    amp : bool
        bfloat16 autocast on CUDA.

    Returns
    -------
    predictions : dict
        objid -> ``{"boxes": (N, 4) XYXY rendered pixels, "scores", "labels" (1/2)}``.
    failures : list of LedgerEntry
        Images that could not be read.
    """
    loader = torch.utils.data.DataLoader(
        RenderedImages(table),
        batch_size=batch_size,
        collate_fn=collate,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if num_workers else None,
    )
    predictions, failures = {}, []
    with torch.inference_mode():
        for images, objids, errors in progress(loader, "detect", total=len(loader)):
            good = [i for i, img in enumerate(images) if img is not None]
            failures += [
                LedgerEntry(objids[i], "failed", "detect", errors[i])
                for i in range(len(images))
                if i not in good
            ]
            if not good:
                continue
            batch = [images[i].to(device, non_blocking=True) for i in good]
            with autocast(device, amp):
                results = model(batch)
            for i, res in zip(good, results, strict=True):
                keep = res["scores"] >= score_floor
                predictions[objids[i]] = {
                    "boxes": res["boxes"][keep].float().cpu().numpy(),
                    "scores": res["scores"][keep].float().cpu().numpy(),
                    "labels": res["labels"][keep].cpu().numpy(),
                }
    return predictions, failures


def to_cutout_frame(
    objid: str, pred: dict[str, np.ndarray], geometry: RenderGeometry, wcs: WCS, fwhm_r_px: float
) -> pd.DataFrame:
    """Detections of one galaxy in the contract's columns (cutout frame, ICRS)."""
    boxes = geometry.boxes_render_to_cutout(pred["boxes"]).reshape(-1, 4)
    x, y = box_centres(boxes)
    if len(x):
        sky = wcs.pixel_to_world(x, y)
        ra, dec = sky.icrs.ra.deg, sky.icrs.dec.deg
    else:
        ra = dec = np.zeros(0)
    return pd.DataFrame(
        {
            "objid": objid,
            "x": x,
            "y": y,
            "ra": ra,
            "dec": dec,
            "box_x0": boxes[:, 0],
            "box_y0": boxes[:, 1],
            "box_x1": boxes[:, 2],
            "box_y1": boxes[:, 3],
            "score": pred["scores"].astype(float),
            "label": np.array(LABELS, dtype=object)[np.asarray(pred["labels"], dtype=int) - 1],
            "fwhm_r_px": float(fwhm_r_px),
        },
        columns=list(DETECTION_COLUMNS),
    )


def detect_shard(
    model_path: str | Path,
    render_path: str | Path,
    cutout_dir: str | Path,
    out: str | Path,
    status_out: str | Path,
    *,
    status_in: str | Path | None = None,
    device: str = DetectSettings.device,
    batch_size: int = DetectSettings.batch_size,
    num_workers: int = DetectSettings.num_workers,
    threads: int | None = None,
    score_floor: float = DetectSettings.score_floor,
    amp: bool = DetectSettings.amp,
) -> pd.DataFrame:
    """Detect clump candidates in one shard and write the detections table.

    Parameters
    ----------
    model_path : path
        Trained detector (``model.pt``) or the paper's released state dict.
    render_path : path
        The shard's ``render.parquet``.
    cutout_dir : path
        Folder of the cutouts (for their WCS).
    out, status_out : path
        ``detections.parquet`` and ``status-detect.parquet``.
    status_in : path, optional
        The render stage's status table; its failures are carried over.
    device : {'auto', 'cpu', 'cuda'}
    batch_size, num_workers, threads : int
        Batching, DataLoader workers and CPU threads.
    score_floor : float
        Lowest score kept.
    amp : bool
        bfloat16 autocast and channels-last on CUDA.

    Returns
    -------
    pandas.DataFrame
        The detections written.
    """
    from clumpcat.detection.checkpoint import load_detector

    if device not in ("auto", "cpu", "cuda"):
        raise InputError(f"--device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but no CUDA device is available")
    dev = torch.device("cuda" if device != "cpu" and torch.cuda.is_available() else "cpu")
    if threads and dev.type == "cpu":
        torch.set_num_threads(threads)
    table = read_table(render_path)
    table["objid"] = table["objid"].astype(str)
    upstream = read_status(status_in)
    objids = upstream["objid"].tolist() if upstream is not None else table["objid"].tolist()
    todo = table[table["objid"].isin(pending(objids, upstream))]

    model, meta = load_detector(model_path, device=dev)
    model.eval()
    if dev.type == "cuda" and amp:
        model.to(memory_format=torch.channels_last)
    model.roi_heads.score_thresh = min(float(model.roi_heads.score_thresh), score_floor)
    began = time.perf_counter()
    predictions, failures = detect_images(
        model,
        todo,
        device=dev,
        batch_size=batch_size,
        num_workers=num_workers,
        score_floor=score_floor,
        amp=amp,
    )
    elapsed = time.perf_counter() - began
    frames = []
    for row in todo.itertuples(index=False):
        if row.objid not in predictions:
            continue
        try:
            wcs = _cutout_wcs(objid_path(cutout_dir, row.objid, ".fits"))
        except (OSError, ValueError, KeyError, IndexError) as exc:
            failures.append(LedgerEntry(row.objid, "failed", "detect", f"cutout WCS unreadable ({exc})"))
            continue
        geometry = RenderGeometry(int(row.nx), int(row.ny), float(row.scale_x), float(row.scale_y))
        frames.append(to_cutout_frame(row.objid, predictions[row.objid], geometry, wcs, row.fwhm_r_px))
    detections = (
        pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(DETECTION_COLUMNS))
    )
    detections = detections.astype({c: "float64" for c in DETECTION_COLUMNS if c not in ("objid", "label")})
    detections = detections.astype({"objid": str, "label": str})
    write_table(
        detections,
        out,
        DETECTION_COLUMNS,
        table_metadata={"model": str(model_path), "model_epoch": str(meta.get("epoch", ""))},
    )
    write_status(status_out, objids, failures, upstream=upstream)
    log.info(
        "detect: %d images in %.1f s (%.1f images/s on %s), %d candidates, %d failed",
        len(predictions),
        elapsed,
        len(predictions) / max(elapsed, 1e-9),
        dev,
        len(detections),
        len(failures),
    )
    return detections


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``clumpcat detect``: inputs and outputs, then :class:`DetectSettings`."""
    parser.add_argument("--model", required=True, help="trained detector (model.pt)")
    parser.add_argument("--render", required=True, help="the shard's render.parquet")
    parser.add_argument("--cutouts", required=True, help="folder of {objid}.fits cutouts")
    parser.add_argument("--out", required=True, help="detections.parquet to write")
    parser.add_argument("--status-in", help="previous stage's status table")
    parser.add_argument("--status-out", required=True, help="status table to write")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads")
    DetectSettings.add_options(parser)


def run(args: argparse.Namespace) -> int:
    """Run ``clumpcat detect``."""
    settings = DetectSettings.from_args(args)
    detect_shard(
        args.model,
        args.render,
        args.cutouts,
        args.out,
        args.status_out,
        status_in=args.status_in,
        threads=args.threads,
        **settings.cli_values(),
    )
    return 0
