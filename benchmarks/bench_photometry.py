"""Benchmark and accuracy figures of the photometry stage on synthetic truth.

Builds ``--galaxies`` synthetic SDSS-like cutouts (exponential discs with
pixel-integrated Gaussian-PSF clumps of known ugriz flux, Galactic reddening
E(B-V) = ``--ebv``, noise drawn from the IVAR planes; the generator of
``tests/test_photometry.py``), writes them as cutout files, runs the shard
photometry (cutout reading, host mask, apertures, extinction) and prints:

- throughput in galaxies/s and peak memory;
- for isolated clumps with S/N > 20 in g and r: the median |measured/true - 1|
  and the pull standard deviation per band (issue 4, item 6);
- the median (extinction-corrected magnitude - intrinsic magnitude).

With ``--survey DIR`` it measures instead the output of ``clumpcat simulate``
(``DIR/galaxies.parquet``, ``DIR/truth.parquet``, ``DIR/cutouts/``): clumps at
their true positions, isolated = ``kind == 'clump'`` with no other truth source
within 4 x FWHM_r, S/N > 20 in g and r from the truth table.

The simulator's PSF is a beta = 4.765 Moffat, so measure its surveys with
``--aperture-correction moffat`` (the Gaussian correction is ~11% low there).
``--save FILE`` writes the merged photometry + truth table (Parquet, with
``selected`` and ``isolated`` columns) for further analysis.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_photometry.py --galaxies 300
    .venv/bin/python benchmarks/bench_photometry.py --galaxies 300 --background median
    clumpcat simulate --n 500 --seed 2026 --out /tmp/survey
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_photometry.py --survey /tmp/survey --aperture-correction moffat
"""

from __future__ import annotations

import argparse
import importlib.util
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from clumpcat.constants import SDSS_BANDS
from clumpcat.photometry.apertures import BACKGROUND_METHODS, PhotometrySettings, photometry_shard
from clumpcat.survey.cutouts import write_cutout

HERE = Path(__file__).resolve().parent


