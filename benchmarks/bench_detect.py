"""Inference throughput of `clumpcat detect` on whole 400-px rendered images.

Two figures per setting: the model alone on images already in memory on the
device, and end to end from PNG files through the DataLoader (decode, copy,
model), as a detect job runs. Prints a table: device, setup, batch, AMP,
workers, model-only img/s, end-to-end img/s, peak GPU memory (or peak RSS).

    python benchmarks/bench_detect.py --render R.parquet [--model model.pt | --setup cpu-small]
        [--device cuda] [--batch-size 8 32] [--num-workers 0 8] [--images 256]
"""

from __future__ import annotations

import argparse
import itertools
import resource
import time

import pandas as pd
import torch

from clumpcat.detection.engine import autocast
from clumpcat.detection.inference import RenderedImages, detect_images
from clumpcat.detection.model import build_detector
from clumpcat.tables import read_table


def _model(args, device):
    if args.model:
        from clumpcat.detection.checkpoint import load_detector

        model, _meta = load_detector(args.model, device=device)
    else:
        model = build_detector(args.setup).to(device)
    return model.eval()


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def model_only(model, images, batch, device, amp) -> float:
    """Images per second of the model on tensors already on the device."""
    batches = [images[i : i + batch] for i in range(0, len(images), batch)]
    with torch.inference_mode():
        with autocast(device, amp):
            model(batches[0])
        _sync(device)
        start = time.perf_counter()
        for chunk in batches:
            with autocast(device, amp):
                model(chunk)
        _sync(device)
    return len(images) / (time.perf_counter() - start)


def end_to_end(model, table, batch, device, amp, workers) -> float:
    """Images per second from PNG files to candidates."""
    start = time.perf_counter()
    detect_images(model, table, device=device, batch_size=batch, num_workers=workers, amp=amp)
    _sync(device)
    return len(table) / (time.perf_counter() - start)


def peak_memory(device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated() / 2**20:.0f} MiB GPU"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB RSS"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--render", required=True, help="render.parquet of the images to use")
    parser.add_argument("--model", help="trained model.pt (default: an untrained --setup)")
    parser.add_argument("--setup", default="cpu-small")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[8])
    parser.add_argument("--num-workers", type=int, nargs="+", default=[0])
    parser.add_argument("--amp", choices=("on", "off", "both"), default="both")
    parser.add_argument("--images", type=int, default=128, help="images per measurement (repeats the table)")
    args = parser.parse_args()

    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    table = read_table(args.render)
    reps = -(-args.images // len(table))
    table = pd.concat([table] * reps, ignore_index=True).iloc[: args.images]
    model = _model(args, device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    data = RenderedImages(table)
    images = [data[i][0].to(device) for i in range(len(data))]
    amps = {"on": [True], "off": [False], "both": [True, False]}[args.amp]
    if device.type != "cuda":
        amps = [False]
    rows = []
    for batch, amp, workers in itertools.product(args.batch_size, amps, args.num_workers):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        alone = model_only(model, images, batch, device, amp)
        full = end_to_end(model, table, batch, device, amp, workers)
        rows.append(
            (str(device), args.model or args.setup, batch, amp, workers, alone, full, peak_memory(device))
        )
    print(
        f"{'device':8} {'model':24} {'batch':>5} {'amp':>5} {'workers':>7} {'model img/s':>11} {'e2e img/s':>10}  peak"
    )
    for r in rows:
        print(f"{r[0]:8} {r[1][-24:]:24} {r[2]:>5} {r[3]!s:>5} {r[4]:>7} {r[5]:>11.1f} {r[6]:>10.1f}  {r[7]}")


if __name__ == "__main__":
    main()
