"""``clumpcat train``: train a Faster R-CNN clump detector (paper Section 4.2).

Rendered 400-px images are cropped to their central 200 px and flipped at
random; Adam with a linear warm-up over the first epoch; validation after
every epoch with COCO AP/AR and post-processed F1; the epoch with the best F1
is kept (Section 4.4.1). A checkpoint after every epoch lets a killed run
resume where it stopped. Under ``torchrun`` the model trains with DDP; on a
CPU the job's threads train as DDP processes of their own
(``training.cpu_processes``), each with its part of every batch.

Outputs in ``--out-dir``: ``model.pt`` (best epoch, :func:`clumpcat.detection.checkpoint.save_detector`
format), ``checkpoint.pt`` (last epoch, for resuming), ``metrics.csv`` (one
row per epoch), ``split.json`` (train/val/test objids), ``test_metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch

from clumpcat import __version__
from clumpcat.detection.data import CropDataset, collate, load_training_table, stratified_split, subset_images
from clumpcat.detection.distributed import (
    DistributedContext,
    _pick_device,
    barrier,
    cpu_process_count,
    gather_to_main,
    init_distributed,
    run_cpu_processes,
    shutdown,
    under_launcher,
)
from clumpcat.detection.engine import predict, train_one_epoch, validate
from clumpcat.detection.model import SETUPS, build_detector, preset_config
from clumpcat.errors import InputError
from clumpcat.manifests import ManifestPaths, manifest_help
from clumpcat.render.labels import read_clump_scout_labels
from clumpcat.settings import TrainingSettings
from clumpcat.tables import read_table

__all__ = ["PRETRAINED", "DEFAULT_LR", "train_detector", "configure_parser", "run"]

log = logging.getLogger(__name__)

#: Set-ups whose frozen or fine-tuned ResNet50 needs pretrained weights (Table 2),
#: with the config key that names the file.
PRETRAINED = {
    "imagenet": "imagenet",
    "imagenet-finetuned": "imagenet",
    "zoobot": "zoobot",
    "zoobot-finetuned": "zoobot",
    "zoobot-clumps": "zoobot_clumps",
}


#: Learning rate per set-up when none is given: Adam at 1e-4 (Section 4.2) for
#: the pretrained ResNet50s; 1e-3 for cpu-small, trained from random weights
#: (converges about three times faster in measurements, issue 3 note).
DEFAULT_LR = {"cpu-small": 1e-3}
PAPER_LR = 1e-4
#: Learning-rate schedule after the warm-up: the released code kept the rate
#: constant; cpu-small, trained from scratch in a few epochs, decays it along
#: a cosine to a twentieth, which settles its final epochs.
SCHEDULES = ("constant", "cosine")
DEFAULT_SCHEDULE = {"cpu-small": "cosine"}


def _backbone_state(setup: str, path: str | None) -> tuple[dict | None, dict]:
    """The pretrained body of a Table 2 set-up and the detector-config changes it needs.

    ``zoobot-clumps`` reads the classifier's encoder (App. B,
    :func:`clumpcat.detection.classifier.load_zoobot_clumps_encoder`): a
    ResNet50 needs no change, a ``cpu-small`` encoder brings its body.
    ``path`` is given for every pretrained set-up (:func:`_check_setup`).
    """
    from clumpcat.detection.classifier import load_zoobot_clumps_encoder
    from clumpcat.detection.weights import load_imagenet_resnet50, load_zoobot_encoder

    if setup not in PRETRAINED:
        return None, {}
    if PRETRAINED[setup] == "imagenet":
        return load_imagenet_resnet50(path), {}
    if setup == "zoobot-clumps":
        return load_zoobot_clumps_encoder(path)
    return load_zoobot_encoder(path), {}


def _check_setup(setup: str, backbone_weights: str | None, overrides: dict | None) -> None:
    """Fail on a set-up the options cannot build, before any file is read or process spawned.

    What needs the files (a weights file that is missing or of another
    model) fails where they are read, in the training process itself.
    """
    if setup in PRETRAINED and backbone_weights is None:
        raise InputError(
            f"setup '{setup}' starts from pretrained weights: give --backbone-weights FILE "
            f"(config key weights.{PRETRAINED[setup]}; `clumpcat weights where` says which file)"
        )
    try:
        preset_config(setup, **(overrides or {}))
    except (TypeError, ValueError) as exc:
        raise InputError(f"detector set-up '{setup}': {exc}") from exc


def _label_tables(paths: Sequence[str], out_dir: Path) -> list[str]:
    """Label tables in the render frame; Clump Scout tables are converted first."""
    converted = []
    for i, path in enumerate(paths):
        columns = set(read_table(path).columns)
        if {"box_x0", "box_y0", "box_x1", "box_y1", "label"} <= columns:
            converted.append(path)
            continue
        frame = read_clump_scout_labels(path)
        target = out_dir / f"clump_scout_labels_{i}.parquet"
        frame.to_parquet(target, index=False)
        converted.append(str(target))
    return converted


def _fwhm_render(images: pd.DataFrame) -> dict[str, float]:
    """r-band PSF FWHM of each image in rendered pixels (a crop keeps the scale)."""
    if "fwhm_r_render_px" not in images.columns:
        raise InputError("render tables lack fwhm_r_render_px (the r-band PSF FWHM in rendered pixels)")
    return dict(zip(images["objid"], images["fwhm_r_render_px"].astype(float), strict=True))


def _lr_factor(iters_per_epoch: int, epochs: int, schedule: str):
    """Linear warm-up over the first epoch (released code), then flat or cosine."""
    warm = max(int(iters_per_epoch), 1)
    total = max(warm * epochs, warm + 1)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warm) / (total - warm))
        return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def _loader(dataset, batch_size, *, shuffle, seed, epoch, ctx: DistributedContext, num_workers):
    """Batches of ``dataset``; under DDP each process gets its share (shuffled or in order)."""
    sampler = None
    if ctx.enabled:
        sampler = torch.utils.data.DistributedSampler(
            dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=shuffle, seed=seed
        )
        sampler.set_epoch(epoch)
    generator = torch.Generator().manual_seed(seed * 1000 + epoch)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        collate_fn=collate,
        num_workers=num_workers,
        generator=generator,
        pin_memory=ctx.device.type == "cuda",
        persistent_workers=False,
    )


def train_detector(
    render_paths: Sequence[str],
    label_paths: Sequence[str],
    out_dir: str | Path,
    *,
    setup: str = TrainingSettings.setup,
    backbone_weights: str | None = None,
    epochs: int = TrainingSettings.epochs,
    batch_size: int = TrainingSettings.batch_size,
    lr: float | None = TrainingSettings.lr,
    weight_decay: float = TrainingSettings.weight_decay,
    seed: int = TrainingSettings.seed,
    device: str = TrainingSettings.device,
    num_workers: int = TrainingSettings.num_workers,
    threads: int | None = None,
    resume: bool = True,
    amp: bool = TrainingSettings.amp,
    fractions: tuple[float, float, float] = (0.7, 0.2, 0.1),
    max_images: int | None = None,
    schedule: str | None = TrainingSettings.schedule,
    jitter: int = TrainingSettings.jitter,
    overrides: dict | None = None,
    cpu_processes: int | None = TrainingSettings.cpu_processes,
) -> dict:
    """Train a detector and keep the epoch with the best validation F1.

    Parameters
    ----------
    render_paths : sequence of str
        ``render.parquet`` tables of the training images.
    label_paths : sequence of str
        ``labels.parquet`` tables (rendered frame, XYXY) or Clump Scout style
        label tables (image id, x1, x2, y1, y2, label 1/2).
    out_dir : path
        Receives model.pt, checkpoint.pt, metrics.csv, split.json and
        test_metrics.json.
    setup : str
        Detector set-up (:data:`clumpcat.detection.model.SETUPS`).
    backbone_weights : str, optional
        Local file of the pretrained ResNet50 for the Table 2 set-ups.
    epochs, batch_size, lr, weight_decay : training schedule
        Adam (Section 4.2; the released code's weight decay 5e-5), batch size
        per process; ``lr=None`` takes the set-up's default (:data:`DEFAULT_LR`).
    seed : int
        Seeds the split, the initial weights, the shuffling and the flips.
    device : {'auto', 'cpu', 'cuda'}
    num_workers : int
        DataLoader worker processes.
    threads : int, optional
        CPU threads for torch (shared out between ``cpu_processes``).
    cpu_processes : int, optional
        Data-parallel processes on a CPU; ``batch_size`` is split between
        them (:func:`clumpcat.detection.distributed.cpu_process_count`; None
        chooses). Ignored on GPUs and under torchrun.
    resume : bool
        Continue from ``checkpoint.pt`` when present.
    amp : bool
        bfloat16 autocast on CUDA.
    fractions : tuple of float
        Train/validation/test fractions (App. C: 70/20/10).
    max_images : int, optional
        Use a random subset of this many images (seeded), as the run-groups
        of increasing size of App. C.
    overrides : dict, optional
        :class:`clumpcat.detection.model.DetectorConfig` fields replacing the set-up's
        (anchor sizes, input scale, proposal counts...), for experiments.
    jitter : int
        Largest random shift of the training crop from the image centre
        (:class:`clumpcat.detection.data.CropDataset`); validation and test crops get
        a fixed shift per image.
    schedule : {'constant', 'cosine'}, optional
        Learning rate after the warm-up; None takes the set-up's default
        (:data:`DEFAULT_SCHEDULE`, else constant as the released code).

    Returns
    -------
    dict
        Metrics of the best epoch on the validation set and on the test set.
    """
    arguments = dict(locals())  # first statement: exactly this call's arguments
    if setup not in SETUPS:
        raise InputError(f"setup must be one of {', '.join(SETUPS)}, got {setup!r}")
    lr = DEFAULT_LR.get(setup, PAPER_LR) if lr is None else lr
    schedule = DEFAULT_SCHEDULE.get(setup, "constant") if schedule is None else schedule
    if schedule not in SCHEDULES:
        raise InputError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    _check_setup(setup, backbone_weights, overrides)  # before any process is spawned
    if not under_launcher() and _pick_device(device, 0).type == "cpu":
        processes = cpu_process_count(batch_size, threads, cpu_processes)
        if processes > 1:
            per_thread = max(1, (threads or torch.get_num_threads()) // processes)
            log.info(
                "training as %d data-parallel CPU processes of %d images and %d thread(s) each",
                processes,
                batch_size // processes,
                per_thread,
            )
            replica = {**arguments, "batch_size": batch_size // processes, "threads": per_thread}
            run_cpu_processes(train_detector, processes, {**replica, "cpu_processes": 1})
            return json.loads((Path(out_dir) / "test_metrics.json").read_text())
    ctx = init_distributed(device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if threads and ctx.device.type == "cpu":
        torch.set_num_threads(threads)
    torch.manual_seed(seed)

    table = load_training_table(render_paths, _label_tables(label_paths, out_dir))
    if max_images is not None:
        table = subset_images(table, max_images, seed=seed)
    split = stratified_split(table, fractions, seed=seed)
    if not split["train"] or not split["val"]:
        raise InputError(
            f"too few labelled images to train: {len(table.images)} images give "
            f"{len(split['train'])} training and {len(split['val'])} validation images"
        )
    fwhm = _fwhm_render(table.images)
    if ctx.is_main:
        (out_dir / "split.json").write_text(json.dumps(split, indent=1))
        log.info(
            "%d images, %d boxes: %d train / %d val / %d test",
            len(table.images),
            len(table.boxes),
            len(split["train"]),
            len(split["val"]),
            len(split["test"]),
        )

    try:
        state, body = _backbone_state(setup, backbone_weights)
        model = build_detector(setup, backbone_weights=state, **{**body, **(overrides or {})})
    except ValueError as exc:
        raise InputError(f"detector set-up '{setup}': {exc}") from exc
    config = model.clumpcat_config
    model.to(ctx.device)
    if ctx.device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    train_set = CropDataset(table, split["train"], augment=True, seed=seed, jitter=jitter)
    iters_per_epoch = math.ceil(len(train_set) / (batch_size * ctx.world_size))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(iters_per_epoch, epochs, schedule))
    net = model
    if ctx.enabled:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.local_rank] if ctx.device.type == "cuda" else None
        )

    checkpoint_path = out_dir / "checkpoint.pt"
    history: list[dict] = []
    best_f1 = -1.0
    best = {"model": None, "epoch": -1, "metrics": {}}
    start_epoch = 0
    if resume and checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location=ctx.device, weights_only=True)
        if state.get("config") != config.asdict():
            raise InputError(
                f"{checkpoint_path} was written for another detector configuration; "
                "remove it (or the output folder) to train this one from the start"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["lr_scheduler"])
        start_epoch = int(state["epoch"]) + 1
        history = list(state["history"])
        best_f1 = float(state["best_f1"])
        best = dict(state["best"])
        log.info("resuming after epoch %d from %s", start_epoch - 1, checkpoint_path)

    val_set = CropDataset(table, split["val"], seed=seed, jitter=jitter)
    for epoch in range(start_epoch, epochs):
        began = time.perf_counter()
        train_set.set_epoch(epoch)
        loader = _loader(
            train_set, batch_size, shuffle=True, seed=seed, epoch=epoch, ctx=ctx, num_workers=num_workers
        )
        losses = train_one_epoch(net, optimizer, scheduler, loader, ctx.device, epoch=epoch, amp=amp)
        # Every process predicts its share of the validation crops; the main one scores them.
        val_loader = _loader(
            val_set, batch_size, shuffle=False, seed=seed, epoch=epoch, ctx=ctx, num_workers=num_workers
        )
        shares = gather_to_main(predict(model, val_loader, ctx.device, amp=amp), ctx)
        if ctx.is_main:
            metrics = validate(_merge_predictions(shares), fwhm)
            row = {
                "epoch": epoch,
                **{f"train_{k}": v for k, v in losses.items()},
                "lr": optimizer.param_groups[0]["lr"],
                **{f"val_{k}": v for k, v in metrics.items()},
                "seconds": time.perf_counter() - began,
            }
            history.append(row)
            log.info(
                "epoch %d: loss %.4f, val AP %.3f AR %.3f, F1 %.3f (C %.3f, P %.3f at score %.1f), %.0f s",
                epoch,
                losses["loss"],
                metrics["ap"],
                metrics["ar"],
                metrics["f1"],
                metrics["completeness"],
                metrics["purity"],
                metrics["threshold"],
                row["seconds"],
            )
            if metrics["f1"] > best_f1:
                best_f1 = metrics["f1"]
                # The best weights live in the checkpoint too: the workflow
                # deletes model.pt of a killed job, the checkpoint survives.
                best = {
                    "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                    "epoch": epoch,
                    "metrics": {k: float(v) for k, v in metrics.items()},
                }
                _save_model(out_dir / "model.pt", model, config, epoch, metrics)
            _atomic_save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "lr_scheduler": scheduler.state_dict(),
                    "epoch": epoch,
                    "history": history,
                    "best_f1": best_f1,
                    "best": best,
                    "config": config.asdict(),
                },
                checkpoint_path,
            )
            pd.DataFrame(history).to_csv(out_dir / "metrics.csv", index=False)
        barrier(ctx)

    result: dict = {}
    if ctx.is_main:
        if best["model"] is not None:
            # Always ship the best epoch, also after a resume that found no better one.
            model.load_state_dict(best["model"])
            _save_model(out_dir / "model.pt", model, config, best["epoch"], best["metrics"])
        elif not (out_dir / "model.pt").exists():
            _save_model(out_dir / "model.pt", model, config, epochs - 1, {})
        pd.DataFrame(history).to_csv(out_dir / "metrics.csv", index=False)
        result = _test_metrics(out_dir, table, split, fwhm, ctx, batch_size, amp, jitter, seed)
    barrier(ctx)
    shutdown(ctx)
    return result


def _merge_predictions(shares: list[dict]) -> dict:
    """One :func:`predict` result from the processes' shares (a crop padded in twice is one)."""
    merged: dict = {"_targets": {}}
    for share in shares:
        merged["_targets"].update(share["_targets"])
        merged.update({k: v for k, v in share.items() if k != "_targets"})
    return merged


def _save_model(path: Path, model, config, epoch: int, metrics: dict) -> None:
    from clumpcat.detection.checkpoint import save_detector

    save_detector(
        path,
        model,
        config,
        epoch=int(epoch),
        metrics={k: float(v) for k, v in metrics.items()},
        clumpcat_version=__version__,
    )


def _test_metrics(out_dir: Path, table, split, fwhm, ctx, batch_size, amp, jitter, seed) -> dict:
    """Evaluate the best model on the held-out test split (App. C: 10%)."""
    from clumpcat.detection.checkpoint import load_detector

    model, meta = load_detector(out_dir / "model.pt", device=ctx.device)
    result = {"best_epoch": meta.get("epoch"), "validation": meta.get("metrics", {})}
    if split["test"]:
        loader = torch.utils.data.DataLoader(
            CropDataset(table, split["test"], seed=seed + 1, jitter=jitter),
            batch_size=batch_size,
            collate_fn=collate,
        )
        result["test"] = validate(predict(model, loader, ctx.device, amp=amp), fwhm)
        log.info("test split: %s", json.dumps(result["test"]))
    (out_dir / "test_metrics.json").write_text(json.dumps(result, indent=1, default=float))
    return result


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``clumpcat train``: inputs and outputs, then :class:`TrainingSettings`."""
    many = {"nargs": "+", "action": ManifestPaths}
    parser.add_argument("--render", **many, required=True, help=manifest_help("render.parquet tables"))
    parser.add_argument(
        "--labels", **many, required=True, help=manifest_help("label tables (rendered frame)")
    )
    parser.add_argument("--out-dir", required=True, help="folder for model.pt and metrics")
    parser.add_argument("--backbone-weights", help="pretrained ResNet50 weights (Table 2 set-ups)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads")
    parser.add_argument("--resume", action="store_true", help="continue from checkpoint.pt")
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="replace a detector config field, e.g. input_scale=2 or 'anchor_sizes=[16,32,64,128]'",
    )
    parser.add_argument(
        "--max-images",
        type=int,
        default=None,
        help="train on a seeded random subset of this many images (App. C)",
    )
    TrainingSettings.add_options(parser)


def _parse_overrides(items: list[str]) -> dict:
    """``FIELD=VALUE`` strings to a dict, values read as YAML (numbers, lists)."""
    import yaml

    out = {}
    for item in items:
        field, sep, value = item.partition("=")
        if not sep or not field:
            raise InputError(f"--override takes FIELD=VALUE, got {item!r}")
        out[field.strip()] = yaml.safe_load(value)
    return out


def run(args: argparse.Namespace) -> int:
    """Run ``clumpcat train``."""
    if args.max_images is not None and args.max_images < 3:
        raise InputError(f"--max-images must be >= 3 (train, validation and test), got {args.max_images}")
    settings = TrainingSettings.from_args(args)
    train_detector(
        args.render,
        args.labels,
        args.out_dir,
        backbone_weights=args.backbone_weights,
        threads=args.threads,
        resume=args.resume,
        max_images=args.max_images,
        overrides=_parse_overrides(args.override),
        **settings.cli_values(),
    )
    return 0
