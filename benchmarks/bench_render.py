"""Benchmark ``clumpcat.render.rgb``: time per galaxy with and without PNGs, and peak memory.

Writes ``--n`` cutouts to a temporary folder: synthetic SDSS-like ones
(exponential disc + point sources + noise, 5 bands, ``--size`` pixels) or,
with ``--simulate``, the synthetic survey's own (``clumpcat simulate``). Then
times :func:`render_shard` over them (the median of ``--repeats`` runs; the
machine may be shared) for each ``--png`` mode: ``all`` (read and validate
the cutout, Lupton or asinh composite, resize to 400x400, PNG write) and
``none`` (read and validate the cutout, geometry only: what the survey and
injected samples do for galaxies outside the gallery). Prints a table.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_render.py --n 100 --size 150
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_render.py --n 40 --simulate --repeats 3
"""

from __future__ import annotations

import argparse
import resource
import statistics
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
    parser.add_argument("--simulate", action="store_true", help="the synthetic survey's cutouts (SDSS-like)")
    parser.add_argument("--png", nargs="+", default=["all", "none"], choices=["all", "none"])
    parser.add_argument("--repeats", type=int, default=3, help="runs per mode (the median is shown)")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.simulate:
            from clumpcat.survey.simulate.survey import simulate_survey

            galaxies, _ = simulate_survey(seed=3, first=0, count=args.n, cutout_dir=tmp / "cutouts")
            objids, survey, what = galaxies["objid"].astype(str).tolist(), "synthetic", "simulated survey"
        else:
            objids = make_cutouts(tmp / "cutouts", args.n, args.size, args.survey)
            survey, what = args.survey, f"{args.size}x{args.size} {args.survey}"
        for mode in args.png:
            times = []
            for k in range(args.repeats):
                start = time.perf_counter()
                table, failures = render_shard(
                    objids,
                    tmp / "cutouts",
                    tmp / f"rgb-{mode}-{k}",
                    survey,
                    pngs=None if mode == "all" else (),
                )
                times.append(time.perf_counter() - start)
                if failures:
                    print(f"{len(failures)} failures: {failures[0].reason}", file=sys.stderr)
                    return 1
            rows.append((mode, statistics.median(times), len(table)))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"render of {len(objids)} {what} cutouts, 1 process, median of {args.repeats}:")
    print(f"{'--png':<6} {'s total':>8} {'ms/galaxy':>10} {'galaxies/s':>11}")
    for mode, elapsed, n in rows:
        print(f"{mode:<6} {elapsed:8.2f} {1000 * elapsed / n:10.1f} {n / elapsed:11.1f}")
    print(f"peak RSS {peak_mb:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
