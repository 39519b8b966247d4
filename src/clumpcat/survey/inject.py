"""``clumpcat inject``: synthetic clumps added to existing cutouts.

The injection-recovery test of Adams et al. (2022), used in App. F of the
paper: point-like clumps with a chosen u-band clump/host flux ratio are added
to real (or synthetic) cutouts on pixels of the host galaxy, then the
detector is run and the recovered fraction measured against the truth table
written here (same schema as ``clumpcat simulate``'s,
:data:`clumpcat.survey.simulate.truth.TRUTH_COLUMNS`).

Each band's clump is the cutout's own ``PSF_<BAND>`` image moved to the
clump's sub-pixel position, or, where the cutout carries no PSF image, a
pixel-integrated Moffat PSF with that band's ``PSF_FWHM`` from the file (the
nominal PSF of :mod:`clumpcat.survey.simulate.observe`), placed with the
cutout's WCS. The clump's own Poisson noise is not added and
the IVAR planes are copied unchanged: injected clumps are faint next to the
host, whose noise dominates.

Positions are in the *cutout* frame (FITS pixels, 0-based).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.stats import mad_std
from scipy import ndimage

from clumpcat.constants import APERTURE_RADIUS_FWHM, SDSS_BANDS
from clumpcat.errors import CutoutError, InputError
from clumpcat.ledger import LedgerEntry, write_status
from clumpcat.parallel import add_workers_option, ordered_map
from clumpcat.paths import objid_path
from clumpcat.survey.cutouts import Cutout, read_cutout, write_cutout
from clumpcat.survey.galaxies import read_galaxies
from clumpcat.survey.psf import encircled_energy
from clumpcat.survey.segments import (
    SegmentSet,
    add_segments_option,
    preload_segmentation,
    read_segments,
    segment_galaxy,
)
from clumpcat.survey.simulate import colours, observe
from clumpcat.survey.simulate.sources import LOG_FLUX_RATIO_RANGE
from clumpcat.survey.simulate.truth import DETECTION_SNR, TRUTH_COLUMNS, truth_frame
from clumpcat.tables import write_table

__all__ = [
    "inject_clumps",
    "injection_sites",
    "host_sources",
    "host_flux",
    "injection_rng",
    "inject_survey",
    "configure_parser",
    "run",
]

log = logging.getLogger(__name__)

#: Injected clumps keep at least this many r-band FWHM from each other.
MIN_SEPARATION_FWHM = 1.5
#: ... and from the image edge.
EDGE_FWHM = 3.0
#: ... and from the host's own compact sources (its clumps, stars), so that
#: their light falls neither into the aperture (1.125 FWHM) nor near it: the
#: truth of an injected clump does not hold the host's clumps, which would
#: otherwise bias its measured flux (issue 11).
HOST_SOURCE_FWHM = 2.0
#: Peak S/N of the PSF-matched filter above the smooth host at which a
#: compact source of the host is avoided.
HOST_SOURCE_SNR = 5.0
#: Colours of bands outside SDSS relative to z (y band of HSC): z - y.
_Z_MINUS_Y = (-0.1, 0.1)


def injection_rng(seed: int, objid: str) -> np.random.Generator:
    """Random generator of one galaxy: depends only on the seed and the objid."""
    digest = hashlib.sha256(str(objid).encode()).digest()
    words = [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]
    return np.random.default_rng([int(seed), *words])


def _reference_band(cutout: Cutout) -> str:
    """u for SDSS cutouts; the bluest band present otherwise (g for HSC)."""
    order = SDSS_BANDS + ("y",)
    present = [b for b in order if b in cutout.images]
    if not present:
        raise CutoutError(cutout.objid, f"no band of {', '.join(order)} to inject into")
    return present[0]


def _detection_band(cutout: Cutout) -> str:
    for band in ("r", "i", "g", "z"):
        if band in cutout.images:
            return band
    return next(iter(cutout.images))


def _host_mask(cutout: Cutout) -> np.ndarray:
    """The host segment at the cutout centre, for callers without a stored segment."""
    return segment_galaxy(cutout).mask


def host_flux(cutout: Cutout, band: str | None = None, mask: np.ndarray | None = None) -> float:
    """Host flux (nanomaggies) measured as the sum over the host segment.

    Used when the galaxy table has no ``host_mag_u``. ``band`` defaults to
    the reference band (u for SDSS).
    """
    band = band or _reference_band(cutout)
    mask = _host_mask(cutout) if mask is None else mask
    if not mask.any():
        raise CutoutError(cutout.objid, "no host segment found to measure the host flux")
    return float(np.nansum(cutout.images[band][mask]))


def host_sources(cutout: Cutout, band: str | None = None, nsigma: float = HOST_SOURCE_SNR) -> np.ndarray:
    """Compact sources already in the cutout (the host's clumps, stars): ``(k, 2)`` x, y.

    Local maxima of the PSF-matched filter (a Gaussian of the band's FWHM)
    of the image less its smooth host light (a median filter 4 FWHM wide),
    whose S/N against the pixel noise (IVAR, else the image's robust
    scatter) exceeds ``nsigma``.
    """
    band = band or _detection_band(cutout)
    fwhm = cutout.fwhm_pixels(band)
    image = np.asarray(cutout.images[band], dtype=np.float64)
    finite = np.isfinite(image)
    if not finite.any():
        return np.empty((0, 2))
    image = np.where(finite, image, np.median(image[finite]))
    size = max(3, int(np.ceil(4.0 * fwhm)) | 1)
    detail = image - ndimage.median_filter(image, size=size, mode="nearest")
    sigma = fwhm / 2.3548
    smooth = ndimage.gaussian_filter(detail, sigma, mode="nearest")
    var = _variance(cutout, band)
    var = np.where(np.isfinite(var), var, np.nan)
    # Noise of the filtered image: var * sum(k^2), k the unit-sum Gaussian kernel.
    noise = np.sqrt(np.nan_to_num(var, nan=np.inf) / (4.0 * np.pi * sigma**2))
    snr = np.where(noise > 0, smooth / noise, 0.0)
    peaks = (snr == ndimage.maximum_filter(snr, size=max(3, int(np.ceil(fwhm)) | 1))) & (snr > nsigma)
    iy, ix = np.nonzero(peaks & finite)
    return np.column_stack([ix, iy]).astype(float)


def injection_sites(
    cutout: Cutout, rng: np.random.Generator, n: int, mask: np.ndarray | None = None
) -> np.ndarray:
    """Positions ``(n, 2)`` (x, y; cutout frame) on pixels of the host galaxy.

    Sites are drawn uniformly over the host segment (r band, Section 4.3.2)
    inside the central half of the cutout (the training crop, Section 4.2),
    away from the edges, at least :data:`HOST_SOURCE_FWHM` r-band FWHM from
    the cutout's own compact sources (:func:`host_sources`) and
    :data:`MIN_SEPARATION_FWHM` from each other, where the segment allows
    (else the host-source condition is dropped, then the segment). Falls
    back to the central half when no segment is found.
    """
    ny, nx = cutout.shape
    band = _detection_band(cutout)
    fwhm = cutout.fwhm_pixels(band)
    mask = _host_mask(cutout) if mask is None else mask.copy()
    yy, xx = np.mgrid[0:ny, 0:nx]
    central = (np.abs(xx - (nx - 1) / 2) <= nx / 4) & (np.abs(yy - (ny - 1) / 2) <= ny / 4)
    edge = EDGE_FWHM * fwhm
    inside = (xx >= edge) & (xx <= nx - 1 - edge) & (yy >= edge) & (yy <= ny - 1 - edge)
    allowed = mask & central & inside
    clear = np.ones((ny, nx), dtype=bool)
    for sx, sy in host_sources(cutout, band):
        clear &= np.hypot(xx - sx, yy - sy) >= HOST_SOURCE_FWHM * fwhm
    if (allowed & clear).any():
        allowed &= clear
    else:
        log.debug("%s: no host pixels clear of the host's sources; injecting among them", cutout.objid)
    if not allowed.any():
        log.debug("%s: no host pixels in the central half; using the central half", cutout.objid)
        allowed = central & inside if (central & inside).any() else central
    iy, ix = np.nonzero(allowed)
    sites: list[tuple[float, float]] = []
    for _ in range(50 * max(n, 1)):
        if len(sites) == n:
            break
        k = int(rng.integers(len(ix)))
        x, y = ix[k] + rng.uniform(-0.5, 0.5), iy[k] + rng.uniform(-0.5, 0.5)
        if all(np.hypot(x - sx, y - sy) >= MIN_SEPARATION_FWHM * fwhm for sx, sy in sites):
            sites.append((float(x), float(y)))
    while len(sites) < n:  # crowded segment: accept overlaps rather than fail
        k = int(rng.integers(len(ix)))
        sites.append((float(ix[k] + rng.uniform(-0.5, 0.5)), float(iy[k] + rng.uniform(-0.5, 0.5))))
    return np.array(sites, dtype=float).reshape(n, 2)


def _band_factors(cutout: Cutout, colours_ugriz, ebv: float, rng) -> dict[str, float]:
    """Observed flux in each band of the cutout relative to the reference band."""
    sed = dict(zip(SDSS_BANDS, colours.colours_to_sed(colours_ugriz), strict=True))
    ext = dict(zip(SDSS_BANDS, observe.extinction_factors(ebv), strict=True))
    sed["y"] = sed["z"] * 10.0 ** (0.4 * rng.uniform(*_Z_MINUS_Y))
    ext["y"] = ext["z"]
    ref = _reference_band(cutout)
    return {b: sed[b] * ext[b] / (sed[ref] * ext[ref]) for b in cutout.images}


def _variance(cutout: Cutout, band: str) -> np.ndarray:
    ivar = cutout.ivar.get(band)
    if ivar is not None:
        with np.errstate(divide="ignore"):
            var = np.where(ivar > 0, 1.0 / np.where(ivar > 0, ivar, 1.0), np.inf)
        return var
    image = cutout.images[band]
    finite = image[np.isfinite(image)]
    rms = mad_std(finite)
    return np.full(image.shape, rms**2)


def inject_clumps(
    cutout: Cutout,
    host_flux_u: float,
    rng: np.random.Generator,
    n: int,
    log_ratio_range: tuple[float, float] = LOG_FLUX_RATIO_RANGE,
    ebv: float = 0.0,
    mask: np.ndarray | None = None,
) -> tuple[Cutout, pd.DataFrame]:
    """Add ``n`` synthetic point-like clumps to a cutout (Adams et al. 2022; App. F).

    Parameters
    ----------
    cutout : Cutout
        Any cutout of the contract (SDSS or HSC); not modified.
    host_flux_u : float
        Host flux in nanomaggies in the reference band: u for SDSS (the
        paper's flux ratio, Section 4.4.3), the bluest band present otherwise.
    rng : numpy.random.Generator
        Source of positions, flux ratios and colours.
    n : int
        Number of clumps.
    log_ratio_range : tuple of float
        log10 range of the reference-band clump/host flux ratio, drawn
        log-uniformly (default 10^-2.5 to 10^-0.5).
    ebv : float
        E(B-V) at the galaxy: the clump's colours are reddened with the
        Schlafly & Finkbeiner (2011) R_b (App. E).
    mask : ndarray of bool, optional
        The galaxy's host segment (cutout frame), where the clumps go;
        default: segmented here at the cutout centre.

    Returns
    -------
    cutout : Cutout
        A new cutout with the clumps added (IVAR planes copied unchanged).
    truth : pandas.DataFrame
        One row per clump, :data:`clumpcat.survey.simulate.truth.TRUTH_COLUMNS`;
        ``kind = 'injected_clump'``, ``label = 'normal'``; fluxes of bands
        absent from the cutout are NaN; ``flux_ratio_u`` is the
        reference-band ratio.

    Raises
    ------
    ValueError
        If ``n < 0``, ``host_flux_u`` is not positive or the range is reversed.
    """
    problems = []
    if n < 0:
        problems.append(f"n must be >= 0, got {n}")
    if not np.isfinite(host_flux_u) or host_flux_u <= 0:
        problems.append(f"host_flux_u must be a positive flux in nanomaggies, got {host_flux_u}")
    if log_ratio_range[0] > log_ratio_range[1]:
        problems.append(f"log_ratio_range must be (low, high), got {log_ratio_range}")
    if problems:
        raise ValueError(f"inject_clumps({cutout.objid}): " + "; ".join(problems))
    images = {b: np.array(im, dtype=np.float64) for b, im in cutout.images.items()}
    scale = cutout.pixel_scale
    sites = injection_sites(cutout, rng, n, mask)
    rows = []
    if n:
        ra, dec = cutout.wcs.wcs_pix2world(sites[:, 0], sites[:, 1], 0)
    for k, (x, y) in enumerate(sites):
        ratio = 10.0 ** rng.uniform(*log_ratio_range)
        factors = _band_factors(cutout, colours.clump_colours(rng), ebv, rng)
        fluxes = {b: ratio * host_flux_u * f for b, f in factors.items()}
        for band, flux in fluxes.items():
            # the cutout's own PSF where it carries one, else the nominal Moffat
            if band in cutout.psf:
                stamp, ix, iy = observe.shifted_psf(cutout.psf[band], x, y)
            else:
                stamp, ix, iy = observe.source_stamp(x, y, cutout.psf_fwhm[band], scale)
            observe.add_stamp(images[band], stamp, ix, iy, flux)
        snr = {}
        for band in ("g", "r"):
            if band in fluxes:
                radius = APERTURE_RADIUS_FWHM * cutout.fwhm_pixels(band)
                snr[band] = observe.aperture_snr(
                    fluxes[band],
                    x,
                    y,
                    cutout.fwhm_pixels(band),
                    _variance(cutout, band),
                    APERTURE_RADIUS_FWHM,
                    encircled_energy(cutout.psf[band], radius) if band in cutout.psf else None,
                )
        ref_band = "r" if "r" in cutout.images else _detection_band(cutout)
        rows.append(
            {
                "objid": cutout.objid,
                "source_id": k,
                "x": float(x),
                "y": float(y),
                "ra": float(ra[k]),
                "dec": float(dec[k]),
                "label": "normal",
                "kind": "injected_clump",
                **{f"flux_{b}": float(fluxes.get(b, np.nan)) for b in SDSS_BANDS},
                "flux_ratio_u": float(ratio),
                "fwhm_r_px": float(cutout.fwhm_pixels(ref_band)),
                "snr_g": float(snr.get("g", np.nan)),
                "snr_r": float(snr.get("r", np.nan)),
                "detectable": bool(snr and max(snr.values()) >= DETECTION_SNR),
            }
        )
    new_images = {b: images[b].astype(np.float32) for b in cutout.images}
    injected = replace(cutout, images=new_images, ivar={b: v.copy() for b, v in cutout.ivar.items()})
    return injected, truth_frame(rows)


def _host_flux_from_table(row: pd.Series, band: str) -> float | None:
    col = f"host_mag_{band}"
    if col in row.index and pd.notna(row[col]) and np.isfinite(float(row[col])):
        return float(observe.mag_to_nmgy(float(row[col])))
    return None


def inject_survey(
    galaxies: pd.DataFrame,
    cutout_dir: str | Path,
    out_dir: str | Path,
    seed: int,
    per_galaxy: int = 3,
    log_ratio_range: tuple[float, float] = LOG_FLUX_RATIO_RANGE,
    segments: SegmentSet | None = None,
    workers: int = 1,
) -> tuple[pd.DataFrame, list[LedgerEntry]]:
    """Inject clumps into every galaxy's cutout; a bad cutout is recorded, not fatal.

    Parameters
    ----------
    galaxies : pandas.DataFrame
        Validated galaxy table; ``host_mag_u`` (or ``host_mag_g`` for HSC)
        and ``ebv`` are used where present.
    cutout_dir, out_dir : str or Path
        Folders of the input and the injected ``{objid}.fits``.
    seed : int
        Each galaxy's generator derives from (seed, objid) only.
    per_galaxy : int
        Clumps per galaxy.
    log_ratio_range : tuple of float
    segments : SegmentSet, optional
        The input cutouts' stored host segments (``clumpcat segment``); a
        galaxy without one is recorded as failed. Default: each cutout is
        segmented here, at the galaxy's RA/Dec, with the default settings.
    workers : int
        Processes injecting the galaxies (the output does not depend on it:
        each galaxy's generator is its own).

    Returns
    -------
    truth : pandas.DataFrame
        Truth rows of every injected clump.
    failures : list of LedgerEntry
        Galaxies skipped, with the reason.
    """
    job = _InjectionJob(str(cutout_dir), str(out_dir), seed, per_galaxy, tuple(log_ratio_range), segments)
    if segments is None:
        preload_segmentation()
    rows = [row for _, row in galaxies.iterrows()]
    truths, failures = [], []
    for truth, failure in ordered_map(_inject_one, job, rows, workers=workers, desc="inject"):
        if failure is None:
            truths.append(truth)
        else:
            failures.append(failure)
    truth = truth_frame(pd.concat(truths, ignore_index=True)) if truths else truth_frame([])
    return truth, failures


@dataclass(frozen=True)
class _InjectionJob:
    """What every galaxy of an injection run shares."""

    cutout_dir: str
    out_dir: str
    seed: int
    per_galaxy: int
    log_ratio_range: tuple[float, float]
    segments: SegmentSet | None


def _inject_one(job: _InjectionJob, row: pd.Series) -> tuple[pd.DataFrame | None, LedgerEntry | None]:
    """One galaxy's clumps injected and its cutout written, or why it was skipped."""
    objid = str(row["objid"])
    try:
        cutout = read_cutout(objid_path(job.cutout_dir, objid, ".fits"))
        if job.segments is not None:
            mask = job.segments.mask_for(cutout)
        else:
            mask = segment_galaxy(cutout, float(row["ra"]), float(row["dec"])).mask
        band = _reference_band(cutout)
        flux = _host_flux_from_table(row, band)
        if flux is None:
            flux = host_flux(cutout, band, mask)
        ebv = float(row["ebv"]) if "ebv" in row.index and pd.notna(row["ebv"]) else 0.0
        injected, truth = inject_clumps(
            cutout, flux, injection_rng(job.seed, objid), job.per_galaxy, job.log_ratio_range, ebv, mask
        )
    except (CutoutError, ValueError) as exc:
        reason = exc.reason if isinstance(exc, CutoutError) else str(exc)
        log.warning("%s: skipped (%s)", objid, reason)
        return None, LedgerEntry(objid, "failed", "inject", reason)
    write_cutout(objid_path(job.out_dir, objid, ".fits"), injected)
    return truth, None


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add ``inject``'s options to its subparser."""
    parser.add_argument("--galaxies", type=Path, required=True, help="galaxy table (Parquet or CSV)")
    parser.add_argument("--cutouts", type=Path, required=True, help="folder of the input cutouts")
    parser.add_argument("--out-cutouts", type=Path, required=True, help="folder for the injected cutouts")
    parser.add_argument("--truth", type=Path, required=True, help="truth table of the injected clumps")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--per-galaxy", type=int, default=3, help="clumps per galaxy (default 3)")
    parser.add_argument(
        "--log-ratio-range",
        type=float,
        nargs=2,
        default=LOG_FLUX_RATIO_RANGE,
        metavar=("LOW", "HIGH"),
        help="log10 range of the u-band clump/host flux ratio (default -2.5 -0.5)",
    )
    parser.add_argument(
        "--status-out", type=Path, help="status table: one row per galaxy, failures with reasons"
    )
    add_segments_option(parser)
    add_workers_option(parser)


def run(args: argparse.Namespace) -> int:
    """Inject clumps into the table's cutouts and write the truth table."""
    problems = []
    if args.per_galaxy < 0:
        problems.append(f"--per-galaxy must be >= 0, got {args.per_galaxy}")
    if args.seed < 0:
        problems.append(f"--seed must be >= 0, got {args.seed}")
    low, high = args.log_ratio_range
    if low > high:
        problems.append(f"--log-ratio-range must be LOW HIGH, got {low} {high}")
    if Path(args.cutouts).resolve() == Path(args.out_cutouts).resolve():
        problems.append("--out-cutouts must differ from --cutouts (the originals are kept)")
    if problems:
        raise InputError("inject: " + "; ".join(problems))
    galaxies = read_galaxies(args.galaxies)
    segments = read_segments(args.segments) if args.segments else None
    truth, failures = inject_survey(
        galaxies,
        args.cutouts,
        args.out_cutouts,
        args.seed,
        args.per_galaxy,
        (low, high),
        segments,
        workers=args.workers,
    )
    write_table(truth, args.truth, TRUTH_COLUMNS, {"clumpcat_generator": "inject", "seed": str(args.seed)})
    if args.status_out is not None:
        write_status(args.status_out, galaxies["objid"].tolist(), failures)
    log.info(
        "injected %d clumps into %d galaxies (%d skipped)",
        len(truth),
        len(galaxies) - len(failures),
        len(failures),
    )
    return 0
