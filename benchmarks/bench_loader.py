"""Benchmark the training data loader: crops per second of :class:`CropDataset`.

Writes ``--n`` rendered-size (400x400) RGB PNGs with a few label boxes each,
then times one pass of ``CropDataset`` (PNG decode, jittered central crop,
box-aware random flips, float tensor) in the main process.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_loader.py --n 200
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from clumpcat.constants import RENDER_SIZE
from clumpcat.detection.data import CropDataset, TrainingTable

__all__ = ["main"]


def _table(folder: Path, n: int, seed: int = 0) -> TrainingTable:
    rng = np.random.default_rng(seed)
    images, boxes = [], []
    for i in range(n):
        objid = f"g{i}"
        # Smooth content compresses like a rendered galaxy, not like white noise.
        small = rng.integers(0, 255, size=(50, 50, 3), dtype=np.uint8)
        png = folder / f"{objid}.png"
        Image.fromarray(small).resize((RENDER_SIZE, RENDER_SIZE), Image.BILINEAR).save(png)
        images.append({"objid": objid, "png": str(png)})
        for _ in range(4):
            cx, cy = rng.uniform(120, 280, size=2)
            boxes.append({"objid": objid, "box_x0": cx - 8, "box_y0": cy - 8, "box_x1": cx + 8,
                          "box_y1": cy + 8, "label": "normal"})  # fmt: skip
    return TrainingTable(pd.DataFrame(images), pd.DataFrame(boxes))


def main(argv=None) -> int:
    """Print crops per second for plain and augmented passes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    args = parser.parse_args(argv)
    print("| images | augment | seconds | crops/s |")
    print("|---:|---|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        table = _table(Path(tmp), args.n)
        for augment in (False, True):
            dataset = CropDataset(table, table.images["objid"], augment=augment, jitter=60)
            t0 = time.perf_counter()
            for i in range(len(dataset)):
                dataset[i]
            seconds = time.perf_counter() - t0
            print(f"| {args.n} | {augment} | {seconds:.2f} | {args.n / seconds:,.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
