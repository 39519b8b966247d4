"""Benchmark ``clumpcat.render.rgb``: galaxies per second and peak memory.

Writes ``--n`` synthetic SDSS-like cutouts (exponential disc + point sources +
noise, 5 bands) to a temporary folder, then times :func:`render_shard` over
them (read cutout, Lupton or asinh composite, resize to 400x400, PNG write).

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_render.py --n 100 --size 150
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.wcs import WCS

from clumpcat.constants import HSC_BANDS, HSC_PIXEL_SCALE, SDSS_BANDS, SDSS_PIXEL_SCALE
from clumpcat.render.rgb import render_shard
from clumpcat.survey.cutouts import Cutout, write_cutout

__all__ = ["make_cutouts", "main"]


def make_cutouts(folder: Path, n: int, size: int, survey: str, seed: int = 0) -> list[str]:
    """Write ``n`` synthetic ``size`` x ``size`` cutouts; return their objids."""
    rng = np.random.default_rng(seed)
    bands, scale = (HSC_BANDS, HSC_PIXEL_SCALE) if survey == "hsc" else (SDSS_BANDS, SDSS_PIXEL_SCALE)
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(xx - (size - 1) / 2, yy - (size - 1) / 2)
    disc = np.exp(-r / (size / 10))
    disc /= disc.sum()
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.0, 2.0]
    wcs.wcs.crpix = [(size + 1) / 2] * 2
    wcs.wcs.cdelt = [-scale / 3600, scale / 3600]
    objids = []
    for i in range(n):
        images = {}
        for band in bands:
            img = 80.0 * disc + rng.normal(0, 0.02, (size, size))
            for x, y in rng.uniform(size * 0.3, size * 0.7, (3, 2)):
                img += 3.0 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 4.5) / (2 * np.pi * 2.25)
            images[band] = img.astype(np.float32)
        objid = f"bench{i:05d}"
        write_cutout(folder / f"{objid}.fits", Cutout(objid, images, wcs, {b: 1.4 for b in bands}))
        objids.append(objid)
    return objids


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print galaxies/s and peak RSS."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="number of galaxies")
    parser.add_argument("--size", type=int, default=150, help="cutout side in pixels")
    parser.add_argument("--survey", default="sdss", choices=["sdss", "hsc"])
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        objids = make_cutouts(tmp / "cutouts", args.n, args.size, args.survey)
        start = time.perf_counter()
        table, failures = render_shard(objids, tmp / "cutouts", tmp / "rgb", args.survey)
        elapsed = time.perf_counter() - start
    if failures:
        print(f"{len(failures)} failures: {failures[0].reason}", file=sys.stderr)
        return 1
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"render ({args.survey}, {args.size}x{args.size} cutouts -> 400x400 PNG): "
        f"{len(table) / elapsed:.1f} galaxies/s ({len(table)} in {elapsed:.2f} s, 1 process), "
        f"peak RSS {peak_mb:.0f} MB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
