"""Observing conditions of a synthetic galaxy: sky noise, seeing range, PSF shape.

Real survey images differ (DESIGN.md, "Observing conditions vary"; issue 10):
SDSS sky noise varies by about x0.7 to x2 across fields (moon, airmass),
coadds (Stripe 82, HSC) are several times deeper, seeing runs from 0.9" to
2.2", and PSF wings from nearly Gaussian to strong (SDSS photo fits a double
Gaussian plus a power law). The ``varied`` survey draws each galaxy's
conditions over that span; ``nominal`` is the single SDSS condition the
simulator used before (x1 noise, Moffat beta 4.765, seeing 1.0-1.8").

Conditions come from their own random stream, ``default_rng([seed, index,
2])``, with a fixed number of draws, so fixing one condition (a setting) or
switching between ``varied`` and ``nominal`` leaves the galaxy and its other
conditions as they were. The seeing is drawn with the galaxy (stream 0, it
sets clump-pair separations) from the range :func:`seeing_range` gives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clumpcat.survey.psf import PSF_FAMILIES
from clumpcat.survey.simulate import observe
from clumpcat.survey.simulate.psfs import PsfShape
from clumpcat.tables import ColumnDoc

__all__ = [
    "CONDITION_MODES",
    "NOMINAL_BETA",
    "SKY_NOISE_RANGE",
    "COADD_NOISE_SCALE",
    "P_COADD",
    "SEEING_RANGE",
    "NOMINAL_SEEING_RANGE",
    "FAMILY_PROBABILITIES",
    "BETA_RANGE",
    "WING_FRACTION_RANGE",
    "WING_RATIO_RANGE",
    "CONDITION_COLUMNS",
    "Conditions",
    "seeing_range",
    "draw_conditions",
]

#: ``varied``: drawn per galaxy; ``nominal``: one SDSS condition.
CONDITION_MODES: tuple[str, ...] = ("varied", "nominal")
#: Moffat index of the nominal PSF (Trujillo et al. 2001, Kolmogorov turbulence).
NOMINAL_BETA = observe.PSF_BETA
#: Single-epoch sky noise in units of nominal SDSS's (moon, airmass; issue 10),
#: drawn log-uniformly.
SKY_NOISE_RANGE = (0.6, 2.2)
#: Deep coadds (Stripe 82, HSC-like): sky noise x0.3 of SDSS ...
COADD_NOISE_SCALE = 0.3
#: ... for this share of the galaxies.
P_COADD = 0.125
#: r-band seeing (half-maximum FWHM of the pixel-integrated PSF), arcsec.
SEEING_RANGE = (0.9, 2.2)
#: The nominal survey's seeing range (issue 2, item 3).
NOMINAL_SEEING_RANGE = observe.PSF_FWHM_R_RANGE
#: PSF families from nearly Gaussian to strong wings.
FAMILY_PROBABILITIES: dict[str, float] = {"gaussian": 0.2, "moffat": 0.5, "double_gaussian": 0.3}
#: Moffat index: 2.5 (strong wings) to 6 (close to a Gaussian core).
BETA_RANGE = (2.5, 6.0)
#: Double Gaussian as SDSS photo models it: 8-20% of the flux in a wing
#: about twice as wide as the core.
WING_FRACTION_RANGE = (0.08, 0.20)
WING_RATIO_RANGE = (1.8, 2.5)

#: The galaxy-table columns of the conditions (truth; optional columns).
CONDITION_COLUMNS: dict[str, ColumnDoc] = {
    "sky_noise_scale": (
        "",
        "Sky noise per pixel in units of nominal SDSS's (observe.sky_sigma; r: 0.033 nanomaggy); "
        "below 0.6 a deep coadd",
    ),
    "psf_family": ("", "PSF shape of every band: gaussian, moffat or double_gaussian"),
    "psf_beta": ("", "Moffat index of the PSF (NaN if not a Moffat)"),
    "psf_wing_fraction": ("", "Share of the PSF flux in the wider Gaussian (NaN if not a double Gaussian)"),
    "psf_wing_ratio": ("", "Wing sigma / core sigma of the PSF (NaN if not a double Gaussian)"),
}


@dataclass(frozen=True)
class Conditions:
    """How one galaxy is observed (its per-band seeing is in the galaxy model).

    Attributes
    ----------
    sky_noise_scale : float
        Sky noise per pixel in units of :func:`observe.sky_sigma`.
    exposure : float
        Exposure in units of one SDSS exposure: 1 for a single epoch (a
        brighter or darker sky changes the sky noise, not the source's photon
        count), ``1 / sky_noise_scale^2`` for a coadd, whose sources' Poisson
        noise falls with the sky's.
    psf : PsfShape
    """

    sky_noise_scale: float
    exposure: float
    psf: PsfShape

    def columns(self) -> dict:
        """The galaxy-table values of :data:`CONDITION_COLUMNS`."""
        return {
            "sky_noise_scale": float(self.sky_noise_scale),
            "psf_family": self.psf.family,
            "psf_beta": float(self.psf.beta),
            "psf_wing_fraction": float(self.psf.wing_fraction),
            "psf_wing_ratio": float(self.psf.wing_ratio),
        }


def _check_mode(conditions: str) -> None:
    if conditions not in CONDITION_MODES:
        raise ValueError(f"conditions must be one of {', '.join(CONDITION_MODES)}, got {conditions!r}")


def seeing_range(conditions: str = "varied") -> tuple[float, float]:
    """Range of the r-band seeing (arcsec) the galaxy's FWHM is drawn uniformly from."""
    _check_mode(conditions)
    return SEEING_RANGE if conditions == "varied" else NOMINAL_SEEING_RANGE


