"""``clumpcat detect``: batched inference of a trained detector over a shard.

The whole 400-px rendered image goes through the model (as in the released
code); the model's fixed input scale keeps clumps at the size they had in the
200-px training crops. Every candidate down to a low score floor is kept, so
users choose their threshold later without rerunning anything. Boxes are
mapped from the rendered frame back to cutout pixels and to RA/Dec through the
cutout's WCS.

Detection reads the cutouts (``--galaxies``): DataLoader workers read the
FITS files, and the image is rendered on the device by
:mod:`clumpcat.render.torch_rgb` on CUDA, or in the workers by
:mod:`clumpcat.render.rgb` on a CPU (where numpy and Pillow are faster); both
equal the rendered PNG within one grey level. ``--render`` reads PNGs
written by ``clumpcat render`` instead (the older path, kept for
comparison and for images rendered elsewhere).

On CUDA: bfloat16 autocast, channels-last memory and pinned, prefetched
batches from DataLoader workers; on CPU: a fixed thread count and
channels-last weights (oneDNN convolutions about 25% faster).
"""

from __future__ import annotations

import argparse
import concurrent.futures
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
from clumpcat.detection.data import CutoutImages, collate, collate_items
from clumpcat.detection.engine import autocast
from clumpcat.errors import InputError
from clumpcat.geometry import RenderGeometry, box_centres
from clumpcat.ledger import LedgerEntry, pending, read_status, write_status
from clumpcat.logs import progress
from clumpcat.paths import objid_path
from clumpcat.render.rgb import SURVEY_RENDERERS
from clumpcat.render.torch_rgb import render_tensor
from clumpcat.settings import DetectSettings
from clumpcat.tables import ColumnDoc, read_table, write_table

__all__ = [
    "DETECTION_COLUMNS",
    "RENDER_PLACES",
    "RenderedImages",
    "detect_images",
    "detect_cutouts",
    "detect_shard",
    "configure_parser",
    "run",
]

log = logging.getLogger(__name__)

#: Where detection renders cutouts (DetectSettings.render_on).
RENDER_PLACES: tuple[str, ...] = ("auto", "device", "loader")

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
        # A null png: the render stage was asked for no PNG of this galaxy (--png).
        self.pngs = [None if pd.isna(p) else str(p) for p in table["png"]]

    def __len__(self) -> int:
        return len(self.objids)

    def __getitem__(self, index: int):
        if self.pngs[index] is None:
            return None, self.objids[index], "no PNG rendered (render --png); detect from --galaxies instead"
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
    loader = _loader(
        RenderedImages(table),
        batch_size=batch_size,
        num_workers=num_workers,
        device=device,
        collate_fn=collate,
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
            results = _run_model(model, batch, device, amp, score_floor)
            predictions.update({objids[i]: res for i, res in zip(good, results, strict=True)})
    return predictions, failures


def _run_model(
    model: torch.nn.Module, images: list[torch.Tensor], device: torch.device, amp: bool, score_floor: float
) -> list[dict[str, np.ndarray]]:
    """The model on a batch of 3xHxW images on ``device``; candidates above the floor, on the host."""
    if device.type == "cuda" and amp:
        # Channels-last matches the model's memory format (set by the caller).
        images = list(torch.stack(images).contiguous(memory_format=torch.channels_last))
    with autocast(device, amp):
        results = model(images)
    out = []
    for res in results:
        keep = res["scores"] >= score_floor
        out.append(
            {
                "boxes": res["boxes"][keep].float().cpu().numpy(),
                "scores": res["scores"][keep].float().cpu().numpy(),
                "labels": res["labels"][keep].cpu().numpy(),
            }
        )
    return out


def _loader(dataset, *, batch_size: int, num_workers: int, device: torch.device, collate_fn):
    """Batches of ``dataset``, pinned and prefetched by workers when there are any."""
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        collate_fn=collate_fn,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if num_workers else None,
        persistent_workers=False,
    )


def render_here(render: str, device: torch.device) -> bool:
    """Whether the DataLoader renders (numpy/Pillow) rather than the device (torch).

    ``auto`` renders on the device on CUDA, and in the loader on a CPU, where
    Pillow's resize is faster than the same resize written in torch.
    """
    if render not in RENDER_PLACES:
        raise InputError(f"--render-on must be one of {', '.join(RENDER_PLACES)}, got {render!r}")
    return render == "loader" or (render == "auto" and device.type != "cuda")