def _synthetic_module():
    path = HERE.parent / "tests" / "test_photometry.py"
    spec = importlib.util.spec_from_file_location("_bench_phot_synth", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--galaxies", type=int, default=200, help="number of synthetic galaxies")
    parser.add_argument("--clumps", type=int, default=3, help="clumps per galaxy")
    parser.add_argument("--ebv", type=float, default=0.05, help="E(B-V) of every galaxy")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--background", choices=BACKGROUND_METHODS, default="plane")
    parser.add_argument("--aperture-correction", choices=("gaussian", "moffat"), default="gaussian")
    parser.add_argument("--no-host-mask", action="store_true", help="skip the photutils host segmentation")
    parser.add_argument(
        "--no-structure-error", action="store_true", help="leave the host-structure term out of the errors"
    )
    parser.add_argument("--survey", type=Path, help="measure a `clumpcat simulate` output folder instead")
    parser.add_argument("--save", type=Path, help="write the merged photometry + truth table (Parquet) here")
    args = parser.parse_args(argv)
    if args.survey is not None:
        return _survey(args)

    synth = _synthetic_module()
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        gal_rows, clump_rows, truth_rows = [], [], []
        for k in range(args.galaxies):
            objid = f"syn{k:06d}"
            cutout, truth, _host = synth.make_synthetic_galaxy(rng, objid, n_clumps=args.clumps, ebv=args.ebv)
            write_cutout(tmp / f"{objid}.fits", cutout)
            gal_rows.append({"objid": objid, "ra": 180.0, "dec": 20.0, "ebv": args.ebv, "host_mag_u": 17.6})
            clump_rows.append(synth.clumps_from_truth(truth))
            truth_rows.append(truth)
        galaxies = pd.DataFrame(gal_rows)
        clumps = pd.concat(clump_rows, ignore_index=True)
        truth = pd.concat(truth_rows, ignore_index=True)
        settings = PhotometrySettings(
            background=args.background,
            correction=args.aperture_correction,
            structure_error=not args.no_structure_error,
        )
        start = time.perf_counter()
        phot, failures = photometry_shard(
            galaxies,
            clumps,
            tmp,
            galaxies["objid"],
            settings=settings,
            ebv_source="table",
            host_mask_fn=None if args.no_host_mask else "default",
        )
        elapsed = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(
        f"photometry: {args.galaxies} galaxies, {len(phot)} clumps in {elapsed:.2f} s -> "
        f"{args.galaxies / elapsed:.1f} galaxies/s; peak RSS {peak_mb:.0f} MB; failures {len(failures)}"
    )
    data = phot.merge(truth.drop(columns=["ra", "dec"]), on=["objid", "x", "y"], how="inner")
    snr = {b: data[f"true_flux_{b}"] / data[f"flux_nmgy_err_{b}"] for b in SDSS_BANDS}
    clean = (data["phot_flag_g"] == 0) & (data["phot_flag_r"] == 0)
    sel = (snr["g"] > 20) & (snr["r"] > 20) & clean
    print(
        f"background estimator: {args.background}, {args.aperture_correction} correction; "
        f"isolated clumps with S/N > 20 in g and r: {int(sel.sum())}"
    )
    _report(data, sel, "true_flux_{b}", "true_mag0_{b}")
    return 0


def mad_std(values) -> float:
    """Robust standard deviation, 1.4826 x the median absolute deviation."""
    values = np.asarray(values, dtype=float)
    return float(1.4826 * np.nanmedian(np.abs(values - np.nanmedian(values))))


def _report(data: pd.DataFrame, sel: pd.Series, flux_true: str, mag_intrinsic: str | None) -> None:
    print("band  median|meas/true-1|  pull_mean  pull_std  pull_std_MAD  median(mag_corr - mag_intrinsic)")
    for b in SDSS_BANDS:
        true = data.loc[sel, flux_true.format(b=b)]
        meas = data.loc[sel, f"flux_nmgy_{b}"]
        ratio = meas / true
        pull = (meas - true) / data.loc[sel, f"flux_nmgy_err_{b}"]
        if mag_intrinsic is None:
            dmag = np.nan
        else:
            dmag = np.nanmedian(
                data.loc[sel, f"clump_mag_corr_{b}"] - data.loc[sel, mag_intrinsic.format(b=b)]
            )
        print(
            f"{b:>4}  {np.nanmedian(np.abs(ratio - 1)):19.4f}  {np.nanmean(pull):9.2f}  "
            f"{np.nanstd(pull):8.2f}  {mad_std(pull):12.2f}  {dmag:+.4f}"
        )


def _survey(args) -> int:
    from clumpcat.constants import EXTINCTION_R
    from clumpcat.survey.galaxies import read_galaxies

    galaxies = read_galaxies(args.survey / "galaxies.parquet")
    truth = pd.read_parquet(args.survey / "truth.parquet")
    truth["objid"] = truth["objid"].astype(str)
    clumps = truth[["objid", "x", "y", "ra", "dec", "label", "source_id"]].copy()
    clumps["score"] = 1.0
    for c, off in (("box_x0", -8), ("box_y0", -8), ("box_x1", 8), ("box_y1", 8)):
        clumps[c] = clumps["x" if c.startswith("box_x") else "y"] + off
    start = time.perf_counter()
    phot, failures = photometry_shard(
        galaxies,
        clumps,
        args.survey / "cutouts",
        galaxies["objid"],
        settings=PhotometrySettings(
            background=args.background,
            correction=args.aperture_correction,
            structure_error=not args.no_structure_error,
        ),
        ebv_source="table",
        host_mask_fn=None if args.no_host_mask else "default",
    )
    elapsed = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(
        f"photometry: {len(galaxies)} galaxies, {len(phot)} sources in {elapsed:.2f} s -> "
        f"{len(galaxies) / elapsed:.1f} galaxies/s; peak RSS {peak_mb:.0f} MB; failures {len(failures)}"
    )
    data = phot.merge(
        truth.drop(columns=["x", "y", "ra", "dec", "label"]).rename(columns={"fwhm_r_px": "src_fwhm_r_px"}),
        on=["objid", "source_id"],
        how="inner",
    )
    # Isolated: no other truth source within 4 x FWHM_r.
    isolated = np.ones(len(data), dtype=bool)
    for objid, group in truth.groupby("objid"):
        rows = np.flatnonzero(data["objid"].to_numpy() == objid)
        xy = group[["x", "y"]].to_numpy()
        for r in rows:
            d = np.hypot(xy[:, 0] - data["x"].iloc[r], xy[:, 1] - data["y"].iloc[r])
            isolated[r] = np.sum(d < 4.0 * data["psf_fwhm_px_r"].iloc[r]) <= 1
    ebv = galaxies.set_index("objid")["ebv"].reindex(data["objid"]).to_numpy()
    for b in SDSS_BANDS:  # intrinsic magnitudes of the truth (fluxes are reddened)
        data[f"mag0_{b}"] = 22.5 - 2.5 * np.log10(data[f"flux_{b}"]) - EXTINCTION_R[b] * ebv
    clean = (data["phot_flag_g"] == 0) & (data["phot_flag_r"] == 0)
    sel = (data["kind"] == "clump") & isolated & (data["snr_g"] > 20) & (data["snr_r"] > 20) & clean
    print(
        f"background estimator: {args.background}, {args.aperture_correction} correction; isolated clumps with S/N > 20 in g and r: {int(sel.sum())} "
        f"(of {int((data['kind'] == 'clump').sum())} clumps)"
    )
    _report(data, sel, "flux_{b}", "mag0_{b}")
    if args.save is not None:
        data.assign(selected=sel.to_numpy(), isolated=isolated).to_parquet(args.save)
    return 0


if __name__ == "__main__":
    sys.exit(main())
