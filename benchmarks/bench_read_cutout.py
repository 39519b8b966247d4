"""Reading cutouts: milliseconds per cutout, plain-FITS scanner vs astropy.

Simulates ``--n`` galaxies (5 bands, IVAR and PSF HDUs: 16 HDUs a file) and
reads every cutout with :func:`clumpcat.survey.cutouts.read_cutout`, through
the scanner (:mod:`clumpcat.survey.fits_scan`, the default) and through
astropy alone (the scanner switched off), with all bands (photometry,
post-processing) and with r only (segmentation). The readers alternate
within each repeat, so a machine whose speed drifts slows both alike; the
table shows the median of ``--repeats``.

    python benchmarks/bench_read_cutout.py --n 100 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from clumpcat.survey import cutouts
from clumpcat.survey.simulate.survey import simulate_survey


def read_all(paths: list[Path], bands: tuple[str, ...] | None, scanner: bool) -> float:
    """Seconds to read every path, with or without the scanner."""
    original = cutouts.scan_images
    if not scanner:
        cutouts.scan_images = lambda _path: None
    try:
        start = time.perf_counter()
        for path in paths:
            cutouts.read_cutout(path, bands=bands)
        return time.perf_counter() - start
    finally:
        cutouts.scan_images = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="cutouts")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=20260101)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-read-") as tmp:
        folder = Path(tmp) / "cutouts"
        galaxies, _ = simulate_survey(seed=args.seed, first=0, count=args.n, cutout_dir=folder)
        paths = [folder / f"{objid}.fits" for objid in galaxies["objid"]]
        mib = sum(p.stat().st_size for p in paths) / len(paths) / 2**20
        cases = [(bands, scanner) for bands in (None, ("r",)) for scanner in (True, False)]
        seconds: dict[tuple, list[float]] = {case: [] for case in cases}
        for case in cases:
            read_all(paths[:5], *case)  # warm the page cache and lazy imports
        for _ in range(args.repeats):
            for case in cases:
                seconds[case].append(read_all(paths, *case))
    print(f"\n{args.n} cutouts ({mib:.2f} MiB each on average, 16 HDUs), median of {args.repeats} repeats")
    print(f"{'bands':8} {'reader':9} {'ms/cutout':>10} {'speed-up':>9}")
    for bands in (None, ("r",)):
        slow = statistics.median(seconds[(bands, False)]) / args.n * 1e3
        fast = statistics.median(seconds[(bands, True)]) / args.n * 1e3
        label = "all" if bands is None else ",".join(bands)
        print(f"{label:8} {'astropy':9} {slow:>10.2f}")
        print(f"{label:8} {'scanner':9} {fast:>10.2f} {slow / fast:>8.1f}x")


if __name__ == "__main__":
    main()