def detect_cutouts(
    model: torch.nn.Module,
    objids: list[str],
    cutout_dir: str | Path,
    survey: str,
    *,
    device: torch.device,
    batch_size: int = 8,
    num_workers: int = 0,
    score_floor: float = 0.05,
    amp: bool = True,
    render: str = "auto",
    resample: str = "lanczos",
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict], list[LedgerEntry]]:
    """Run the detector over cutout files, rendering them on the way (no PNG).

    Parameters
    ----------
    model : torch.nn.Module
        A torchvision detector in eval mode on ``device``.
    objids : list of str
        Galaxies; ``cutout_dir/{objid}.fits`` each.
    cutout_dir : path
    survey : {'sdss', 'synthetic', 'hsc'}
        Chooses the composite, as ``clumpcat render --survey``.
    device : torch.device
    batch_size, num_workers : int
        Batching and DataLoader worker processes (which read the FITS files).
    score_floor : float
        Candidates below this score are dropped.
    amp : bool
        bfloat16 autocast and channels-last on CUDA.
    render : {'auto', 'device', 'loader'}
        Where the image is rendered (:func:`render_here`).
    resample : {'lanczos', 'bilinear'}
        Resize filter, as ``clumpcat render --resample``.

    Returns
    -------
    predictions : dict
        objid -> ``{"boxes": (N, 4) XYXY rendered pixels, "scores", "labels" (1/2)}``.
    info : dict
        objid -> ``{"geometry", "wcs", "fwhm_r_px"}`` of each detected galaxy;
        ``wcs`` is None with workers (see :class:`CutoutImages`).
    failures : list of LedgerEntry
        Galaxies whose cutout broke the contract (stage ``detect``).
    """
    here = render_here(render, device)
    dataset = CutoutImages(
        objids, cutout_dir, survey, render_here=here, resample=resample, with_wcs=num_workers == 0
    )
    loader = _loader(
        dataset, batch_size=batch_size, num_workers=num_workers, device=device, collate_fn=collate_items
    )
    predictions, info, failures = {}, {}, []
    with torch.inference_mode():
        for items in progress(loader, "detect", total=len(loader)):
            good = [item for item in items if item["image"] is not None]
            failures += [
                LedgerEntry(it["objid"], "failed", "detect", it["error"])
                for it in items
                if it["image"] is None
            ]
            if not good:
                continue
            images = [item["image"].to(device, non_blocking=True) for item in good]
            if not here:
                images = [
                    render_tensor(img, survey, flux_scale=item["flux_scale"], resample=resample)
                    for img, item in zip(images, good, strict=True)
                ]
            results = _run_model(model, images, device, amp, score_floor)
            for item, res in zip(good, results, strict=True):
                predictions[item["objid"]] = res
                info[item["objid"]] = {k: item[k] for k in ("geometry", "wcs", "fwhm_r_px")}
    return predictions, info, failures


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


def _frame_from_file(task) -> pd.DataFrame | str:
    """:func:`to_cutout_frame` with the WCS read from the cutout; the reason as a str if unreadable."""
    objid, pred, geometry, fwhm_r_px, cutout_dir = task
    try:
        wcs = _cutout_wcs(objid_path(cutout_dir, objid, ".fits"))
    except (OSError, ValueError, KeyError, IndexError) as exc:
        return f"cutout WCS unreadable ({exc})"
    return to_cutout_frame(objid, pred, geometry, wcs, fwhm_r_px)


