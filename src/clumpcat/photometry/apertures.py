"""ugriz aperture photometry of clump candidates (App. E).

For each clump and band:

1. a circular aperture of radius ``APERTURE_RADIUS_FWHM`` x the band's PSF
   FWHM (pixels) at the clump centre, refined by a PSF fit in the r band
   (``recentre``, :mod:`clumpcat.photometry.centroid`) and the same in
   every band;
2. the background -- the host galaxy's diffuse light -- is estimated from the
   pixels in an annulus of ``ANNULUS_FWHM`` = 1.5-2.5 x FWHM, after masking
   the area outside the host galaxy and discs of 1.5 x FWHM around the other
   clumps. With ``background='joint'`` (the default ``auto`` where the
   cutout carries the band's PSF image) a quadratic host surface is
   fitted to the annulus and the aperture's own pixels together with the
   clump's PSF (:func:`_joint_fit`), and the surface is integrated over the
   aperture and subtracted; the aperture's pixels pin the surface down where
   the annulus alone would extrapolate it. The other estimators use the
   annulus alone (a 3-sigma-clipped quadratic surface averaged over the
   aperture, a plane, a mean, a radial fit, or the paper's median), with the
   clump's own PSF wing removed from the annulus (iterated with the flux: a
   median or a clipped fit is not linear), times the aperture area
   (``auto`` without a PSF image: the quadratic surface). See
   :class:`PhotometrySettings` for why;
3. the result is divided by the PSF's encircled energy ``EE`` within the
   aperture as measured -- at the clump's sub-pixel position, bad pixels
   left out -- of the cutout's ``PSF_<BAND>`` image where there is one, else
   of the analytic ``correction`` profile (Gaussian, the paper's choice, or
   Moffat) drawn on the pixel grid with the band's FWHM
   (:mod:`clumpcat.photometry.aperture_correction`); ``apcorr_source_<b>``
   records which;
4. nanomaggies are converted to Jansky (1 nMgy = 3.631e-6 Jy) and to AB
   magnitudes; Galactic extinction ``A_b = R_b E(B-V)`` is subtracted
   (:mod:`clumpcat.photometry.extinction`);
5. the u-band clump/host flux ratio is formed with the host flux from the
   galaxy table's ``host_mag_u``, and flagged at 3% and 8%.

Errors: with ``IVAR_<BAND>`` planes, the aperture error is
``sqrt(sum 1/ivar)`` over the aperture, times the cutout's ``NOISECOR``
where it has one; without, the per-pixel noise is the robust standard
deviation (1.4826 x MAD) of the annulus pixels. The error of the background
estimate (the least-squares error of the plane, mean or radial fit;
``sqrt(pi/2) sigma / sqrt(N)`` for the median) times the aperture area is
added in quadrature. With IVAR planes, so that the pixel noise is known, the
host light that the background fit cannot follow is added too, measured on
the annulus itself (:func:`_structure_variance`): the curvature a plane
misses and the small-scale structure (arms, texture) about a quadratic
surface, the latter as a correlated field whose correlation length is
measured from the residuals (at least the PSF's), so that a structured
annulus -- few independent pixels -- gives an honest error and a smooth one
adds nothing. These noise terms are divided by ``EE - A h.p`` (the wing
model moves with the flux). The aperture correction's own error is added:
the PSF width (``psf_width_err_image`` with a PSF image, the larger
``psf_width_err_analytic`` with the fallback) and the photon-limited centroid
propagated through ``EE``, and, without a PSF image, the spread of plausible
profiles.
Source photon noise is included only as far as the IVAR planes include it.

Non-positive fluxes: the flux and its error are kept as measured (negative
values included, so that stacks stay unbiased), the magnitude and its error
are NaN, the ``nonpositive_flux`` flag bit is set, and
``clump_mag_lim_<band>`` gives the 5-sigma limiting magnitude
``22.5 - 2.5 log10(5 sigma)``, to be used as an upper limit.

Coordinates are in the *cutout* frame: 0-based FITS pixels, ``[y, x]``
indexing, pixel centres at integer coordinates.
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from photutils.aperture import CircularAnnulus, CircularAperture

from clumpcat.constants import (
    ANNULUS_FWHM,
    APERTURE_RADIUS_FWHM,
    FLUX_RATIO_BAND,
    GSFC_FLUX_RATIO_THRESHOLDS,
    NANOMAGGY_JY,
    NANOMAGGY_ZEROPOINT,
    SDSS_BANDS,
)
from clumpcat.errors import ClumpcatError, CutoutError, InputError
from clumpcat.ledger import LedgerEntry, pending, read_status, write_status
from clumpcat.parallel import add_workers_option, ordered_map
from clumpcat.paths import objid_path
from clumpcat.photometry.aperture_correction import (
    MOFFAT_BETA,
    PROFILES,
    aperture_correction,
    band_psf,
    kept_fraction_errors,
    psf_light,
    shifted_psf,
    stamp_gradient,
    stamp_mask,
)
from clumpcat.photometry.centroid import refine_centres
from clumpcat.photometry.extinction import (
    EBV_SOURCES,
    clump_ebv,
    extinction_mags,
    resolve_ebv_source,
    survey_for_bands,
)
from clumpcat.survey.cutouts import Cutout, read_cutout
from clumpcat.survey.galaxies import read_galaxies
from clumpcat.survey.psf import encircled_energy as image_encircled_energy
from clumpcat.survey.segments import (
    DEFAULT_NSIGMA,
    SegmentSet,
    add_segments_option,
    preload_segmentation,
    read_segments,
    segment_shard,
)
from clumpcat.tables import ColumnDoc, read_table, write_table

__all__ = [
    "PHOT_FLAGS",
    "BACKGROUND_METHODS",
    "PhotometrySettings",
    "CLUMP_INPUT_COLUMNS",
    "photometry_columns",
    "photometry_metadata",
    "measure_band",
    "measure_galaxy",
    "add_magnitudes",
    "photometry_shard",
    "configure_parser",
    "run",
]

log = logging.getLogger(__name__)

#: Named bits of ``phot_flag_<band>`` (0 = clean measurement).
PHOT_FLAGS: dict[str, int] = {
    "off_image": 1,  # aperture or annulus not fully inside the cutout
    "bad_pixels": 2,  # NaN or ivar <= 0 pixels in the aperture: left out, the PSF's EE without them
    "host_mask_dropped": 4,  # too few annulus pixels on the host: annulus used without host mask
    "no_background": 8,  # no usable annulus pixels: flux NaN
    "nonpositive_flux": 16,  # flux <= 0: magnitude NaN, see clump_mag_lim
    "band_missing": 32,  # band absent from the cutout
}

#: Background estimators (App. E uses the annulus median; ``joint`` fits the
#: host surface with the clump, see :class:`PhotometrySettings`).
BACKGROUND_METHODS: tuple[str, ...] = ("auto", "median", "mean", "plane", "radial", "quadratic", "joint")

#: Columns the photometry stage needs in the clumps table (postprocess output).
CLUMP_INPUT_COLUMNS: tuple[str, ...] = ("objid", "x", "y", "ra", "dec", "score", "label")

#: Minimum number of annulus pixels for a background median.
_MIN_BKG_PIXELS = 5
#: Most passes of flux <-> background-without-the-clump's-wing; each pass
#: shrinks the error by A h.p / EE (< 0.05 for the App. E radii).
_WING_ITERATIONS = 8
#: Significance (in sigma of the pixel noise) at which host structure in the
#: annulus enters the error.
_STRUCTURE_NSIGMA = 2.0
#: 1.4826 x MAD estimates the standard deviation of Gaussian noise.
_MAD_TO_STD = 1.4826
#: Standard error of a median relative to a mean, for Gaussian noise.
_MEDIAN_ERR = np.sqrt(np.pi / 2.0)
#: FWHM / sigma of a Gaussian.
_FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
#: 2.5 / ln(10): magnitude error per fractional flux error.
_MAG_PER_FRAC = 2.5 / np.log(10.0)
#: Signal-to-noise of ``clump_mag_lim_<band>``.
_LIMIT_NSIGMA = 5.0


@dataclass(frozen=True)
class PhotometrySettings:
    """Settings of the clump photometry (App. E defaults).

    Attributes
    ----------
    radius_fwhm : float
        Aperture radius in units of the band FWHM (App. E, code: 1.125).
    annulus_fwhm : tuple of float
        Inner and outer background annulus radii in FWHM (App. E: 1.5, 2.5).
    clump_mask_fwhm : float
        Radius, in FWHM, of the disc masked around every other clump in the
        annulus. Default 1.5, the annulus' inner radius: beyond it a
        Gaussian PSF holds 0.2% of its flux (3% beyond the aperture radius),
        so a bright neighbour's wings do not lift the background.
    correction : {'gaussian', 'moffat'}
        Analytic PSF profile of the aperture correction where the cutout has
        no PSF image of the band (App. E: Gaussian).
    beta : float
        Moffat index, for ``correction='moffat'``.
    background : {'auto', 'joint', 'quadratic', 'plane', 'mean', 'median', 'radial'}
        Background estimator (default ``auto``: ``joint`` where the band's
        PSF image is at hand, ``quadratic`` with the analytic fallback,
        :meth:`background_for`). ``joint`` (:func:`_joint_fit`): a
        quadratic host surface fitted together with the clump's PSF to the
        annulus and aperture pixels, integrated over the aperture. The
        others fit the annulus alone (:func:`_background`): a
        3-sigma-clipped quadratic surface averaged over the aperture, a
        clipped plane evaluated at the clump, a clipped mean, the median
        (App. E) or a radial fit. The default departs from App. E on
        purpose, measured with benchmarks/bench_photometry.py (point sources
        injected into the simulator's hosts, four PSF families): hosts are
        convex under most clumps, so the annulus over-estimates the light
        under the clump: fluxes read 0.5-3% low with a plane fit and 1-3%
        low with the median (whose skewed pixel distribution also doubles
        the pull scatter on exponential discs), within 1% with a quadratic
        surface. A quadratic from the annulus alone must extrapolate its
        curvature inward: its noise is ~1.9x the aperture's own for a
        Gaussian PSF, and it made the median |error| of S/N > 20 clumps
        2.3-3.7% (120 hosts, S/N of the aperture flux). Fitted jointly with
        the clump it has ~0.4x: median |error| 1.2-1.9% with centres 0.5 px
        off and refined (:attr:`recentre`), biases within 0.8%, pull std
        0.89-1.22 at S/N > 5 (60 hosts). The price: the surface takes up
        part of any mismatch of the PSF's core, so the flux moves ~1.2% per
        1% error of the PSF width (the annulus-only quadratic: ~0.3%), and
        the width uncertainty (``psf_width_err_image``) enters the errors
        4x more. With the analytic fallback the shape is a guess, which the
        joint fit turns into a larger bias (+20% on a Gaussian PSF against
        +13% for the annulus-only quadratic; both flagged by
        ``apcorr_source_<b>``), hence ``quadratic`` there. A joint *plane*
        is as robust to the width as the annulus, but 1-2% low on curved
        hosts.
    structure_error : bool
        Add the host-structure term to the errors (with IVAR planes only;
        :func:`_structure_variance`). Without it the pulls on structured
        hosts of the synthetic survey have a standard deviation of 2-2.7.
    min_bkg_fraction : float
        If fewer than this fraction of the annulus pixels survive the host
        and clump masks, the host mask is dropped for that clump (flag bit
        ``host_mask_dropped``).
    psf_width_err_image : float
        Fractional 1-sigma uncertainty of the PSF's width at the clump where
        the aperture correction uses the cutout's own ``PSF_<BAND>`` image
        (``apcorr_source_<b> = 'psf'``), propagated into the flux error
        (through the encircled energy, or through the joint fit's pixel
        weights). Default 0.003, the error of a survey's PSF model at the
        galaxy: HSC's PSF models have a fractional size residual of ~0.003
        in ``T = Ixx + Iyy`` (Mandelbaum et al. 2018, PASJ 70, S25, the
        first-year shear catalogue; requirement 0.004), ~0.15% in width;
        SDSS's KL PSF is fitted to second order in position on each frame
        and checked against large-aperture photometry of bright stars
        (Stoughton et al. 2002, AJ 123, 485, Sect. 4.3), its PSF magnitudes'
        seeing dependence below 0.02 mag up to 2" seeing (SDSS DR7
        algorithms, psfMag). 0.3% is twice HSC's, room for the PSF's change
        between the cutout centre, where the image is evaluated, and a clump
        ~10" away. With 1% the joint fit's pulls at S/N > 20 on surveys
        whose PSF images are exact fell to 0.62-0.77 (the term is 4x the
        aperture's there; 0.78-0.92 with 0.5%), below the 0.8 the errors are
        held to; a survey whose PSF model is known to be worse sets it higher.
    psf_width_err_analytic : float
        The same where the cutout has no PSF image and the analytic
        ``correction`` profile is drawn at the header's ``PSF_FWHM``
        (``apcorr_source_<b>`` the profile's name). Default 0.02, twice the
        image's: the width is then one number per band, not a model at the
        galaxy, and the delivered FWHM varies by up to 15% from one side of
        an SDSS CCD to the other (Stoughton et al. 2002, Sect. 4.3; a
        uniform 15% spread is 4% rms on the worst chips, about half that on
        a typical one). The profile's shape error is added on top
        (``BandPsf.shape_err``).
    recentre : bool
        Refine each clump's centre before the apertures are placed: a PSF fit
        in the reference band (r where present), the same centre then used in
        every band (:func:`clumpcat.photometry.centroid.refine_centres`).
        The detector's centres are off by a fraction of a FWHM, which reads
        a point source low; a clump below S/N 5 in the reference band, or
        whose centre would move by more than one FWHM (the merge radius), keeps the
        detector's centre. ``x_det``, ``y_det`` keep the detector's and
        ``recentred`` says which moved.
    max_masked_ee : float
        Bad pixels inside the aperture are left out and the PSF's encircled
        energy is taken without them; if they hold more than this fraction of
        the aperture's PSF light the flux is NaN (flag ``bad_pixels`` either way).
    """

    radius_fwhm: float = APERTURE_RADIUS_FWHM
    annulus_fwhm: tuple[float, float] = ANNULUS_FWHM
    clump_mask_fwhm: float = ANNULUS_FWHM[0]
    correction: str = "gaussian"
    beta: float = MOFFAT_BETA
    min_bkg_fraction: float = 0.25
    background: str = "auto"
    structure_error: bool = True
    psf_width_err_image: float = 0.003
    psf_width_err_analytic: float = 0.02
    recentre: bool = True
    max_masked_ee: float = 0.2

    def __post_init__(self):
        problems = []
        if not self.radius_fwhm > 0:
            problems.append(f"aperture radius must be > 0 FWHM, got {self.radius_fwhm}")
        r_in, r_out = self.annulus_fwhm
        if not (self.radius_fwhm <= r_in < r_out):
            problems.append(
                f"annulus must satisfy aperture radius <= inner < outer, got "
                f"{self.radius_fwhm}, {r_in}, {r_out} FWHM"
            )
        if self.correction not in PROFILES:
            problems.append(
                f"--aperture-correction must be one of {', '.join(PROFILES)}, got {self.correction!r}"
            )
        if self.correction == "moffat" and not self.beta > 1:
            problems.append(f"--moffat-beta must be > 1, got {self.beta}")
        if self.background not in BACKGROUND_METHODS:
            problems.append(
                f"--background must be one of {', '.join(BACKGROUND_METHODS)}, got {self.background!r}"
            )
        if not 0 <= self.min_bkg_fraction <= 1:
            problems.append(f"min_bkg_fraction must be in [0, 1], got {self.min_bkg_fraction}")
        for name in ("psf_width_err_image", "psf_width_err_analytic"):
            if not 0 <= getattr(self, name) < 1:
                problems.append(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0 <= self.max_masked_ee < 1:
            problems.append(f"max_masked_ee must be in [0, 1), got {self.max_masked_ee}")
        if problems:
            raise InputError("photometry settings: " + "; ".join(problems))

    def background_for(self, source: str) -> str:
        """The background estimator used with an aperture correction from ``source``.

        ``auto`` takes ``joint`` where the cutout carries the band's PSF image
        (``source == 'psf'``): the joint fit leans on the PSF's shape inside
        the aperture, and with the true shape it halves the annulus-only
        quadratic's scatter (median error 1.3-2.3% against 2.3-3.7% at
        S/N > 20, benchmarks/bench_photometry.py). With an analytic fallback
        the shape is a guess, which the joint fit turns into a bias (+10 to
        +20% where the quadratic gives +2 to +14%), so ``auto`` keeps the
        quadratic there.
        """
        if self.background != "auto":
            return self.background
        return "joint" if source == "psf" else "quadratic"

    def width_err(self, source: str) -> float:
        """Fractional PSF-width uncertainty for an aperture correction from ``source``.

        ``'psf'`` (the cutout's PSF image): ``psf_width_err_image``; an
        analytic profile name: ``psf_width_err_analytic``.
        """
        return self.psf_width_err_image if source == "psf" else self.psf_width_err_analytic

    @property
    def aperture_correction(self) -> float:
        """Analytic annulus-aware correction of the fallback profile, continuous PSF.

        It restores the PSF light outside the aperture and the PSF light in
        the annulus that a mean background removes
        (:func:`clumpcat.photometry.aperture_correction.aperture_correction`);
        the measurement itself works on the pixelated PSF (:func:`measure_band`).
        """
        return float(aperture_correction(self.radius_fwhm, self.correction, self.beta, self.annulus_fwhm))


def photometry_columns(bands: Sequence[str] = SDSS_BANDS) -> dict[str, ColumnDoc]:
    """Units and descriptions of ``photometry.parquet``, in column order.

    Parameters
    ----------
    bands : sequence of str
        Bands measured.

    Returns
    -------
    dict of str to (unit, description)
    """
    cols: dict[str, ColumnDoc] = {
        "objid": ("", "Galaxy identifier"),
        "x": ("pix", "Clump centre x (the apertures' centre), cutout frame, 0-based"),
        "y": ("pix", "Clump centre y (the apertures' centre), cutout frame, 0-based"),
        "ra": ("deg", "Right ascension of the clump centre (ICRS)"),
        "dec": ("deg", "Declination of the clump centre (ICRS)"),
        "x_det": ("pix", "Clump centre x from the detector (after the merge), cutout frame, 0-based"),
        "y_det": ("pix", "Clump centre y from the detector (after the merge), cutout frame, 0-based"),
        "recentred": (
            "",
            "The centre was refined by a PSF fit in the reference band (x, y differ from x_det, y_det)",
        ),
        "box_x0": ("pix", "Box left edge, cutout frame, 0-based (XYXY)"),
        "box_y0": ("pix", "Box bottom edge, cutout frame, 0-based (XYXY)"),
        "box_x1": ("pix", "Box right edge, cutout frame, 0-based (XYXY)"),
        "box_y1": ("pix", "Box top edge, cutout frame, 0-based (XYXY)"),
        "score": ("", "Detection score"),
        "label": ("", "normal or odd"),
        "fwhm_r_px": ("pix", "r-band PSF FWHM in cutout pixels"),
        "clump_ebv": ("mag", "E(B-V) used for the Galactic extinction"),
        "ebv_source": ("", "Where E(B-V) came from: sfd (map at the clump) or table (galaxy ebv)"),
        "galaxy_ebv": ("mag", "E(B-V) at the host galaxy centre, same source"),
        "survey": ("", "Survey whose filters measured the fluxes (sdss, synthetic, hsc): picks R_b"),
    }
    for b in bands:
        cols.update(
            {
                f"psf_fwhm_px_{b}": ("pix", f"{b}-band PSF FWHM in cutout pixels"),
                f"aperture_radius_{b}_px": ("pix", f"{b}-band aperture radius"),
                f"aperture_correction_{b}": (
                    "",
                    f"{b}-band aperture correction 1 / EE: the PSF's encircled energy in the aperture "
                    "(bad pixels left out)",
                ),
                f"apcorr_source_{b}": (
                    "",
                    f"PSF of the {b}-band aperture correction: psf (the cutout's PSF_{b.upper()} image) "
                    "or the analytic fallback profile (gaussian, moffat)",
                ),
                f"bkg_{b}": (
                    "nanomaggy / pix",
                    f"{b}-band host background under the clump from the annulus, the clump's own PSF wing removed",
                ),
                f"bkg_err_{b}": (
                    "nanomaggy / pix",
                    f"Error of the {b}-band background per pixel (noise and host structure)",
                ),
                f"n_bkg_pix_{b}": ("", f"Annulus pixels used for the {b}-band background"),
                f"flux_nmgy_{b}": ("nanomaggy", f"{b}-band background-subtracted, aperture-corrected flux"),
                f"flux_nmgy_err_{b}": ("nanomaggy", f"Error of flux_nmgy_{b}"),
                f"clump_flux_{b}": ("Jy", f"{b}-band clump flux"),
                f"clump_flux_err_{b}": ("Jy", f"Error of the {b}-band clump flux"),
                f"clump_mag_{b}": ("mag", f"{b}-band clump AB magnitude (NaN if flux <= 0)"),
                f"clump_mag_err_{b}": ("mag", f"Error of the {b}-band clump magnitude"),
                f"clump_mag_lim_{b}": ("mag", f"{b}-band 5-sigma limiting magnitude at the clump"),
                f"clump_ext_mag_{b}": ("mag", f"{b}-band Galactic extinction A_{b} = R_{b} E(B-V)"),
                f"clump_mag_corr_{b}": ("mag", f"Extinction-corrected {b}-band clump magnitude"),
                f"phot_flag_{b}": ("", f"{b}-band photometry flag bits (PHOT_FLAGS; 0 = clean)"),
            }
        )
    for b1, b2 in zip(bands[:-1], bands[1:], strict=True):
        cols[f"clump_mag_corr_{b1}_{b2}"] = ("mag", f"Extinction-corrected {b1}-{b2} clump colour")
    cols.update(
        {
            "clump_flux_ratio": (
                "",
                "clump/host flux ratio in clump_flux_ratio_band (u; g for HSC), host flux from host_mag_<band>",
            ),
            "clump_flux_ratio_band": ("", "Band of clump_flux_ratio (FLUX_RATIO_BAND of the survey)"),
            "is_clump_3pct": ("", "clump_flux_ratio >= 0.03 (Section 4.4.3)"),
            "is_clump_8pct": ("", "clump_flux_ratio >= 0.08 (Section 4.4.3)"),
        }
    )
    return cols


@dataclass(frozen=True)
class _Background:
    """An annulus background estimate (see :func:`_background`)."""

    value: float  # background per pixel under the aperture
    err: float  # its standard error from the pixel noise
    weights: np.ndarray  # value = weights @ values (0 for clipped pixels)
    keep: np.ndarray  # pixels used by the final fit
    design: np.ndarray  # fit design matrix of the kept pixels
    resid: np.ndarray  # residuals of the kept pixels


def _background(
    values: np.ndarray, dx: np.ndarray, dy: np.ndarray, target_rho2: float, sigma_pix: float, method: str
) -> _Background:
    """Background per pixel under the aperture and its error, from annulus pixels.

    Parameters
    ----------
    values : ndarray
        Unmasked annulus pixel values.
    dx, dy : ndarray
        Their offsets from the clump centre (pixels).
    target_rho2 : float
        Mean squared radius of the aperture, ``R^2 / 2``.
    sigma_pix : float
        Per-pixel noise.
    method : {'median', 'mean', 'plane', 'radial', 'quadratic'}
        ``median`` (App. E): the annulus median, error
        ``sqrt(pi/2) sigma / sqrt(N)``. ``mean``: the 3-sigma-clipped mean,
        error ``sigma / sqrt(N)``. ``plane``: a 3-sigma-clipped least-squares
        plane ``a + b dx + c dy`` evaluated at the centre; unbiased for a
        gradient even when the host mask leaves only one side of the annulus.
        ``radial``: a clipped fit ``a + k rho^2`` evaluated at the aperture's
        mean ``rho^2``; removes the curvature of a disc. ``quadratic``: a
        clipped full quadratic surface averaged over the aperture.

    Returns
    -------
    _Background
        The estimate, its noise error, and the linear weights, kept pixels,
        design matrix and residuals that :func:`_structure_variance` needs.
    """
    ones = np.ones(values.size)
    if method in ("median", "mean"):
        design = ones[:, None]
        target = np.array([1.0])
    elif method == "plane":
        design = np.column_stack([ones, dx, dy])
        target = np.array([1.0, 0.0, 0.0])
    elif method == "quadratic":
        design = np.column_stack([ones, dx, dy, dx**2, dx * dy, dy**2])
        target = np.array([1.0, 0.0, 0.0, target_rho2 / 2.0, 0.0, target_rho2 / 2.0])
    else:
        design = np.column_stack([ones, dx**2 + dy**2])
        target = np.array([1.0, target_rho2])
    if method == "median":
        value = float(np.median(values))
        keep = np.ones(values.size, dtype=bool)
        return _Background(
            value,
            float(_MEDIAN_ERR * sigma_pix / np.sqrt(values.size)),
            ones / values.size,
            keep,
            design,
            values - value,
        )
    keep = np.ones(values.size, dtype=bool)
    for _ in range(4):
        coef, *_ = np.linalg.lstsq(design[keep], values[keep], rcond=None)
        resid = values - design @ coef
        scatter = _MAD_TO_STD * np.median(np.abs(resid[keep]))
        new_keep = np.abs(resid) <= 3.0 * max(scatter, sigma_pix)
        if new_keep.sum() < max(_MIN_BKG_PIXELS, design.shape[1] + 2) or np.array_equal(new_keep, keep):
            break
        keep = new_keep
    coef, *_ = np.linalg.lstsq(design[keep], values[keep], rcond=None)
    weights = np.zeros(values.size)
    try:
        cov = np.linalg.inv(design[keep].T @ design[keep])
    except np.linalg.LinAlgError:
        return _Background(float(target @ coef), float("nan"), weights, keep, design[keep], values[keep])
    weights[keep] = design[keep] @ (cov @ target)
    return _Background(
        float(target @ coef),
        float(sigma_pix * np.sqrt(target @ cov @ target)),
        weights,
        keep,
        design[keep],
        values[keep] - design[keep] @ coef,
    )


def _correlation_length2(
    xy: np.ndarray, resid: np.ndarray, psf_sigma_px: float, max_corr_px: float
) -> float | None:
    """Squared correlation length of the residual structure, or None if it has none.

    From the residuals' covariance at lags 1 and 2 px, taken as Gaussian
    (c(d) ~ exp(-d^2 / 4 l^2), so l^2 = 3 / (4 ln(c1 / c2))), clipped to
    between the PSF's sigma and ``max_corr_px``; None where the lag-1
    covariance is not positive (no correlated structure).
    """
    c1, c2 = _lag_covariance(xy, resid, 1), _lag_covariance(xy, resid, 2)
    if not c1 > 0:
        return None
    if c2 > 0 and c1 > c2:
        corr2 = 3.0 / (4.0 * np.log(c1 / c2))
    elif c2 > 0:
        corr2 = max_corr_px**2
    else:
        corr2 = psf_sigma_px**2
    return float(np.clip(corr2, psf_sigma_px**2, max_corr_px**2))


def _lag_covariance(xy: np.ndarray, resid: np.ndarray, lag: int) -> float:
    """Mean product of residuals of pixel pairs ``lag`` apart along x or y."""
    ix = np.rint(xy[:, 0]).astype(int)
    iy = np.rint(xy[:, 1]).astype(int)
    ix -= ix.min()
    iy -= iy.min()
    grid = np.full((iy.max() + 1 + lag, ix.max() + 1 + lag), np.nan)
    grid[iy, ix] = resid
    products = np.concatenate(
        [(grid[:, :-lag] * grid[:, lag:]).ravel(), (grid[:-lag, :] * grid[lag:, :]).ravel()]
    )
    products = products[np.isfinite(products)]
    return float(products.mean()) if products.size else float("nan")


def _structure_variance(
    bkg: _Background,
    values: np.ndarray,
    ann_xy: np.ndarray,
    ap_xy: np.ndarray,
    ap_w: np.ndarray,
    centre: tuple[float, float],
    area: float,
    sigma2_pix: float,
    psf_sigma_px: float,
    max_corr_px: float,
) -> float:
    """Flux variance from host light that the background fit cannot follow.

    Besides the pixel noise, the annulus holds the host's own structure:
    arm segments, texture, faint knots and the curvature of a disc or bulge.
    Two terms, both measured on the kept annulus pixels (the clump's own
    PSF wings already subtracted from ``values``):

    1. *Curvature*: a quadratic surface fitted to the annulus, averaged over
       the aperture, minus the background fit's estimate; for a plane or a
       mean this is the bias from a convex or concave host (zero for the
       ``quadratic`` method). Its square less its noise variance
       (``sigma^2 |d|^2``, ``d`` the difference of the two fits' pixel
       weights) estimates the squared systematic error without bias.
    2. *Small-scale structure* about that quadratic surface: a stationary
       field of variance ``s2`` and correlation ``rho(d) = exp(-d^2 / 4c^2)``
       (the autocorrelation of a Gaussian of standard deviation ``c``).
       ``c`` comes from the residual covariances at lags of 1 and 2 pixels,
       which the white pixel noise does not reach (``C1 / C2 =
       exp(3 / 4c^2)``), kept between the PSF's sigma (everything on the
       image has been convolved with the PSF) and ``max_corr_px``; ``s2``
       from ``E[e'e] = sigma^2 (n - 6) + s2 tr((I - H) R)`` with ``e`` the
       ``n`` residuals and ``H`` the fit's hat matrix, counted where the
       excess exceeds 2 sigma of its chi-square noise. The flux error it
       causes, ``sum_ap w_i f_i - A (fit's estimate of f)``, has variance
       ``s2 w' R w``, ``w`` = the aperture's overlap weights and minus
       ``A`` times the background fit's pixel weights. This is
       correlation-aware: a few independent structures in the annulus give
       a large error, residuals consistent with the noise give none.

    Returns
    -------
    float
        Flux variance in nanomaggy^2.
    """
    keep = bkg.keep
    xy_k = ann_xy[keep]
    dx, dy = xy_k[:, 0] - centre[0], xy_k[:, 1] - centre[1]
    design = np.column_stack([np.ones(dx.size), dx, dy, dx**2, dx * dy, dy**2])
    n, p = design.shape
    if n <= 2 * p:
        return 0.0
    try:
        xtx_inv = np.linalg.inv(design.T @ design)
    except np.linalg.LinAlgError:
        return 0.0
    v = values[keep]
    resid = v - design @ (xtx_inv @ (design.T @ v))
    # 1. curvature
    rho2 = float(np.sum(ap_w * ((ap_xy[:, 0] - centre[0]) ** 2 + (ap_xy[:, 1] - centre[1]) ** 2)) / area)
    target = np.array([1.0, 0.0, 0.0, rho2 / 2.0, 0.0, rho2 / 2.0])
    dw = design @ (xtx_inv @ target) - bkg.weights[keep]
    curv_noise = sigma2_pix * float(dw @ dw)
    curv2 = float(dw @ v) ** 2
    # Each term counts only where the annulus shows it beyond its noise
    # (_STRUCTURE_NSIGMA): a positive part of an estimate that is zero on
    # average would inflate the errors of clumps on smooth hosts.
    curv_var = (curv2 - curv_noise) * area**2 if curv2 > _STRUCTURE_NSIGMA**2 * curv_noise else 0.0
    # 2. small-scale structure
    excess = float(resid @ resid) - sigma2_pix * (n - p)
    if excess <= _STRUCTURE_NSIGMA * sigma2_pix * np.sqrt(2.0 * (n - p)):
        return curv_var
    corr2 = _correlation_length2(xy_k, resid, psf_sigma_px, max_corr_px)
    if corr2 is None:
        return curv_var

    # R applied on the pixel grid (:func:`_apply_corr`); the aperture and
    # the annulus share no pixel.
    tr_ihr = n - float(np.sum(xtx_inv * (design.T @ _apply_corr(xy_k, design, corr2))))
    if tr_ihr <= 0:
        return curv_var
    s2 = excess / tr_ihr
    xy = np.concatenate([ap_xy, xy_k])
    w = np.concatenate([ap_w, -area * bkg.weights[keep]])
    return max(s2 * float(w @ _apply_corr(xy, w, corr2)[:, 0]), 0.0) + curv_var


@dataclass(frozen=True)
class _JointFit:
    """The joint clump + host-surface fit of one clump (see :func:`_joint_fit`)."""

    flux: float  # (aperture sum - host surface over the aperture) / EE
    bkg_sum: float  # the host surface integrated over the aperture (nanomaggies)
    weights: np.ndarray  # flux = weights @ values over the fitted pixels
    bkg_weights: np.ndarray  # bkg_sum = bkg_weights @ values
    resid: np.ndarray  # residuals of the kept annulus pixels
    resid_xy: np.ndarray  # their (x, y)
    resid_trace: float  # E[resid' resid] / sigma^2 for white noise: tr(M_aa)
    design: np.ndarray  # design matrix D of the kept pixels (PSF + surface)
    xtx_inv: np.ndarray  # (D'D)^-1
    ann_kept: np.ndarray  # bool over the kept pixels: annulus (not aperture)
    kept: np.ndarray  # bool over the fitted pixels: used by the final fit


def _joint_fit(
    values: np.ndarray,
    xy: np.ndarray,
    centre: tuple[float, float],
    psf_pix: np.ndarray,
    ap_w: np.ndarray,
    in_ap: np.ndarray,
    ee: float,
    sigma_pix: np.ndarray,
    scale: float,
    fit_mask: np.ndarray | None = None,
) -> _JointFit:
    """The clump's PSF and a quadratic host surface fitted together (``background='joint'``).

    Parameters
    ----------
    values : ndarray
        Pixel values of the good aperture pixels and the unmasked annulus pixels.
    xy : ndarray
        Their ``(x, y)``, shape ``(n, 2)``.
    centre : (float, float)
        The clump centre.
    psf_pix : ndarray
        The unit-flux PSF of the clump in those pixels.
    ap_w : ndarray
        Exact aperture overlap weights (0 on annulus pixels).
    in_ap : ndarray of bool
        Pixels of the aperture (never clipped).
    ee : float
        The PSF's encircled energy within the aperture (bad pixels out).
    sigma_pix : ndarray
        Per-pixel noise, for the clipping.
    scale : float
        Length scale of the surface's coordinates (the FWHM), for conditioning.
    fit_mask : ndarray of bool, optional
        Pixels that enter the fit (default all); aperture pixels outside it
        (on another clump) still count in the aperture sum.

    Returns
    -------
    _JointFit

    Notes
    -----
    The model ``f p + a + b dx + c dy + d dx^2 + e dx dy + g dy^2`` is fitted
    by unweighted least squares (linear in the data, so unbiased whatever the
    noise) to the aperture and annulus pixels at once; annulus pixels beyond
    3 sigma are clipped (stars, neighbours the masks missed). The flux stays
    the App. E aperture flux, ``(S - sum_ap w_i s(x_i)) / EE`` with ``s`` the
    fitted host surface: the aperture's own pixels pin the surface down where
    the annulus alone must extrapolate, which divides the background's noise
    by ~2 for the App. E radii (a quadratic from the annulus alone has ~1.9x
    the aperture's own noise). The fit works on the 7 x 7 normal equations
    (the design's columns are O(1) with coordinates in FWHM), so a clipping
    pass costs one pass over the pixels.
    """
    dx = (xy[:, 0] - centre[0]) / scale
    dy = (xy[:, 1] - centre[1]) / scale
    design = np.column_stack([psf_pix, np.ones(dx.size), dx, dy, dx * dx, dx * dy, dy * dy])
    fit_mask = np.ones(values.size, dtype=bool) if fit_mask is None else fit_mask
    keep = fit_mask.copy()
    ann = ~in_ap
    for _ in range(4):
        d_k = design[keep]
        coef = np.linalg.lstsq(d_k.T @ d_k, d_k.T @ values[keep], rcond=None)[0]
        resid = values - design @ coef
        sel = keep & ann
        scatter = _MAD_TO_STD * np.median(np.abs(resid[sel])) if sel.any() else 0.0
        new_keep = fit_mask & (in_ap | (np.abs(resid) <= 3.0 * np.maximum(scatter, sigma_pix)))
        if (new_keep & ann).sum() < max(_MIN_BKG_PIXELS, 2 * design.shape[1]) or np.array_equal(
            new_keep, keep
        ):
            break
        keep = new_keep
    d_k = design[keep]
    xtx_inv = np.linalg.pinv(d_k.T @ d_k)
    v_k = values[keep]
    coef = xtx_inv @ (d_k.T @ v_k)
    # The surface over the aperture is a linear function of the kept pixels:
    # sum_ap w s = t' coef_surface = (t' P_surface) D' v.
    target = ap_w @ design[:, 1:]
    bkg_w_k = d_k @ (xtx_inv[:, 1:] @ target)
    weights = ap_w / ee
    weights[keep] -= bkg_w_k / ee
    bkg_weights = np.zeros(values.size)
    bkg_weights[keep] = bkg_w_k
    resid_k = v_k - d_k @ coef
    ann_k = ann[keep]
    d_a = d_k[ann_k]
    return _JointFit(
        flux=float(weights @ values),
        bkg_sum=float(bkg_weights @ values),
        weights=weights,
        bkg_weights=bkg_weights,
        resid=resid_k[ann_k],
        resid_xy=xy[keep][ann_k],
        resid_trace=float(ann_k.sum() - np.sum((d_a @ xtx_inv) * d_a)),
        design=d_k,
        xtx_inv=xtx_inv,
        ann_kept=ann_k,
        kept=keep,
    )


def _apply_corr(xy: np.ndarray, vectors: np.ndarray, corr2: float) -> np.ndarray:
    """``R @ vectors`` for ``R_ij = exp(-|x_i - x_j|^2 / 4 corr2)`` over pixels ``xy``.

    The Gaussian correlation is separable on the pixel grid, so ``R`` is
    applied as ``Gy V Gx`` to each column scattered on the pixels' bounding
    box: ``O(k B^3)`` for ``k`` columns on a ``B x B`` box instead of the
    ``O(n^2)`` of the dense ``n x n`` matrix (``n ~ B^2``).
    """
    ix = np.rint(xy[:, 0]).astype(np.intp)
    iy = np.rint(xy[:, 1]).astype(np.intp)
    ix -= ix.min()
    iy -= iy.min()
    nx, ny = int(ix.max()) + 1, int(iy.max()) + 1
    gx = np.exp(-(np.subtract.outer(np.arange(nx), np.arange(nx)) ** 2) / (4.0 * corr2))
    gy = np.exp(-(np.subtract.outer(np.arange(ny), np.arange(ny)) ** 2) / (4.0 * corr2))
    vectors = np.asarray(vectors, dtype=np.float64).reshape(xy.shape[0], -1)
    grid = np.zeros((vectors.shape[1], ny, nx))
    grid[:, iy, ix] = vectors.T
    smoothed = np.matmul(np.matmul(gy, grid), gx)
    return smoothed[:, iy, ix].T


def _joint_structure_variance(
    fit: _JointFit,
    xy: np.ndarray,
    sigma2_pix: float,
    psf_sigma_px: float,
    max_corr_px: float,
) -> tuple[float, float]:
    """Flux and background-sum variances from host structure the joint fit cannot follow.

    The same model as :func:`_structure_variance`'s second term: a stationary
    field of variance ``s2`` and Gaussian-autocorrelated with length ``c``,
    measured on the annulus residuals of the joint fit (where the clump's own
    light is small): ``c`` from the residual covariances at lags 1 and 2,
    ``s2`` from ``E[e_a'e_a] = sigma^2 tr(M_aa) + s2 tr(M_a R M_a')`` (``M``
    the fit's residual-maker, rows of the annulus), counted where the excess
    exceeds 2 sigma of its chi-square noise. The flux responds to the field
    through the same pixel weights as to the noise: variance ``s2 w'Rw``.

    With ``M_a = E_a - D_a P D'`` (``D`` the design of the kept pixels,
    ``P = (D'D)^-1``, ``E_a`` the annulus rows) the trace is
    ``n_a - 2 tr(P (RD)_a' D_a) + tr(P D'RD P D_a'D_a)``: it needs ``R``
    applied to the 7 design columns only (:func:`_apply_corr`), never the
    ``n x n`` matrices.

    Returns
    -------
    flux_var, bkg_var : float
        In nanomaggy^2 (the flux and the aperture's background sum).
    """
    resid = fit.resid
    n_eff = fit.resid_trace
    excess = float(resid @ resid) - sigma2_pix * n_eff
    if n_eff <= 0 or excess <= _STRUCTURE_NSIGMA * sigma2_pix * np.sqrt(2.0 * n_eff):
        return 0.0, 0.0
    corr2 = _correlation_length2(fit.resid_xy, resid, psf_sigma_px, max_corr_px)
    if corr2 is None:
        return 0.0, 0.0
    d_k, p, ann_k = fit.design, fit.xtx_inv, fit.ann_kept
    rd = _apply_corr(xy[fit.kept], d_k, corr2)
    d_a = d_k[ann_k]
    term2 = float(np.sum((rd[ann_k] @ p) * d_a))
    term3 = float(np.sum((p @ (d_k.T @ rd) @ p) * (d_a.T @ d_a)))
    denom = float(ann_k.sum()) - 2.0 * term2 + term3
    if denom <= 0:
        return 0.0, 0.0
    s2 = excess / denom
    wb = np.column_stack([fit.weights, fit.bkg_weights])
    r_wb = _apply_corr(xy, wb, corr2)
    return max(s2 * float(wb[:, 0] @ r_wb[:, 0]), 0.0), max(s2 * float(wb[:, 1] @ r_wb[:, 1]), 0.0)


def photometry_metadata(settings: PhotometrySettings) -> dict[str, str]:
    """Settings stored in ``photometry.parquet``'s schema metadata (and copied to the catalogue)."""
    return {
        "aperture_correction": settings.correction,
        "aperture_radius_fwhm": str(settings.radius_fwhm),
        "annulus_fwhm": f"{settings.annulus_fwhm[0]} {settings.annulus_fwhm[1]}",
        "background": settings.background,
        "recentre": str(settings.recentre).lower(),
    }


def _noise_sigma(values: np.ndarray) -> float:
    med = np.median(values)
    return float(_MAD_TO_STD * np.median(np.abs(values - med)))


def measure_band(
    image: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    fwhm_px: float,
    *,
    host_mask: np.ndarray | None = None,
    ivar: np.ndarray | None = None,
    settings: PhotometrySettings | None = None,
    psf: np.ndarray | None = None,
    noise_scale: float = 1.0,
) -> dict[str, np.ndarray]:
    """Background-subtracted, aperture-corrected fluxes of clumps in one band.

    Parameters
    ----------
    image : ndarray
        2-D image in nanomaggies, cutout frame.
    x, y : array_like
        Clump centres (every clump of the galaxy), cutout frame, 0-based.
    fwhm_px : float
        PSF FWHM of this band in pixels.
    host_mask : ndarray of bool, optional
        True on the host galaxy. Pixels outside it are excluded from the
        background annulus. Default: no host masking.
    ivar : ndarray, optional
        Inverse variance (nanomaggy^-2); pixels with ``ivar <= 0`` are bad.
    settings : PhotometrySettings, optional
        Aperture, annulus, masking and correction settings.
    psf : ndarray, optional
        The band's normalised PSF image (``PSF_<BAND>``); without it the
        analytic ``settings.correction`` profile of FWHM ``fwhm_px`` is used.
    noise_scale : float
        Ratio of the true pixel noise to the IVAR plane's (HSC ``NOISECOR``);
        scales the IVAR errors.

    Returns
    -------
    dict of str to ndarray
        One value per clump: ``flux``, ``flux_err`` (nanomaggies, corrected),
        ``bkg``, ``bkg_err`` (nanomaggy/pixel: the host light under the
        clump, its own PSF wings removed), ``n_bkg`` (pixels used), ``flag``
        (:data:`PHOT_FLAGS` bits), ``correction`` (``1 / EE``, so that
        ``flux = (aperture sum - area x bkg) x correction``),
        ``apcorr_source`` (``'psf'`` or the analytic profile), plus the
        scalar ``radius_px``.

    Notes
    -----
    The flux ``f`` solves ``f EE = S - A B(a - f p)``: ``S`` the aperture
    sum, ``A`` its area, ``EE`` the PSF's encircled energy within the
    aperture (bad pixels left out, at the clump's sub-pixel position), ``B``
    the background estimator applied to the annulus pixels ``a`` less the
    clump's own PSF light ``f p`` in them (iterated: ``B`` may be a median
    or a clipped fit). Its error is the pixel noise of ``S`` and of ``B``
    and the host structure (:func:`_structure_variance`), divided by
    ``EE - A h.p`` (``h`` the estimator's pixel weights: the flux moves the
    wing model too), plus ``f`` times the relative error of ``EE`` from the
    PSF width (``settings.width_err(source)``), the photon-limited centroid and,
    without a PSF image, the profile
    (:func:`clumpcat.photometry.aperture_correction.band_psf`).
    """
    from clumpcat.postprocess.hostmask import photometry_mask

    settings = settings or PhotometrySettings()
    image = np.asarray(image, dtype=np.float64)
    x = np.atleast_1d(np.asarray(x, dtype=np.float64))
    y = np.atleast_1d(np.asarray(y, dtype=np.float64))
    n = x.size
    shape = image.shape
    bad = ~np.isfinite(image)
    err_image = None
    if ivar is not None:
        ivar = np.asarray(ivar, dtype=np.float64)
        bad |= ~(ivar > 0)
        with np.errstate(divide="ignore"):
            err_image = noise_scale * np.where(bad, 0.0, 1.0 / np.sqrt(np.where(bad, 1.0, ivar)))
    data = np.where(bad, 0.0, image)
    radius = settings.radius_fwhm * fwhm_px
    r_in, r_out = (f * fwhm_px for f in settings.annulus_fwhm)
    model = band_psf(
        psf, fwhm_px, settings.correction, settings.beta, settings.radius_fwhm, settings.annulus_fwhm
    )
    # The width of a PSF image is a survey model's; the fallback's a header number.
    width_err = settings.width_err(model.source)
    method = settings.background_for(model.source)
    out = {
        "flux": np.full(n, np.nan),
        "flux_err": np.full(n, np.nan),
        "bkg": np.full(n, np.nan),
        "bkg_err": np.full(n, np.nan),
        "n_bkg": np.zeros(n, dtype=np.int64),
        "flag": np.zeros(n, dtype=np.int64),
        "radius_px": radius,
        "correction": np.full(n, np.nan),
        "apcorr_source": np.full(n, model.source, dtype=object),
    }
    if n == 0:
        return out
    positions = np.column_stack([x, y])
    aperture = CircularAperture(positions, r=radius)
    area = float(aperture.area)
    # Exact overlap weights; the aperture sums and their variances straight
    # from them (aperture_photometry's table costs more than the sums).
    ap_masks = aperture.to_mask(method="exact")
    ap_sum = np.zeros(n)
    ap_err = np.zeros(n) if err_image is not None else None
    var_image = err_image**2 if err_image is not None else None
    for i, ap_mask in enumerate(ap_masks):
        slices = ap_mask.get_overlap_slices(shape)
        if slices[0] is None:
            continue
        w = ap_mask.data[slices[1]]
        ap_sum[i] = float(np.sum(w * data[slices[0]]))
        if var_image is not None:
            ap_err[i] = float(np.sqrt(np.sum(w * var_image[slices[0]])))
    ann_masks = CircularAnnulus(positions, r_in=r_in, r_out=r_out).to_mask(method="center")
    host = np.ones(shape, dtype=bool) if host_mask is None else np.asarray(host_mask, dtype=bool)
    clump_mask_px = settings.clump_mask_fwhm * fwhm_px
    for i in range(n):
        inside = ap_masks[i].get_overlap_slices(shape)[0]
        ann_full = ann_masks[i].to_image(shape)
        if inside is None or ann_full is None:
            out["flag"][i] |= PHOT_FLAGS["off_image"]
            continue
        ap_weights = ap_masks[i].to_image(shape)
        if ap_weights.sum() < area * (1 - 1e-6) or ann_full.sum() < ann_masks[i].data.sum():
            out["flag"][i] |= PHOT_FLAGS["off_image"]
        ap_bad = bad & (ap_weights > 0)
        # The area actually summed: bad pixels hold neither clump nor background.
        area_i = area
        if ap_bad.any():
            out["flag"][i] |= PHOT_FLAGS["bad_pixels"]
            area_i = float(np.sum(ap_weights[~bad]))
        in_annulus = ann_full > 0
        exclude = photometry_mask(host, x, y, clump_mask_px, i) | bad
        use = in_annulus & ~exclude
        if use.sum() < max(_MIN_BKG_PIXELS, settings.min_bkg_fraction * in_annulus.sum()):
            out["flag"][i] |= PHOT_FLAGS["host_mask_dropped"]
            use = in_annulus & ~(photometry_mask(np.ones(shape, bool), x, y, clump_mask_px, i) | bad)
        n_use = int(use.sum())
        out["n_bkg"][i] = n_use
        if n_use < _MIN_BKG_PIXELS:
            out["flag"][i] |= PHOT_FLAGS["no_background"]
            continue
        # The clump's PSF on the cutout grid: encircled energy within the
        # aperture as measured (bad pixels out), and its light in the annulus.
        ix, iy = int(np.rint(x[i])), int(np.rint(y[i]))
        offset = (x[i] - ix, y[i] - iy)
        stamp = shifted_psf(model, *offset)
        mask = stamp_mask(bad, ix, iy, model.half) if ap_bad.any() else None
        ee_full = image_encircled_energy(stamp, radius, offset=offset)
        ee = image_encircled_energy(stamp, radius, offset=offset, mask=mask) if mask is not None else ee_full
        yy, xx = np.nonzero(use)
        psf_pix = psf_light(stamp, ix, iy, xx, yy)
        values = image[use]
        if err_image is not None:
            sigma_pix = float(np.sqrt(np.mean(err_image[use] ** 2)))
            aperture_var = ap_err[i] ** 2
        if method == "joint":
            _measure_joint(
                out,
                i,
                data,
                err_image,
                ap_weights,
                bad,
                use,
                stamp,
                (ix, iy),
                offset,
                mask,
                ee,
                ee_full,
                area_i,
                radius,
                fwhm_px,
                (x[i], y[i]),
                model.shape_err,
                width_err,
                settings,
                (x, y),
                clump_mask_px,
            )
            continue
        flux, fit = 0.0, None
        for step in range(_WING_ITERATIONS):
            if err_image is None:
                sigma_pix = _noise_sigma(values - flux * psf_pix)
                aperture_var = area * sigma_pix**2
            # The background of the host alone: the annulus less the clump's
            # own PSF wing at the current flux (a median or a clipped fit is
            # not linear, so the wing is removed rather than corrected for).
            fit = _background(
                values - flux * psf_pix, xx - x[i], yy - y[i], radius**2 / 2.0, sigma_pix, method
            )
            if step == 0:
                # The linear estimate, exact for fixed pixel weights h: the
                # wing in the annulus takes A h.p of the flux with it.
                kept = max(ee - area_i * float(fit.weights @ psf_pix), 0.5 * ee)
                flux = (ap_sum[i] - area_i * fit.value) / kept
                continue
            new = (ap_sum[i] - area_i * fit.value) / ee
            # Converged to a thousandth of the aperture's pixel noise.
            converged = abs(new - flux) <= 1e-3 * np.sqrt(aperture_var) / ee
            flux = new
            if converged:
                break
        out["bkg"][i] = fit.value
        out["correction"][i] = 1.0 / ee
        # d flux / d(pixel values): the wing model moves with the flux.
        gain = 1.0 / max(ee - area_i * float(fit.weights @ psf_pix), 0.5 * ee)
        struct_var = 0.0
        if err_image is not None and settings.structure_error:
            ap_y, ap_x = np.nonzero(ap_weights > 0)
            struct_var = _structure_variance(
                fit,
                values - flux * psf_pix,
                np.column_stack([xx, yy]).astype(float),
                np.column_stack([ap_x, ap_y]).astype(float),
                ap_weights[ap_y, ap_x],
                (x[i], y[i]),
                area,
                sigma_pix**2,
                fwhm_px / _FWHM_PER_SIGMA,
                settings.annulus_fwhm[1] * fwhm_px,
            )
        bkg_err = float(np.sqrt(fit.err**2 + struct_var / area**2))
        out["bkg_err"][i] = bkg_err
        if out["flag"][i] & PHOT_FLAGS["off_image"] or ee < (1.0 - settings.max_masked_ee) * ee_full:
            continue
        noise_var = (aperture_var + (area_i * bkg_err) ** 2) * gain**2
        # Photon-limited centroid per axis for a PSF of Gaussian core:
        # sqrt(2) sigma_psf / (S/N).
        snr = abs(flux) / np.sqrt(noise_var) if noise_var > 0 else np.inf
        centroid_px = np.sqrt(2.0) * fwhm_px / _FWHM_PER_SIGMA / snr if snr > 0 else radius
        width_ee, centroid_ee = kept_fraction_errors(
            stamp, radius, offset, mask, width_err=width_err, centroid_err_px=centroid_px
        )
        rel_ee2 = (width_ee / ee) ** 2 + (centroid_ee / ee) ** 2 + model.shape_err**2
        out["flux"][i] = flux
        out["flux_err"][i] = np.sqrt(noise_var + flux**2 * rel_ee2)
    return out


def _measure_joint(
    out: dict,
    i: int,
    data: np.ndarray,
    err_image: np.ndarray | None,
    ap_weights: np.ndarray,
    bad: np.ndarray,
    use: np.ndarray,
    stamp: np.ndarray,
    pixel: tuple[int, int],
    offset: tuple[float, float],
    mask: np.ndarray | None,
    ee: float,
    ee_full: float,
    area_i: float,
    radius: float,
    fwhm_px: float,
    centre: tuple[float, float],
    shape_err: float,
    width_err: float,
    settings: PhotometrySettings,
    all_xy: tuple[np.ndarray, np.ndarray],
    clump_mask_px: float,
) -> None:
    """Fill clump ``i`` of ``out`` with the joint clump + host-surface estimate (:func:`_joint_fit`)."""
    # The aperture's pixels, less the discs of the other clumps (their light
    # stays in the aperture sum, as with the annulus-only estimators, but
    # does not bend the host surface). The discs are those of
    # photometry_mask (distance <= clump_mask_px), tested on these pixels only.
    in_ap_img = (ap_weights > 0) & ~bad
    pix = in_ap_img | use
    yy, xx = np.nonzero(pix)
    in_ap = in_ap_img[yy, xx]
    ox, oy = np.delete(all_xy[0], i), np.delete(all_xy[1], i)
    finite = np.isfinite(ox) & np.isfinite(oy)
    ox, oy = ox[finite], oy[finite]
    on_other = np.zeros(xx.size, dtype=bool)
    if ox.size:
        d2 = (xx[:, None] - ox[None, :]) ** 2 + (yy[:, None] - oy[None, :]) ** 2
        on_other = (d2 <= clump_mask_px**2).any(axis=1)
    fit_mask = ~(in_ap & on_other)
    values = data[yy, xx]
    xy = np.column_stack([xx, yy]).astype(float)
    psf_pix = psf_light(stamp, pixel[0], pixel[1], xx, yy)
    if err_image is not None:
        sigma = err_image[yy, xx]
    else:
        # Robust scatter of the annulus about a first joint fit: the pixel noise.
        first = _joint_fit(
            values, xy, centre, psf_pix, ap_weights[yy, xx], in_ap, ee, np.inf, fwhm_px, fit_mask
        )
        sigma = np.full(values.size, _noise_sigma(first.resid))
    fit = _joint_fit(values, xy, centre, psf_pix, ap_weights[yy, xx], in_ap, ee, sigma, fwhm_px, fit_mask)
    sigma2_ann = float(np.mean(sigma[~in_ap] ** 2)) if (~in_ap).any() else float(np.mean(sigma**2))
    noise_var = float(np.sum(fit.weights**2 * sigma**2))
    bkg_var = float(np.sum(fit.bkg_weights**2 * sigma**2))
    struct_var = struct_bkg = 0.0
    if err_image is not None and settings.structure_error:
        struct_var, struct_bkg = _joint_structure_variance(
            fit, xy, sigma2_ann, fwhm_px / _FWHM_PER_SIGMA, settings.annulus_fwhm[1] * fwhm_px
        )
    out["bkg"][i] = fit.bkg_sum / area_i
    out["bkg_err"][i] = np.sqrt(bkg_var + struct_bkg) / area_i
    out["correction"][i] = 1.0 / ee
    if out["flag"][i] & PHOT_FLAGS["off_image"] or ee < (1.0 - settings.max_masked_ee) * ee_full:
        return
    flux = fit.flux
    noise_var += struct_var
    if err_image is not None and settings.structure_error:
        noise_var += _confusion_variance(fit, values, sigma)
    snr = abs(flux) / np.sqrt(noise_var) if noise_var > 0 else np.inf
    centroid_px = np.sqrt(2.0) * fwhm_px / _FWHM_PER_SIGMA / snr if snr > 0 else radius
    _, centroid_ee = kept_fraction_errors(
        stamp, radius, offset, mask, width_err=0.0, centroid_err_px=centroid_px
    )
    # The PSF's width error: the joint fit reads a source of a wider or
    # narrower PSF through the same pixel weights (the surface takes up part
    # of the core's change, so this is ~4x the aperture's EE change alone).
    width_rel = 0.0
    if width_err > 0:
        centre_st = (stamp.shape[1] // 2 + offset[0], stamp.shape[0] // 2 + offset[1])
        deriv = psf_light(_width_derivative(stamp, centre_st), pixel[0], pixel[1], xx, yy)
        width_rel = width_err * abs(float(fit.weights @ deriv))
    rel_ee2 = width_rel**2 + (centroid_ee / ee) ** 2 + shape_err**2
    out["flux"][i] = flux
    out["flux_err"][i] = np.sqrt(noise_var + flux**2 * rel_ee2)


def _confusion_variance(fit: _JointFit, values: np.ndarray, sigma: np.ndarray) -> float:
    """Flux variance from light in the aperture that is not the clump's PSF.

    A host knot under the clump, a neighbour the masks missed or a resolved
    clump add light that the annulus does not see (the structure term is
    measured there) and that the aperture sum takes in whole. The joint fit
    also gives the clump's PSF amplitude; for a point source on a smooth
    surface it and the aperture flux differ only by noise. Their
    difference ``d`` (linear in the pixels, variance ``v`` from the pixel
    noise) is counted where it exceeds 2 sigma (:data:`_STRUCTURE_NSIGMA`, as
    the structure terms): ``d^2 - v`` is then the unbiased estimate of the
    squared systematic error it shows.
    """
    psf_w = np.zeros(values.size)
    psf_w[fit.kept] = fit.design @ fit.xtx_inv[0]
    diff_w = fit.weights - psf_w
    d = float(diff_w @ values)
    var_d = float(np.sum(diff_w**2 * sigma**2))
    if d * d > _STRUCTURE_NSIGMA**2 * var_d:
        return d * d - var_d
    return 0.0


def _width_derivative(stamp: np.ndarray, centre: tuple[float, float]) -> np.ndarray:
    """``d/ds`` at ``s = 1`` of ``stamp`` widened by ``s`` about ``centre`` (x, y), flux kept.

    ``P_s(x) = P(c + (x - c) / s) / s^2`` gives ``-(2 P + (x - c) . grad P)``;
    the gradient by the fourth-order central difference (error ~ k^4 h^4 / 30:
    0.4% at the core of a 3-pixel FWHM), so one pass over the stamp replaces
    two spline resamplings of widened and narrowed stamps.
    """
    gx, gy = stamp_gradient(stamp)
    yy, xx = np.indices(stamp.shape, dtype=float)
    return -(2.0 * stamp + (xx - centre[0]) * gx + (yy - centre[1]) * gy)


def _host_mask_for(cutout: Cutout, host_mask_fn: Callable | None) -> np.ndarray | None:
    if host_mask_fn is None:
        return None
    band = "r" if "r" in cutout.images else cutout.bands[len(cutout.bands) // 2]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mask = np.asarray(host_mask_fn(cutout.images[band], cutout.fwhm_pixels(band)), dtype=bool)
    for w in caught:
        log.warning("%s: host mask: %s", cutout.objid, w.message)
    if mask.shape != cutout.shape:
        raise CutoutError(cutout.objid, f"host mask shape {mask.shape} differs from image {cutout.shape}")
    return mask


def _default_host_mask(image: np.ndarray, fwhm: float) -> np.ndarray:
    """The host-galaxy mask (paper 4.3.2) at the default threshold, for cutouts without stored segments."""
    # Imported here: photutils' segmentation takes ~0.8 s to import, and the
    # workflow's photometry jobs read the stored segments instead.
    from clumpcat.survey.hostsegment import host_galaxy_mask

    return host_galaxy_mask(image, fwhm, nsigma=DEFAULT_NSIGMA)


def _default_host_mask_fn() -> Callable:
    return _default_host_mask


def _recentre(
    cutout: Cutout, x: np.ndarray, y: np.ndarray, settings: PhotometrySettings
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clump centres refined in the reference band (r where present) for every band's apertures."""
    band = "r" if "r" in cutout.images else cutout.bands[len(cutout.bands) // 2]
    fwhm = cutout.fwhm_pixels(band)
    image = np.asarray(cutout.images[band], dtype=np.float64)
    bad = ~np.isfinite(image)
    sigma = None
    ivar = cutout.ivar.get(band)
    if ivar is not None:
        ivar = np.asarray(ivar, dtype=np.float64)
        bad |= ~(ivar > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            sigma = cutout.noise_factor(band) / np.sqrt(np.where(bad, 1.0, ivar))
    model = band_psf(
        cutout.psf.get(band),
        fwhm,
        settings.correction,
        settings.beta,
        settings.radius_fwhm,
        settings.annulus_fwhm,
    )
    fit = refine_centres(image, x, y, model, fwhm, bad=bad, sigma=sigma)
    return fit.x, fit.y, fit.refined


def measure_galaxy(
    cutout: Cutout,
    clumps: pd.DataFrame,
    *,
    bands: Sequence[str] = SDSS_BANDS,
    host_mask: np.ndarray | None = None,
    settings: PhotometrySettings | None = None,
) -> pd.DataFrame:
    """Measure every clump of one galaxy in every band (fluxes in nanomaggies).

    Parameters
    ----------
    cutout : Cutout
        The galaxy's cutout.
    clumps : DataFrame
        The galaxy's clumps with ``x``, ``y`` (cutout frame, 0-based) and,
        optionally, ``ra``, ``dec`` (filled from the WCS where missing).
    bands : sequence of str
        Bands to measure; a band absent from the cutout gets NaN and the
        ``band_missing`` flag.
    host_mask : ndarray of bool, optional
        True on the host galaxy (cutout frame).
    settings : PhotometrySettings, optional

    Returns
    -------
    DataFrame
        ``clumps`` (index reset) plus, per band ``b``: ``psf_fwhm_px_b``,
        ``aperture_radius_b_px``, ``aperture_correction_b``,
        ``apcorr_source_b`` (``'psf'`` where the cutout has the band's PSF
        image, else the analytic profile used), ``bkg_b``,
        ``bkg_err_b``, ``n_bkg_pix_b``, ``flux_nmgy_b``, ``flux_nmgy_err_b``,
        ``phot_flag_b``.
    """
    settings = settings or PhotometrySettings()
    out = clumps.reset_index(drop=True).copy()
    x = out["x"].to_numpy(dtype=np.float64)
    y = out["y"].to_numpy(dtype=np.float64)
    out["x_det"], out["y_det"] = x.copy(), y.copy()
    refined = np.zeros(len(out), dtype=bool)
    if settings.recentre and len(out):
        x, y, refined = _recentre(cutout, x, y, settings)
        out["x"], out["y"] = x, y
        if refined.any() and {"ra", "dec"} <= set(out.columns):
            # The sky position follows the refined centre.
            ra, dec = cutout.wcs.pixel_to_world_values(x[refined], y[refined])
            out.loc[refined, "ra"] = ra
            out.loc[refined, "dec"] = dec
    out["recentred"] = refined
    need_sky = [c for c in ("ra", "dec") if c not in out.columns or out[c].isna().any()]
    if need_sky and len(out):
        ra, dec = cutout.wcs.pixel_to_world_values(x, y)
        for col, values in (("ra", ra), ("dec", dec)):
            if col not in out.columns:
                out[col] = values
            else:
                out[col] = out[col].fillna(pd.Series(values, index=out.index))
    if "fwhm_r_px" not in out.columns and "r" in cutout.images:
        out["fwhm_r_px"] = cutout.fwhm_pixels("r")
    new = {}
    for band in bands:
        if band not in cutout.images:
            new.update(
                {
                    f"psf_fwhm_px_{band}": np.nan,
                    f"aperture_radius_{band}_px": np.nan,
                    f"aperture_correction_{band}": np.nan,
                    f"apcorr_source_{band}": np.full(len(out), "", dtype=object),
                    f"bkg_{band}": np.full(len(out), np.nan),
                    f"bkg_err_{band}": np.full(len(out), np.nan),
                    f"n_bkg_pix_{band}": np.zeros(len(out), dtype=np.int64),
                    f"flux_nmgy_{band}": np.full(len(out), np.nan),
                    f"flux_nmgy_err_{band}": np.full(len(out), np.nan),
                    f"phot_flag_{band}": np.full(len(out), PHOT_FLAGS["band_missing"], dtype=np.int64),
                }
            )
            continue
        fwhm = cutout.fwhm_pixels(band)
        res = measure_band(
            cutout.images[band],
            x,
            y,
            fwhm,
            host_mask=host_mask,
            ivar=cutout.ivar.get(band),
            settings=settings,
            psf=cutout.psf.get(band),
            noise_scale=cutout.noise_factor(band),
        )
        new.update(
            {
                f"psf_fwhm_px_{band}": fwhm,
                f"aperture_radius_{band}_px": res["radius_px"],
                f"aperture_correction_{band}": res["correction"],
                f"apcorr_source_{band}": res["apcorr_source"],
                f"bkg_{band}": res["bkg"],
                f"bkg_err_{band}": res["bkg_err"],
                f"n_bkg_pix_{band}": res["n_bkg"],
                f"flux_nmgy_{band}": res["flux"],
                f"flux_nmgy_err_{band}": res["flux_err"],
                f"phot_flag_{band}": res["flag"],
            }
        )
    return pd.concat([out, pd.DataFrame(new, index=out.index)], axis=1)


def add_magnitudes(
    frame: pd.DataFrame,
    ebv: np.ndarray,
    host_mag: np.ndarray | None,
    bands: Sequence[str] = SDSS_BANDS,
    survey: str | None = None,
) -> pd.DataFrame:
    """Add Jansky fluxes, AB magnitudes, extinction, colours and the flux ratio.

    Parameters
    ----------
    frame : DataFrame
        Output of :func:`measure_galaxy` (``flux_nmgy_<b>``, ...).
    ebv : ndarray
        E(B-V) per row (mag).
    host_mag : ndarray, optional
        Observed AB magnitude of each row's host galaxy in the survey's flux
        ratio band (:data:`clumpcat.constants.FLUX_RATIO_BAND`: u, g for HSC);
        NaN or None gives a NaN flux ratio and False flags.
    bands : sequence of str
    survey : str, optional
        Survey of the filters (R_b and the ratio band); default from the bands
        (:func:`clumpcat.photometry.extinction.survey_for_bands`).

    Returns
    -------
    DataFrame
        ``frame`` plus ``clump_ebv``, and per band ``clump_flux_<b>``,
        ``clump_flux_err_<b>`` (Jy), ``clump_mag_<b>``, ``clump_mag_err_<b>``,
        ``clump_mag_lim_<b>``, ``clump_ext_mag_<b>``, ``clump_mag_corr_<b>``;
        colours ``clump_mag_corr_<b1>_<b2>`` of adjacent bands;
        ``clump_flux_ratio`` (and its ``clump_flux_ratio_band``),
        ``is_clump_3pct``, ``is_clump_8pct``.

    Notes
    -----
    ``m = 22.5 - 2.5 log10(f / nMgy)`` (AB, App. E eq. 11), error
    ``2.5 / ln 10 x sigma_f / f``. Non-positive fluxes give NaN magnitudes and
    set the ``nonpositive_flux`` flag bit; the limit ``clump_mag_lim_<b>`` is
    the magnitude of a 5-sigma flux.
    """
    out = frame.copy()
    ebv = np.asarray(ebv, dtype=np.float64)
    survey = survey or survey_for_bands(bands)
    ext = extinction_mags(ebv, bands, survey=survey)
    new: dict[str, np.ndarray] = {"clump_ebv": ebv}
    for band in bands:
        flux = out[f"flux_nmgy_{band}"].to_numpy(np.float64)
        err = out[f"flux_nmgy_err_{band}"].to_numpy(np.float64)
        positive = flux > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            mag = np.where(
                positive, NANOMAGGY_ZEROPOINT - 2.5 * np.log10(np.where(positive, flux, 1.0)), np.nan
            )
            mag_err = np.where(positive, _MAG_PER_FRAC * err / np.where(positive, flux, 1.0), np.nan)
            ok_err = err > 0
            mag_lim = np.where(
                ok_err,
                NANOMAGGY_ZEROPOINT - 2.5 * np.log10(np.where(ok_err, _LIMIT_NSIGMA * err, 1.0)),
                np.nan,
            )
        flag = out[f"phot_flag_{band}"].to_numpy(np.int64).copy()
        flag[np.isfinite(flux) & ~positive] |= PHOT_FLAGS["nonpositive_flux"]
        new[f"phot_flag_{band}"] = flag
        new[f"clump_flux_{band}"] = flux * NANOMAGGY_JY
        new[f"clump_flux_err_{band}"] = err * NANOMAGGY_JY
        new[f"clump_mag_{band}"] = mag
        new[f"clump_mag_err_{band}"] = mag_err
        new[f"clump_mag_lim_{band}"] = mag_lim
        new[f"clump_ext_mag_{band}"] = ext[band]
        new[f"clump_mag_corr_{band}"] = mag - ext[band]
    for b1, b2 in zip(bands[:-1], bands[1:], strict=True):
        new[f"clump_mag_corr_{b1}_{b2}"] = new[f"clump_mag_corr_{b1}"] - new[f"clump_mag_corr_{b2}"]
    ratio_band = FLUX_RATIO_BAND[survey]  # Section 4.4.3's u; HSC has none, so g
    if ratio_band in bands and host_mag is not None:
        host_flux = np.power(10.0, (NANOMAGGY_ZEROPOINT - np.asarray(host_mag, dtype=np.float64)) / 2.5)
        ratio = out[f"flux_nmgy_{ratio_band}"].to_numpy(np.float64) / host_flux
    else:
        ratio = np.full(len(out), np.nan)
    new["clump_flux_ratio"] = ratio
    new["clump_flux_ratio_band"] = np.full(len(out), ratio_band, dtype=object)
    new["survey"] = np.full(len(out), survey, dtype=object)
    with np.errstate(invalid="ignore"):
        new["is_clump_3pct"] = ratio >= GSFC_FLUX_RATIO_THRESHOLDS["3pct"]
        new["is_clump_8pct"] = ratio >= GSFC_FLUX_RATIO_THRESHOLDS["8pct"]
    for key, values in new.items():
        out[key] = values
    return out


def _empty_output(bands: Sequence[str]) -> pd.DataFrame:
    cols = photometry_columns(bands)
    frame = pd.DataFrame({c: pd.Series(dtype="float64") for c in cols})
    for c in ("objid", "label", "ebv_source", "survey", "clump_flux_ratio_band"):
        frame[c] = frame[c].astype(object)
    for c in cols:
        if c.startswith(("phot_flag_", "n_bkg_pix_")):
            frame[c] = frame[c].astype("int64")
        if c.startswith("is_clump_"):
            frame[c] = frame[c].astype(bool)
    return frame


@dataclass(frozen=True)
class _PhotometryJob:
    """What every galaxy of a shard's photometry shares."""

    cutout_dir: str
    groups: dict[str, pd.DataFrame]
    bands: tuple[str, ...]
    settings: PhotometrySettings
    host_mask_fn: Callable | None
    segments: SegmentSet | None


def _measure_one(job: _PhotometryJob, objid: str) -> tuple[pd.DataFrame | None, LedgerEntry | None]:
    """One galaxy's clumps measured, or its failure (what one cutout may raise is caught)."""
    try:
        cutout = read_cutout(objid_path(job.cutout_dir, objid, ".fits"), bands=job.bands)
        if job.segments is not None and job.host_mask_fn is not None:
            mask = job.segments.mask_for(cutout)
        else:
            mask = _host_mask_for(cutout, job.host_mask_fn)
        measured = measure_galaxy(
            cutout, job.groups[objid], bands=job.bands, host_mask=mask, settings=job.settings
        )
        return measured, None
    except (ClumpcatError, OSError, ValueError) as exc:
        reason = exc.reason if isinstance(exc, CutoutError) else str(exc)
        log.warning("%s: photometry failed: %s", objid, reason)
        return None, LedgerEntry(objid, "failed", "photometry", reason)


def photometry_shard(
    galaxies: pd.DataFrame,
    clumps: pd.DataFrame,
    cutout_dir: str | Path,
    objids: Sequence[str],
    *,
    bands: Sequence[str] = SDSS_BANDS,
    survey: str | None = None,
    settings: PhotometrySettings | None = None,
    ebv_source: str = "auto",
    sfd_dir: str | Path | None = None,
    host_mask_fn: Callable | None | str = "default",
    galaxies_name: str = "galaxy table",
    segments: SegmentSet | None = None,
    workers: int = 1,
) -> tuple[pd.DataFrame, list[LedgerEntry]]:
    """Measure the clumps of a shard's galaxies, one cutout read per galaxy.

    Parameters
    ----------
    galaxies : DataFrame
        The shard's validated galaxy table (``objid``; ``host_mag_u`` and
        ``ebv`` used where present).
    clumps : DataFrame
        Post-processed candidates with at least :data:`CLUMP_INPUT_COLUMNS`.
    cutout_dir : str or Path
        Folder of ``{objid}.fits`` cutouts.
    objids : sequence of str
        Galaxies to measure (those still ``ok`` upstream).
    bands : sequence of str
        Bands to measure (every one must be in each cutout).
    survey : str, optional
        Survey of the filters: R_b and the flux-ratio band (``host_mag_<band>``
        of the galaxy table); default from the bands.
    settings : PhotometrySettings, optional
    ebv_source : {'auto', 'sfd', 'table'}
        Where E(B-V) comes from (:func:`clumpcat.photometry.extinction.resolve_ebv_source`);
        checked before any cutout is read.
    sfd_dir : str or Path, optional
        SFD map folder.
    host_mask_fn : callable, None or 'default'
        ``f(image_r, fwhm_r_px) -> bool mask``; ``'default'`` uses
        :func:`clumpcat.survey.hostsegment.host_galaxy_mask` with the
        configured default threshold, None disables host masking. Not used
        when ``segments`` is given.
    galaxies_name : str
        Name of the galaxy table in messages.
    segments : SegmentSet, optional
        The shard's stored host segments (``clumpcat segment``): the host
        mask of each galaxy, the one post-processing used; a galaxy without
        one fails with the reason.
    workers : int
        Processes measuring the galaxies (:func:`clumpcat.parallel.ordered_map`);
        the result does not depend on it.

    Returns
    -------
    photometry : DataFrame
        One row per clump of the measured galaxies, columns of
        :func:`photometry_columns` (and any other input clump columns).
    failures : list of LedgerEntry
        Galaxies whose cutout could not be read or measured (stage
        ``photometry``, with the reason).

    Raises
    ------
    InputError
        If the clumps table lacks a column, or no E(B-V) source is usable.
    """
    settings = settings or PhotometrySettings()
    bands = tuple(bands)
    missing = [c for c in CLUMP_INPUT_COLUMNS if c not in clumps.columns]
    if missing:
        raise InputError(f"clumps table: missing column(s) {', '.join(missing)}")
    clumps = clumps.copy()
    clumps["objid"] = clumps["objid"].astype(str)
    wanted = [str(o) for o in objids]
    with_clumps = sorted(set(wanted) & set(clumps["objid"]))
    source = resolve_ebv_source(ebv_source, sfd_dir, galaxies, with_clumps, galaxies_name)
    if host_mask_fn == "default":
        host_mask_fn = _default_host_mask_fn()
        if segments is None:
            preload_segmentation()
    groups = dict(tuple(clumps[clumps["objid"].isin(set(with_clumps))].groupby("objid", sort=False)))
    job = _PhotometryJob(str(cutout_dir), groups, bands, settings, host_mask_fn, segments)
    parts, failures = [], []
    for part, failure in ordered_map(_measure_one, job, with_clumps, workers=workers, desc="photometry"):
        if failure is None:
            parts.append(part)
        else:
            failures.append(failure)
    if not parts:
        return _empty_output(bands), failures
    phot = pd.concat(parts, ignore_index=True)
    ebv = clump_ebv(phot, galaxies, source, sfd_dir)
    survey = survey or survey_for_bands(bands)
    host_mag, host_col = None, f"host_mag_{FLUX_RATIO_BAND[survey]}"
    if host_col in galaxies.columns:
        lookup = pd.Series(
            pd.to_numeric(galaxies[host_col], errors="coerce").to_numpy(float),
            index=galaxies["objid"].astype(str),
        )
        host_mag = lookup.reindex(phot["objid"]).to_numpy(float)
    phot = add_magnitudes(phot, ebv, host_mag, bands, survey)
    phot["ebv_source"] = source
    hosts = galaxies[galaxies["objid"].astype(str).isin(set(phot["objid"]))][["objid", "ra", "dec"]].copy()
    hosts["objid"] = hosts["objid"].astype(str)
    if source == "table":
        hosts["ebv"] = clump_ebv(hosts, galaxies, "table")
    else:
        hosts["ebv"] = clump_ebv(hosts, galaxies, "sfd", sfd_dir)
    phot["galaxy_ebv"] = hosts.set_index("objid")["ebv"].reindex(phot["objid"]).to_numpy(float)
    order = [c for c in photometry_columns(bands) if c in phot.columns]
    rest = [c for c in phot.columns if c not in order]
    return phot[order + rest], failures


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``clumpcat photometry`` options."""
    parser.add_argument("--galaxies", required=True, help="shard galaxy table (Parquet or CSV)")
    parser.add_argument("--clumps", required=True, help="shard clumps.parquet from postprocess")
    parser.add_argument("--cutouts", required=True, help="folder of {objid}.fits cutouts")
    parser.add_argument("--status-in", help="previous stage's status table (default: every galaxy ok)")
    parser.add_argument("--status-out", required=True, help="this stage's status table to write")
    parser.add_argument("--out", required=True, help="photometry.parquet to write")
    parser.add_argument(
        "--bands", nargs="+", default=list(SDSS_BANDS), help="bands to measure (default ugriz)"
    )
    parser.add_argument(
        "--survey",
        choices=sorted(FLUX_RATIO_BAND),
        help="survey of the filters: extinction R_b and flux-ratio band (default: hsc with a y band, else sdss)",
    )
    parser.add_argument(
        "--aperture-correction",
        choices=PROFILES,
        default="gaussian",
        help="PSF profile of the aperture correction",
    )
    parser.add_argument("--moffat-beta", type=float, default=MOFFAT_BETA, help="Moffat index (default 4.765)")
    parser.add_argument(
        "--aperture-radius",
        type=float,
        default=APERTURE_RADIUS_FWHM,
        help="aperture radius in FWHM (App. E: 1.125)",
    )
    parser.add_argument(
        "--annulus",
        type=float,
        nargs=2,
        default=list(ANNULUS_FWHM),
        metavar=("INNER", "OUTER"),
        help="background annulus radii in FWHM (App. E: 1.5 2.5)",
    )
    parser.add_argument(
        "--ebv-source",
        choices=EBV_SOURCES,
        default="auto",
        help="E(B-V) from the SFD map (sfd), the galaxy table's ebv (table), or sfd when --sfd-dir is given (auto)",
    )
    parser.add_argument("--sfd-dir", help="folder with SFD_dust_4096_ngp.fits and SFD_dust_4096_sgp.fits")
    parser.add_argument(
        "--background",
        choices=BACKGROUND_METHODS,
        default=PhotometrySettings.background,
        help="background: auto (default: joint where the cutout has the band's PSF image, else "
        "quadratic), quadratic surface fitted jointly with the clump's PSF to the aperture and "
        "annulus (joint), or from the annulus alone: clipped mean, median (App. E), plane, "
        "radial fit or quadratic surface",
    )
    parser.add_argument(
        "--psf-width-err-image",
        type=float,
        default=PhotometrySettings.psf_width_err_image,
        help="fractional PSF-width uncertainty with the cutout's PSF image (default 0.003)",
    )
    parser.add_argument(
        "--psf-width-err-analytic",
        type=float,
        default=PhotometrySettings.psf_width_err_analytic,
        help="fractional PSF-width uncertainty with the analytic fallback (default 0.02)",
    )
    parser.add_argument(
        "--recentre",
        action=argparse.BooleanOptionalAction,
        default=PhotometrySettings.recentre,
        help="refine the clump centres by a PSF fit in the reference band (r) before the apertures "
        "are placed (default); --no-recentre measures at the detector's centres",
    )
    parser.add_argument(
        "--no-host-mask", action="store_true", help="do not mask the area outside the host galaxy"
    )
    add_segments_option(parser)
    add_workers_option(parser)


def run(args: argparse.Namespace) -> int:
    """Run ``clumpcat photometry`` on one shard."""
    start = time.perf_counter()
    settings = PhotometrySettings(
        radius_fwhm=args.aperture_radius,
        annulus_fwhm=tuple(args.annulus),
        correction=args.aperture_correction,
        beta=args.moffat_beta,
        background=args.background,
        psf_width_err_image=args.psf_width_err_image,
        psf_width_err_analytic=args.psf_width_err_analytic,
        recentre=args.recentre,
    )
    galaxies = read_galaxies(args.galaxies)
    clumps = read_table(args.clumps)
    if "objid" in clumps.columns:
        clumps["objid"] = clumps["objid"].astype(str)
    upstream = read_status(args.status_in)
    objids = pending(galaxies["objid"], upstream)
    if not Path(args.cutouts).is_dir():
        raise InputError(f"--cutouts {args.cutouts}: no such folder")
    if args.segments and not args.no_host_mask:
        segments = read_segments(args.segments)
    elif not args.no_host_mask:  # the same definition as the segment stage's, at the galaxy's RA/Dec
        with_clumps = galaxies[galaxies["objid"].astype(str).isin(set(clumps.get("objid", [])))]
        segments = segment_shard(with_clumps, args.cutouts, status=upstream, workers=args.workers)
    else:
        segments = None
    phot, failures = photometry_shard(
        galaxies,
        clumps,
        args.cutouts,
        objids,
        bands=tuple(args.bands),
        survey=args.survey,
        settings=settings,
        ebv_source=args.ebv_source,
        sfd_dir=args.sfd_dir,
        host_mask_fn=None if args.no_host_mask else "default",
        galaxies_name=str(args.galaxies),
        segments=segments,
        workers=args.workers,
    )
    write_table(
        phot,
        args.out,
        photometry_columns(tuple(args.bands)),
        photometry_metadata(settings),
    )
    write_status(args.status_out, galaxies["objid"].tolist(), failures, upstream=upstream)
    n_gal = len({*phot["objid"]}) if len(phot) else 0
    log.info(
        "photometry: %d clumps in %d galaxies, %d failed, %.1f s",
        len(phot),
        n_gal,
        len(failures),
        time.perf_counter() - start,
    )
    return 0
