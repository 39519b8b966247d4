"""Sources on and around the host: clumps, foreground stars, background galaxies.

Counts and positions are calibrated to the Clump Scout labels (DESIGN.md,
"The real Clump Scout labels, as statistics"): 1-9 labelled sources per
image (mean 2.31), 27.6% of them ``odd`` with half the images holding one,
and centre distances of median 52 px (5-95%: 25-98 px) on the 400-px image,
i.e. 0.78 (0.375-1.47) petroR90_r since the image spans 6 petroR90_r.

Clumps are point-like and blue, sometimes in close pairs and sometimes
slightly resolved, with u-band clump/host flux ratios log-uniform over
10^-2.5 to 10^-0.5 (issue 2, item 3), so the faintest fall below
detectability. Foreground stars (label ``odd``) lie over the disc; background
galaxies lie anywhere in the cutout and are contaminants, not truth sources.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clumpcat.constants import RENDER_SIZE, SDSS_PIXEL_SCALE
from clumpcat.survey.simulate import colours
from clumpcat.survey.simulate.hosts import HostModel

__all__ = [
    "COUNT_PROBABILITIES",
    "P_IMAGE_HAS_ODD",
    "P_EXTRA_ODD",
    "LOG_FLUX_RATIO_RANGE",
    "Source",
    "BackgroundGalaxy",
    "draw_counts",
    "draw_positions",
    "draw_sources",
    "draw_background",
    "centre_distance_render_px",
]

#: Labelled sources per image, Clump Scout (DESIGN.md): 1: 26%, 2: 42%,
#: 3: 18%, 4: 8%, 5+: 6%; the 5+ bin spread over 5-9 so that the mean is 2.31.
COUNT_PROBABILITIES: dict[int, float] = {
    1: 0.26,
    2: 0.42,
    3: 0.18,
    4: 0.08,
    5: 0.06 * 0.55,
    6: 0.06 * 0.23,
    7: 0.06 * 0.12,
    8: 0.06 * 0.06,
    9: 0.06 * 0.04,
}
#: Half the Clump Scout images hold at least one ``odd`` box (DESIGN.md).
P_IMAGE_HAS_ODD = 0.5
#: Each further source of an image with an odd one is odd with this
#: probability, so that E[odd]/E[all] = 0.5 (1 + p (2.31 - 1)) / 2.31 = 27.6%.
P_EXTRA_ODD = 0.21
#: log10 of the u-band clump/host flux ratio (issue 2, item 3).
LOG_FLUX_RATIO_RANGE = (-2.5, -0.5)
#: log10 of the r-band star/host flux ratio of foreground stars.
LOG_STAR_RATIO_RANGE = (-2.5, -0.5)
#: A clump becomes one of a close pair with this probability.
P_PAIR = 0.15
#: Pair separation range in r-band PSF FWHM.
PAIR_SEPARATION_FWHM = (0.9, 2.0)
#: A single clump is slightly resolved with this probability ...
P_RESOLVED = 0.25
#: ... with an intrinsic Gaussian FWHM of this many r-band PSF FWHM.
RESOLVED_SIZE_FWHM = (0.4, 1.0)
#: Disc-plane radius of sources, log-normal in units of petroR90_r; after
#: projection the distances from the centre match Clump Scout's (median 0.78,
#: 5-95%: 0.375-1.47 petroR90_r; checked in tests/test_simulate.py).
_RADIUS_MEDIAN = 0.93
_RADIUS_SIGMA = 0.36
_RADIUS_RANGE = (0.15, 1.9)
#: Background galaxies per arcmin^2 with 18 < r < 23 (SDSS/HSC galaxy counts).
BACKGROUND_DENSITY = 2.5
_BACKGROUND_MAG_RANGE = (18.0, 23.0)
#: Slope of the background galaxy counts, d log N / dm.
_BACKGROUND_COUNT_SLOPE = 0.35


@dataclass(frozen=True)
class Source:
    """A truth source: a clump (``normal``) or a foreground star (``odd``).

    Attributes
    ----------
    kind : str
        ``clump``, ``clump_pair`` (a member of a close pair),
        ``resolved_clump`` or ``star``.
    label : str
        ``normal`` or ``odd`` (Clump Scout classes).
    x, y : float
        Centre in the cutout frame (0-based pixels).
    log_ratio : float
        log10 flux ratio to the host: u band for clumps, r band for stars.
    colours : tuple of float
        ``(u-g, g-r, r-i, i-z)``.
    size_fwhm : float
        Intrinsic Gaussian FWHM in arcsec (0 for a point source).
    """

    kind: str
    label: str
    x: float
    y: float
    log_ratio: float
    colours: tuple[float, float, float, float]
    size_fwhm: float = 0.0

    @property
    def ratio_band(self) -> str:
        """Band in which :attr:`log_ratio` is defined."""
        return "r" if self.label == "odd" else "u"


@dataclass(frozen=True)
class BackgroundGalaxy:
    """A background galaxy: a contaminant anywhere in the cutout.

    Attributes
    ----------
    x, y : float
        Centre in the cutout frame.
    mag_r : float
        Intrinsic r-band AB magnitude.
    re : float
        Half-light radius in arcsec.
    axis_ratio, beta : float
        Shape; beta in radians.
    n : float
        Sersic index, 1 (exponential) or 4 (de Vaucouleurs).
    colours : tuple of float
    """

    x: float
    y: float
    mag_r: float
    re: float
    axis_ratio: float
    beta: float
    n: float
    colours: tuple[float, float, float, float]


def draw_counts(rng: np.random.Generator) -> tuple[int, int]:
    """Number of truth sources in an image and how many of them are odd.

    Returns
    -------
    total, odd : int
        ``total`` from :data:`COUNT_PROBABILITIES`; ``odd`` is 0 for half
        the images and ``1 + Binomial(total - 1, P_EXTRA_ODD)`` otherwise.
    """
    values = np.array(list(COUNT_PROBABILITIES))
    probs = np.array(list(COUNT_PROBABILITIES.values()))
    total = int(rng.choice(values, p=probs / probs.sum()))
    odd = 0
    if rng.random() < P_IMAGE_HAS_ODD:
        odd = 1 + int(rng.binomial(total - 1, P_EXTRA_ODD))
    return total, odd


def draw_positions(rng: np.random.Generator, host: HostModel, n: int, side: int) -> np.ndarray:
    """Positions ``(n, 2)`` of sources on the projected disc, cutout frame.

    Disc-plane radius log-normal in petroR90_r (see module notes), uniform
    azimuth, then projected with the disc's axis ratio and position angle.
    """
    r90_px = host.petro_r90 / SDSS_PIXEL_SCALE
    rho = np.exp(rng.normal(np.log(_RADIUS_MEDIAN), _RADIUS_SIGMA, size=n))
    rho = np.clip(rho, *_RADIUS_RANGE) * r90_px
    phi = rng.uniform(0.0, 2.0 * np.pi, size=n)
    u, v = rho * np.cos(phi), rho * np.sin(phi) * host.axis_ratio
    cos_pa, sin_pa = np.cos(host.pa), np.sin(host.pa)
    c = (side - 1) / 2.0
    return np.column_stack([c + u * cos_pa - v * sin_pa, c + u * sin_pa + v * cos_pa])


def centre_distance_render_px(x, y, side: int):
    """Distance from the image centre in pixels of the 400-px rendered image."""
    c = (side - 1) / 2.0
    return np.hypot(np.asarray(x) - c, np.asarray(y) - c) * RENDER_SIZE / side


def draw_sources(rng: np.random.Generator, host: HostModel, side: int, fwhm_r_arcsec: float) -> list[Source]:
    """Draw the truth sources of one galaxy (no pixels).

    Parameters
    ----------
    rng : numpy.random.Generator
    host : HostModel
    side : int
        Cutout side in pixels.
    fwhm_r_arcsec : float
        r-band PSF FWHM, which sets pair separations and resolved sizes.

    Returns
    -------
    list of Source
        Stars first, then clumps; a close pair is two ``clump_pair`` entries.
    """
    total, odd = draw_counts(rng)
    fwhm_px = fwhm_r_arcsec / SDSS_PIXEL_SCALE
    positions = draw_positions(rng, host, total, side)
    out: list[Source] = []
    for k in range(odd):
        x, y = positions[k]
        ratio = rng.uniform(*LOG_STAR_RATIO_RANGE)
        out.append(Source("star", "odd", float(x), float(y), float(ratio), colours.star_colours(rng)))
    k = odd
    while k < total:
        x, y = positions[k]
        if total - k >= 2 and rng.random() < P_PAIR:
            sep = rng.uniform(*PAIR_SEPARATION_FWHM) * fwhm_px
            angle = rng.uniform(0.0, 2.0 * np.pi)
            x2, y2 = x + sep * np.cos(angle), y + sep * np.sin(angle)
            for xx, yy in ((x, y), (x2, y2)):
                ratio = rng.uniform(*LOG_FLUX_RATIO_RANGE)
                out.append(
                    Source(
                        "clump_pair", "normal", float(xx), float(yy), float(ratio), colours.clump_colours(rng)
                    )
                )
            k += 2
            continue
        ratio = rng.uniform(*LOG_FLUX_RATIO_RANGE)
        size = 0.0
        kind = "clump"
        if rng.random() < P_RESOLVED:
            size = float(rng.uniform(*RESOLVED_SIZE_FWHM) * fwhm_r_arcsec)
            kind = "resolved_clump"
        out.append(Source(kind, "normal", float(x), float(y), float(ratio), colours.clump_colours(rng), size))
        k += 1
    return out


def draw_background(rng: np.random.Generator, side: int) -> list[BackgroundGalaxy]:
    """Background galaxies uniformly over the whole cutout (no pixels).

    The number is Poisson with mean :data:`BACKGROUND_DENSITY` x the cutout
    area; magnitudes follow counts rising as 10^(0.35 m) over 18 < r < 23,
    sizes shrink for fainter galaxies.
    """
    area_arcmin2 = (side * SDSS_PIXEL_SCALE / 60.0) ** 2
    count = int(rng.poisson(BACKGROUND_DENSITY * area_arcmin2))
    lo, hi = _BACKGROUND_MAG_RANGE
    a = _BACKGROUND_COUNT_SLOPE * np.log(10.0)
    out = []
    for _ in range(count):
        # inverse CDF of p(m) ~ exp(a m) on [lo, hi]
        u = rng.random()
        mag = lo + np.log1p(u * np.expm1(a * (hi - lo))) / a
        re = float(np.exp(rng.normal(np.log(1.6), 0.35)) * 10.0 ** (-0.15 * (mag - 18.0)))
        out.append(
            BackgroundGalaxy(
                x=float(rng.uniform(0, side - 1)),
                y=float(rng.uniform(0, side - 1)),
                mag_r=float(mag),
                re=max(re, 0.25),
                axis_ratio=float(rng.uniform(0.3, 1.0)),
                beta=float(rng.uniform(0.0, np.pi)),
                n=1.0 if rng.random() < 0.7 else 4.0,
                colours=colours.background_colours(rng),
            )
        )
    return out