def detect_shard(
    model_path: str | Path,
    render_path: str | Path | None,
    cutout_dir: str | Path,
    out: str | Path,
    status_out: str | Path,
    *,
    galaxies: str | Path | None = None,
    survey: str = "synthetic",
    resample: str = "lanczos",
    status_in: str | Path | None = None,
    device: str = DetectSettings.device,
    batch_size: int = DetectSettings.batch_size,
    num_workers: int = DetectSettings.num_workers,
    threads: int | None = None,
    score_floor: float = DetectSettings.score_floor,
    amp: bool = DetectSettings.amp,
    render_on: str = DetectSettings.render_on,
) -> pd.DataFrame:
    """Detect clump candidates in one shard and write the detections table.

    Parameters
    ----------
    model_path : path
        Trained detector (``model.pt``) or the paper's released state dict.
    render_path : path or None
        The shard's ``render.parquet``: read its PNGs. None: read the
        cutouts of ``galaxies`` and render them on the way (no PNG).
    cutout_dir : path
        Folder of the cutouts (pixels, WCS and PSF FWHM).
    out, status_out : path
        ``detections.parquet`` and ``status-detect.parquet``.
    galaxies : path, optional
        The shard's galaxy table; needed when ``render_path`` is None.
    survey : {'sdss', 'synthetic', 'hsc'}
        Composite of the cutout path, as ``clumpcat render --survey``.
    resample : {'lanczos', 'bilinear'}
        Resize filter of the cutout path, as ``clumpcat render --resample``.
    status_in : path, optional
        The previous stage's status table; its failures are carried over.
    device : {'auto', 'cpu', 'cuda'}
    batch_size, num_workers, threads : int
        Batching, DataLoader workers and CPU threads.
    score_floor : float
        Lowest score kept.
    amp : bool
        bfloat16 autocast and channels-last on CUDA (channels-last weights always on CPU).
    render_on : {'auto', 'device', 'loader'}
        Where the cutout path renders (:func:`render_here`).

    Returns
    -------
    pandas.DataFrame
        The detections written: the same frame and columns from either path.

    Raises
    ------
    InputError
        If the device is unknown or CUDA is asked for without one, or neither
        (or both) of ``render_path`` and ``galaxies`` is given.
    """
    from clumpcat.detection.checkpoint import load_detector

    if device not in ("auto", "cpu", "cuda"):
        raise InputError(f"--device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError(
            "--device cuda was asked for but no CUDA device is available; use --device cpu or auto"
        )
    if (render_path is None) == (galaxies is None):
        raise InputError("clumpcat detect needs exactly one of --galaxies (cutouts) and --render (PNGs)")
    if survey not in SURVEY_RENDERERS:
        allowed = ", ".join(repr(s) for s in SURVEY_RENDERERS)
        raise InputError(f"--survey must be one of {allowed}, got {survey!r}")
    dev = torch.device("cuda" if device != "cpu" and torch.cuda.is_available() else "cpu")
    if threads and dev.type == "cpu":
        torch.set_num_threads(threads)
    upstream = read_status(status_in)
    if render_path is not None:
        table = read_table(render_path)
        table["objid"] = table["objid"].astype(str)
    else:
        from clumpcat.survey.galaxies import read_galaxies

        table = read_galaxies(galaxies)[["objid"]].astype({"objid": str})
    objids = upstream["objid"].tolist() if upstream is not None else table["objid"].tolist()
    todo = table[table["objid"].isin(pending(objids, upstream))]

    model, meta = load_detector(model_path, device=dev)
    model.eval()
    if dev.type == "cpu" or amp:
        # Channels-last weights: oneDNN's convolutions run ~25% faster on CPU
        # (float32, same results to rounding); on CUDA it pairs with bf16.
        model.to(memory_format=torch.channels_last)
    model.roi_heads.score_thresh = min(float(model.roi_heads.score_thresh), score_floor)
    settings = dict(
        device=dev, batch_size=batch_size, num_workers=num_workers, score_floor=score_floor, amp=amp
    )
    began = time.perf_counter()
    if render_path is None:
        predictions, info, failures = detect_cutouts(
            model, todo["objid"].tolist(), cutout_dir, survey, render=render_on, resample=resample, **settings
        )
    else:
        predictions, failures = detect_images(model, todo, **settings)
        info = {}
    elapsed = time.perf_counter() - began
    frames, later = {}, []
    for row in todo.itertuples(index=False):
        if row.objid not in predictions:
            continue
        if row.objid not in info:
            geometry = RenderGeometry(int(row.nx), int(row.ny), float(row.scale_x), float(row.scale_y))
            info[row.objid] = {"geometry": geometry, "wcs": None, "fwhm_r_px": row.fwhm_r_px}
        if info[row.objid]["wcs"] is None:
            later.append(row.objid)
        else:
            frames[row.objid] = to_cutout_frame(row.objid, predictions[row.objid], **info[row.objid])
    # Galaxies without a WCS at hand: read it from the cutout header, in
    # worker processes when there are workers (astropy's WCS is slow to build).
    tasks = [(o, predictions[o], info[o]["geometry"], info[o]["fwhm_r_px"], cutout_dir) for o in later]
    if num_workers > 1 and len(tasks) > 1:
        with concurrent.futures.ProcessPoolExecutor(num_workers) as pool:
            results = list(
                pool.map(_frame_from_file, tasks, chunksize=max(1, len(tasks) // (4 * num_workers)))
            )
    else:
        results = [_frame_from_file(t) for t in tasks]
    for objid, result in zip(later, results, strict=True):
        if isinstance(result, str):
            failures.append(LedgerEntry(objid, "failed", "detect", result))
        else:
            frames[objid] = result
    frames = [frames[o] for o in todo["objid"] if o in frames]  # the shard's order
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
        "detect: %d images in %.1f s (%.1f images/s on %s, from %s), %d candidates, %d failed",
        len(predictions),
        elapsed,
        len(predictions) / max(elapsed, 1e-9),
        dev,
        "PNGs" if render_path is not None else "cutouts",
        len(detections),
        len(failures),
    )
    return detections


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``clumpcat detect``: inputs and outputs, then :class:`DetectSettings`."""
    parser.add_argument("--model", required=True, help="trained detector (model.pt)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--galaxies", help="the shard's galaxy table: read and render its cutouts (no PNG)")
    source.add_argument("--render", help="the shard's render.parquet: read its PNGs instead")
    parser.add_argument("--cutouts", required=True, help="folder of {objid}.fits cutouts")
    parser.add_argument(
        "--survey",
        default="synthetic",
        choices=sorted(SURVEY_RENDERERS),
        help="composite, as clumpcat render",
    )
    parser.add_argument(
        "--resample",
        default="lanczos",
        choices=("lanczos", "bilinear"),
        help="resize filter, as clumpcat render",
    )
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
        galaxies=args.galaxies,
        survey=args.survey,
        resample=args.resample,
        status_in=args.status_in,
        threads=args.threads,
        **settings.cli_values(),
    )
    return 0
