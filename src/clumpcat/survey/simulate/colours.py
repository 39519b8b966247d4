"""Broad-band colours of the synthetic survey's populations.

Every population's spectral energy distribution is reduced to four SDSS
colours ``(u-g, g-r, r-i, i-z)`` and turned into flux factors relative to the
r band. Clumps are young and blue, host bulges old and red, discs in between,
foreground stars follow the stellar locus, background galaxies are redshifted
and red (DESIGN.md, "The synthetic survey must be hard").

The numbers are plausible SDSS colours (Covey et al. 2007 for the stellar
locus; Strateva et al. 2001 for galaxies; young star-forming knots with
H-alpha in the r band, Adams et al. 2022), not fits to any data set.
"""

from __future__ import annotations

import numpy as np

from clumpcat.constants import SDSS_BANDS

__all__ = [
    "colours_to_sed",
    "bulge_colours",
    "disc_colours",
    "arm_colours",
    "clump_colours",
    "star_colours",
    "background_colours",
]

#: Index of the r band in :data:`clumpcat.constants.SDSS_BANDS`.
_R = SDSS_BANDS.index("r")


def colours_to_sed(colours) -> np.ndarray:
    """Flux in each SDSS band relative to the r band.

    Parameters
    ----------
    colours : sequence of 4 floats
        ``(u-g, g-r, r-i, i-z)`` in AB magnitudes.

    Returns
    -------
    ndarray, shape (5,)
        ``f_b / f_r`` for b = u, g, r, i, z.

    Examples
    --------
    >>> colours_to_sed((0.0, 0.0, 0.0, 0.0))
    array([1., 1., 1., 1., 1.])
    """
    ug, gr, ri, iz = (float(c) for c in colours)
    rel_mag = np.array([ug + gr, gr, 0.0, -ri, -ri - iz])
    return 10.0 ** (-0.4 * rel_mag)


def bulge_colours(rng: np.random.Generator) -> tuple[float, float, float, float]:
    """Old, red bulge or bar light (early-type colours, Strateva et al. 2001)."""
    return (
        rng.normal(1.75, 0.10),
        rng.normal(0.78, 0.04),
        rng.normal(0.40, 0.03),
        rng.normal(0.32, 0.04),
    )


def disc_colours(rng: np.random.Generator) -> tuple[float, float, float, float]:
    """Star-forming disc light: between the bulge and the clumps."""
    gr = rng.uniform(0.35, 0.65)
    return (
        1.05 + 1.2 * (gr - 0.35) + rng.normal(0.0, 0.08),
        gr,
        0.22 + 0.3 * (gr - 0.35) + rng.normal(0.0, 0.03),
        0.12 + 0.3 * (gr - 0.35) + rng.normal(0.0, 0.03),
    )


def arm_colours(rng: np.random.Generator) -> tuple[float, float, float, float]:
    """Spiral-arm light: young populations, bluer than the disc."""
    gr = rng.uniform(0.10, 0.35)
    return (
        0.85 + 1.0 * (gr - 0.1) + rng.normal(0.0, 0.06),
        gr,
        0.12 + rng.normal(0.0, 0.03),
        0.05 + rng.normal(0.0, 0.03),
    )


def clump_colours(rng: np.random.Generator) -> tuple[float, float, float, float]:
    """Young star-forming clump: blue u-g and g-r, H-alpha lifting r (small r-i)."""
    return (
        rng.uniform(0.35, 1.00),
        rng.uniform(-0.20, 0.35),
        rng.uniform(-0.30, 0.20),
        rng.uniform(-0.20, 0.20),
    )


def star_colours(rng: np.random.Generator) -> tuple[float, float, float, float]:
    """A main-sequence star on the SDSS stellar locus (Covey et al. 2007).

    The locus is parametrised by g-r from F to mid-M stars; r-i rises steeply
    for M dwarfs (g-r > 1.15).
    """
    gr = rng.uniform(0.25, 1.45)
    ri = 0.38 * gr - 0.03 + 4.0 * max(0.0, gr - 1.15) + rng.normal(0.0, 0.04)
    return (
        0.60 + 1.30 * gr + rng.normal(0.0, 0.08),
        gr,
        ri,
        0.02 + 0.50 * ri + rng.normal(0.0, 0.03),
    )


def background_colours(rng: np.random.Generator) -> tuple[float, float, float, float]:
    """A redshifted background galaxy (z ~ 0.2-0.8): red g-r and r-i."""
    return (
        rng.uniform(1.0, 2.4),
        rng.uniform(0.6, 1.6),
        rng.uniform(0.3, 0.9),
        rng.uniform(0.1, 0.5),
    )
