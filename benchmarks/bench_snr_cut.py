"""What a detection S/N cut keeps of real clumps and rejects of empty sky, per sky noise.

Chooses the default of ``postprocess.min_snr`` by measurement (issue 10).
Galaxies of the project's simulator are rendered once without noise, then
observed at sky noise x1, x1.6 and x2.2 of nominal SDSS (the per-band
``observe.sky_sigma`` scaled here; the source and host photon noise are
unchanged), with the matching IVAR planes. In each galaxy's host segment
(:func:`clumpcat.survey.segments.segment_galaxy`, the configured 0.25 sigma)
the S/N of :mod:`clumpcat.postprocess.significance` is measured at

* every true clump with u-band flux ratio >= 3% (the paper's GSFC cut) on
  the segment, and
* random "sky" positions on the segment at least 2 r-band FWHM from every
  truth source, background galaxy and the galaxy's centre: where a false
  candidate on empty sky would sit ("faint": where the noiseless host is
  below the sky sigma per pixel, the outer disc where the bright-sky false
  candidates of issue 10 lay).

Prints, per noise tier and cut, the fraction of clumps kept and of sky
positions rejected, for the quadrature combination of the g, r, i S/N (the
pipeline's ``detection_snr``) and for the maximum over bands.

    .venv/bin/python benchmarks/bench_snr_cut.py [--galaxies 60] [--sky-per-galaxy 20]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np

from clumpcat.postprocess.hostmask import in_mask
from clumpcat.postprocess.significance import SNR_BANDS, candidate_snr
from clumpcat.survey.segments import segment_galaxy
from clumpcat.survey.simulate import observe
from clumpcat.survey.simulate.survey import draw_galaxy, render_galaxy

TIERS = (1.0, 1.6, 2.2)
CUTS = (0.0, 1.0, 2.0, 3.0, 4.0, 5.0)
#: The paper's GSFC cut on the u-band clump/host flux ratio.
MIN_FLUX_RATIO = 0.03
#: Sky positions keep this many r-band FWHM from any source and the centre.
CLEAR_FWHM = 2.0


def observe_at(rendered, scale: float, rng: np.random.Generator):
    """The noiseless cutout observed with the sky noise scaled by ``scale``."""
    images, ivars = {}, {}
    for band, model in rendered.model_images.items():
        variance = observe.noise_variance(model, band) + (scale**2 - 1.0) * observe.sky_sigma(band) ** 2
        images[band] = (model + np.sqrt(variance) * rng.standard_normal(model.shape)).astype(np.float32)
        ivars[band] = (1.0 / variance).astype(np.float32)
    return replace(rendered.cutout, images=images, ivar=ivars)


def sky_positions(model, rendered, mask: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``n`` random positions (x, y) on the mask, clear of every source and the centre."""
    fwhm = rendered.cutout.fwhm_pixels("r")
    ny, nx = mask.shape
    avoid = [(s.x, s.y) for s in model.sources] + [(b.x, b.y) for b in model.background]
    avoid.append(((nx - 1) / 2.0, (ny - 1) / 2.0))
    yy, xx = np.nonzero(mask)
    if yy.size == 0:
        return np.zeros((0, 2))
    pick = rng.choice(yy.size, size=min(yy.size, 20 * n), replace=False)
    xy = np.column_stack([xx[pick], yy[pick]]).astype(float)
    clear = np.ones(len(xy), dtype=bool)
    for ax, ay in avoid:
        clear &= np.hypot(xy[:, 0] - ax, xy[:, 1] - ay) >= CLEAR_FWHM * fwhm
    return xy[clear][:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--galaxies", type=int, default=60)
    parser.add_argument("--sky-per-galaxy", type=int, default=20)
    parser.add_argument("--seed", type=int, default=101)
    args = parser.parse_args()
    start = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    rendered = []
    for index in range(args.galaxies):
        model = draw_galaxy(args.seed, index)
        rendered.append((model, render_galaxy(model, noise=False)))
    results = {}
    for scale in TIERS:
        clumps, sky, faint = [], [], []
        for model, galaxy in rendered:
            cutout = observe_at(galaxy, scale, rng)
            mask = segment_galaxy(cutout, model.ra, model.dec).mask
            truth = galaxy.truth
            real = truth[(truth["label"] == "normal") & (truth["flux_ratio_u"] >= MIN_FLUX_RATIO)]
            real = real[in_mask(real["x"].to_numpy(), real["y"].to_numpy(), mask)]
            if len(real):
                clumps.append(candidate_snr(cutout, real["x"].to_numpy(), real["y"].to_numpy()))
            xy = sky_positions(model, galaxy, mask, args.sky_per_galaxy, rng)
            if len(xy):
                sky.append(candidate_snr(cutout, xy[:, 0], xy[:, 1]))
                host_r = galaxy.model_images["r"][xy[:, 1].astype(int), xy[:, 0].astype(int)]
                faint.append(host_r < scale * observe.sky_sigma("r"))
        results[scale] = (_stack(clumps), _stack(sky), np.concatenate(faint))

    print(
        f"{args.galaxies} galaxies; S/N in {', '.join(SNR_BANDS)}; clumps: u-band flux ratio >= 3% on the segment"
    )
    for combine in ("quadrature", "max"):
        print(f"\ndetection S/N = {combine} of the per-band S/N")
        print(
            f"{'sky':>5} {'cut':>5} {'n_clumps':>8} {'kept':>7} {'n_sky':>6} {'rejected':>9} {'faint':>6} {'rejected':>9}"
        )
        for scale, (clumps, sky, faint) in results.items():
            c, s = _combined(clumps, combine), _combined(sky, combine)
            for cut in CUTS:
                kept = np.mean(~(c < cut))
                rejected = np.mean(s < cut)
                rejected_faint = np.mean(s[faint] < cut) if faint.any() else np.nan
                print(
                    f"x{scale:<4.1f} {cut:5.1f} {c.size:8d} {kept:7.3f} {s.size:6d} {rejected:9.3f} "
                    f"{int(faint.sum()):6d} {rejected_faint:9.3f}"
                )
        print(
            "median S/N: "
            + "; ".join(
                f"x{scale:.1f} clumps {np.nanmedian(_combined(cl, combine)):.1f}, sky {np.nanmedian(_combined(sk, combine)):.2f}"
                for scale, (cl, sk, _f) in results.items()
            )
        )
    print(f"\n{time.perf_counter() - start:.0f} s")


def _stack(parts: list[dict]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}


def _combined(snr: dict[str, np.ndarray], combine: str) -> np.ndarray:
    if combine == "quadrature":
        return snr["detection_snr"]
    per_band = np.array([snr[f"snr_{b}"] for b in SNR_BANDS])
    return np.nanmax(per_band, axis=0)


if __name__ == "__main__":
    main()