def _exposure(scale: float) -> float:
    # Below the single-epoch range only a coadd reaches: more exposure.
    return 1.0 / scale**2 if scale < SKY_NOISE_RANGE[0] else 1.0


def draw_conditions(
    seed: int,
    index: int,
    conditions: str = "varied",
    sky_noise_scale: float | None = None,
    psf_family: str | None = None,
) -> Conditions:
    """Draw the observing conditions of galaxy ``index`` of survey ``seed``.

    Parameters
    ----------
    seed, index : int
        The galaxy (its own random stream).
    conditions : {'varied', 'nominal'}
        ``varied`` draws the sky noise (x0.6-2.2 log-uniform, a share
        :data:`P_COADD` of coadds at x0.3) and the PSF family and its
        parameters; ``nominal`` is x1 and a Moffat of beta 4.765.
    sky_noise_scale : float, optional
        Fixes the sky noise scale (> 0) of every galaxy.
    psf_family : str, optional
        Fixes the PSF family; its parameters are still drawn (a ``nominal``
        Moffat keeps beta 4.765).

    Returns
    -------
    Conditions
    """
    _check_mode(conditions)
    if sky_noise_scale is not None and not sky_noise_scale > 0:
        raise ValueError(f"sky_noise_scale must be > 0, got {sky_noise_scale}")
    if psf_family is not None and psf_family not in PSF_FAMILIES:
        raise ValueError(f"psf_family must be one of {', '.join(PSF_FAMILIES)}, got {psf_family!r}")
    rng = np.random.default_rng([seed, index, 2])
    # Always the same draws in the same order, whatever is fixed.
    coadd = rng.random() < P_COADD
    log_scale = rng.uniform(*np.log(SKY_NOISE_RANGE))
    families = list(FAMILY_PROBABILITIES)
    probs = np.array(list(FAMILY_PROBABILITIES.values()))
    drawn_family = families[int(rng.choice(len(families), p=probs / probs.sum()))]
    beta = float(rng.uniform(*BETA_RANGE))
    wing_fraction = float(rng.uniform(*WING_FRACTION_RANGE))
    wing_ratio = float(rng.uniform(*WING_RATIO_RANGE))

    if sky_noise_scale is not None:
        scale = float(sky_noise_scale)
    elif conditions == "nominal":
        scale = 1.0
    else:
        scale = COADD_NOISE_SCALE if coadd else float(np.exp(log_scale))
    family = psf_family or ("moffat" if conditions == "nominal" else drawn_family)
    if family == "moffat":
        psf = PsfShape("moffat", beta=NOMINAL_BETA if conditions == "nominal" else beta)
    elif family == "double_gaussian":
        psf = PsfShape("double_gaussian", wing_fraction=wing_fraction, wing_ratio=wing_ratio)
    else:
        psf = PsfShape("gaussian")
    return Conditions(sky_noise_scale=scale, exposure=_exposure(scale), psf=psf)
