"""Photometry speed per background estimator: galaxies per second of ``measure_galaxy``.

The hosts and injected clumps of ``bench_photometry.py`` (simulator hosts,
its isolated clumps, one PSF family), measured in g and r with each
background; the best of ``--repeat`` passes (the machine's other load only
slows a pass down). Issue 11: the joint background must not be slower than
the annulus-only quadratic.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_photometry_speed.py --galaxies 30

Measured (30 hosts, 48 clumps, Moffat 4.765, best of 5-8 passes, a shared
2-core machine whose load moves single figures by ~20%): before the
vectorised joint terms (main at fff69c1) quadratic 30-38 gal/s, joint
27-30; after, quadratic 44-55, joint 44-56 (5-7 ms per clump and band).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_photometry as bench  # noqa: E402

from clumpcat.photometry.apertures import PhotometrySettings, measure_galaxy  # noqa: E402
from clumpcat.survey.hostsegment import host_galaxy_mask  # noqa: E402
from clumpcat.survey.segments import DEFAULT_NSIGMA  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--galaxies", type=int, default=30)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--family", choices=list(bench.FAMILIES), default="moffat4.765")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--backgrounds", nargs="+", default=["quadratic", "joint"])
    args = parser.parse_args(argv)
    hosts = bench.make_hosts(
        args.seed, args.galaxies, argparse.Namespace(fluxes="simulator", per_galaxy=3, snr_min=4, snr_max=200)
    )
    cases = []
    for index, host in enumerate(hosts):
        cutout, truth = bench.inject(host, args.family, np.random.default_rng([args.seed, index]))
        mask = host_galaxy_mask(cutout.images["r"], cutout.fwhm_pixels("r"), nsigma=DEFAULT_NSIGMA)
        cases.append((cutout, truth[["objid", "x", "y"]], mask))
    n_clumps = sum(len(c[1]) for c in cases)
    print(f"{len(cases)} galaxies, {n_clumps} clumps, {args.family}, g and r")
    print(f"{'background':>12} {'gal/s':>8} {'ms/clump/band':>14}")
    for background in args.backgrounds:
        settings = PhotometrySettings(background=background)
        best = np.inf
        for _ in range(args.repeat + 1):  # the first pass warms the caches
            start = time.perf_counter()
            for cutout, clumps, mask in cases:
                measure_galaxy(cutout, clumps, bands=("g", "r"), host_mask=mask, settings=settings)
            best = min(best, time.perf_counter() - start)
        print(f"{background:>12} {len(cases) / best:8.1f} {1e3 * best / (2 * n_clumps):14.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
