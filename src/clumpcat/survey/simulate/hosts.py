"""Host galaxies of the synthetic survey: disc, bulge, spiral arms and bars.

A host is drawn as numbers (:class:`HostModel`, cheap) and rendered once per
galaxy as unit-flux component images before the PSF (:func:`host_components`);
each band is then a colour-weighted sum of the same components, so no
profile is drawn twice.

Geometry: the disc is an inclined exponential with axis ratio ``q`` and major
axis at position angle ``pa`` (radians, counter-clockwise from the cutout's
+x axis). Arms and bars live in the disc plane and are projected with the
disc. The size is set by ``petro_r90`` (arcsec): the radius holding 90% of the
disc + bulge light, which fixes the cutout side (6 x petroR90_r, App. A.1).
Spiral arms in most discs and bars in some make the survey hard in the way
real galaxies are (DESIGN.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import galsim
import numpy as np
from scipy import ndimage, optimize, special

from clumpcat.constants import CUTOUT_WIDTH_PETRO_R90, SDSS_PIXEL_SCALE
from clumpcat.survey.simulate import colours

__all__ = [
    "ArmModel",
    "BarModel",
    "HostModel",
    "P_ARMS",
    "P_BAR",
    "draw_host",
    "cutout_side",
    "r90_per_disc_re",
    "host_components",
]

#: Fraction of discs with spiral arms ("arms in most discs", DESIGN.md).
P_ARMS = 0.8
#: Fraction of discs with a bar ("bars in some", DESIGN.md).
P_BAR = 0.3
#: petroR90_r range in arcsec (issue 2, item 3) and the log-normal it is drawn
#: from: median 13.5", sigma 0.35 dex(e). With r-band FWHM 1.0-1.8" this gives
#: Clump Scout's box sides on the 400-px image (median 16.6 px, 5-95% 9-28 px;
#: DESIGN.md, boxes of side 2.5 x FWHM).
PETRO_R90_RANGE = (5.0, 25.0)
_PETRO_R90_MEDIAN = 13.5
_PETRO_R90_SIGMA = 0.35
#: b_n of a de Vaucouleurs profile (n = 4).
_B4 = 7.669
#: Exponential scale length in units of the half-light radius.
_EXP_H_PER_RE = 1.0 / 1.678
#: Bulges are drawn on a finer grid (cusp) and binned down.
_BULGE_OVERSAMPLE = 3


@dataclass(frozen=True)
class ArmModel:
    """Logarithmic spiral arms in the disc plane.

    Attributes
    ----------
    m : int
        Number of arms.
    pitch : float
        Pitch angle in radians.
    phase : float
        Rotation of the pattern in radians.
    sharpness : float
        Exponent narrowing the arms: pattern ``((1 + cos)/2) ** sharpness``.
    inner : float
        Arms fade inside this radius (disc scale lengths).
    fraction : float
        Share of the disc's r-band light in the arms.
    texture : float
        Amplitude of the smooth multiplicative texture along the arms.
    texture_seed : int
        Seed of the texture field.
    """

    m: int
    pitch: float
    phase: float
    sharpness: float
    inner: float
    fraction: float
    texture: float
    texture_seed: int


@dataclass(frozen=True)
class BarModel:
    """A bar: an elongated Gaussian in the disc plane.

    Attributes
    ----------
    fraction : float
        Share of the host's r-band light.
    re : float
        Half-light radius along the bar in arcsec.
    axis_ratio : float
        Intrinsic minor/major axis ratio.
    angle : float
        Angle from the line of nodes in the disc plane, radians.
    """

    fraction: float
    re: float
    axis_ratio: float
    angle: float


@dataclass(frozen=True)
class HostModel:
    """A disc + bulge host with optional arms and bar, before observation.

    Attributes
    ----------
    petro_r90 : float
        r-band radius holding 90% of disc + bulge light, arcsec.
    axis_ratio : float
        Disc minor/major axis ratio (cos of the inclination, thin disc).
    pa : float
        Major-axis position angle, radians counter-clockwise from +x.
    disc_re : float
        Disc half-light radius along the major axis, arcsec.
    bulge_re : float
        Bulge half-light radius, arcsec.
    bulge_axis_ratio : float
        Bulge minor/major axis ratio.
    bulge_fraction : float
        Bulge share of the host's r-band light.
    flux_r : float
        Total intrinsic (unreddened) r-band flux of the host, nanomaggies.
    disc_colours, bulge_colours, arm_colours : tuple of float
        ``(u-g, g-r, r-i, i-z)`` of each component (the bar has bulge colours).
    arms : ArmModel or None
    bar : BarModel or None
    """

    petro_r90: float
    axis_ratio: float
    pa: float
    disc_re: float
    bulge_re: float
    bulge_axis_ratio: float
    bulge_fraction: float
    flux_r: float
    disc_colours: tuple[float, float, float, float]
    bulge_colours: tuple[float, float, float, float]
    arm_colours: tuple[float, float, float, float]
    arms: ArmModel | None
    bar: BarModel | None

    def component_fluxes(self) -> dict[str, np.ndarray]:
        """Intrinsic ugriz flux (nanomaggies) of each component present."""
        bar_frac = self.bar.fraction if self.bar else 0.0
        disc_frac = 1.0 - self.bulge_fraction - bar_frac
        arm_frac = disc_frac * (self.arms.fraction if self.arms else 0.0)
        out = {
            "disc": (disc_frac - arm_frac) * self.flux_r * colours.colours_to_sed(self.disc_colours),
            "bulge": self.bulge_fraction * self.flux_r * colours.colours_to_sed(self.bulge_colours),
        }
        if self.arms:
            out["arms"] = arm_frac * self.flux_r * colours.colours_to_sed(self.arm_colours)
        if self.bar:
            out["bar"] = bar_frac * self.flux_r * colours.colours_to_sed(self.bulge_colours)
        return out

    def flux(self) -> np.ndarray:
        """Total intrinsic ugriz flux of the host in nanomaggies."""
        return np.sum(list(self.component_fluxes().values()), axis=0)


def cutout_side(petro_r90: float, scale: float = SDSS_PIXEL_SCALE) -> int:
    """Cutout side in pixels: 6 x petroR90_r (App. A.1)."""
    return int(np.rint(CUTOUT_WIDTH_PETRO_R90 * petro_r90 / scale))


def _enclosed(r: float, bulge_fraction: float, bulge_ratio: float) -> float:
    """Light fraction of disc (re = 1) + de Vaucouleurs bulge (re = bulge_ratio) inside r."""
    x = r / _EXP_H_PER_RE
    disc = 1.0 - (1.0 + x) * np.exp(-x)
    bulge = special.gammainc(8.0, _B4 * (r / bulge_ratio) ** 0.25)
    return (1.0 - bulge_fraction) * disc + bulge_fraction * bulge


@lru_cache(maxsize=4096)
def r90_per_disc_re(bulge_fraction: float, bulge_ratio: float, level: float = 0.9) -> float:
    """Radius holding ``level`` of disc + bulge light, in disc half-light radii."""
    return float(optimize.brentq(lambda r: _enclosed(r, bulge_fraction, bulge_ratio) - level, 1e-4, 50.0))


def draw_host(rng: np.random.Generator) -> HostModel:
    """Draw a host's structure, size and brightness (no pixels).

    The r-band mean surface brightness inside the half-light radius is
    N(21.2, 0.4) mag/arcsec^2, typical of SDSS spirals, which makes hosts of
    r ~ 14-17.5 mag over the petroR90_r range.
    """
    r90 = _PETRO_R90_MEDIAN
    for _ in range(100):  # log-normal truncated to PETRO_R90_RANGE
        r90 = float(np.exp(rng.normal(np.log(_PETRO_R90_MEDIAN), _PETRO_R90_SIGMA)))
        if PETRO_R90_RANGE[0] <= r90 <= PETRO_R90_RANGE[1]:
            break
    r90 = float(np.clip(r90, *PETRO_R90_RANGE))
    q = float(rng.uniform(0.35, 1.0))
    pa = float(rng.uniform(0.0, np.pi))
    bulge_fraction = float(rng.uniform(0.0, 0.35))
    bulge_ratio = float(rng.uniform(0.10, 0.25))
    r90_units = r90_per_disc_re(round(bulge_fraction, 4), round(bulge_ratio, 4))
    disc_re = r90 / r90_units
    re_half = r90_per_disc_re(round(bulge_fraction, 4), round(bulge_ratio, 4), 0.5) * disc_re
    mu_e = rng.normal(21.2, 0.4)
    mag_r = mu_e - 2.5 * np.log10(2.0 * np.pi * re_half**2 * q)
    arms = None
    # Arm strength, sharpness and texture are tuned so that the classical peak
    # finder of clumpcat.evaluation.baseline reaches purity ~0.6-0.7 at score 0.5 on this
    # survey (0.88 without arms, bars and background galaxies): DESIGN.md
    # measured 0.57-0.79 on galaxies with such structure.
    if rng.random() < P_ARMS:
        arms = ArmModel(
            m=int(rng.choice([2, 2, 2, 3, 4])),
            pitch=float(np.deg2rad(rng.uniform(10.0, 30.0))),
            phase=float(rng.uniform(0.0, 2.0 * np.pi)),
            sharpness=float(rng.uniform(1.5, 3.5)),
            inner=float(rng.uniform(0.4, 1.2)),
            fraction=float(rng.uniform(0.15, 0.4)),
            texture=float(rng.uniform(0.0, 0.15)),
            texture_seed=int(rng.integers(2**31)),
        )
    bar = None
    if rng.random() < P_BAR:
        bar = BarModel(
            fraction=float(rng.uniform(0.04, 0.12)),
            re=float(rng.uniform(0.4, 0.9) * disc_re),
            axis_ratio=float(rng.uniform(0.2, 0.4)),
            angle=float(rng.uniform(0.0, np.pi)),
        )
    return HostModel(
        petro_r90=r90,
        axis_ratio=q,
        pa=pa,
        disc_re=float(disc_re),
        bulge_re=float(bulge_ratio * disc_re),
        bulge_axis_ratio=float(rng.uniform(max(q, 0.6), 1.0)),
        bulge_fraction=bulge_fraction,
        flux_r=float(10.0 ** (-0.4 * (mag_r - 22.5))),
        disc_colours=colours.disc_colours(rng),
        bulge_colours=colours.bulge_colours(rng),
        arm_colours=colours.arm_colours(rng),
        arms=arms,
        bar=bar,
    )


def _incline(profile: galsim.GSObject, q: float, pa: float) -> galsim.GSObject:
    """Project a disc-plane profile: squash by q across the line of nodes, rotate to pa."""
    return profile.shear(q=q, beta=0.0 * galsim.radians).dilate(np.sqrt(q)).rotate(pa * galsim.radians)


def _normalised(image: np.ndarray) -> np.ndarray:
    total = image.sum()
    return image / total if total > 0 else image


def _draw(profile: galsim.GSObject, n: int, scale: float) -> np.ndarray:
    image = galsim.ImageD(n, n, scale=scale)
    profile.drawImage(image=image, method="no_pixel")
    return image.array


def _draw_bulge(profile: galsim.GSObject, n: int, scale: float, re_px: float) -> np.ndarray:
    """Draw a cuspy bulge on a finer grid near the centre and bin it down."""
    half = int(min(n // 2, np.ceil(20.0 * re_px)))
    side = 2 * half + 1 if n % 2 else 2 * half
    side = min(side, n)
    k = _BULGE_OVERSAMPLE
    fine = galsim.ImageD(side * k, side * k, scale=scale / k)
    profile.drawImage(image=fine, method="no_pixel")
    binned = fine.array.reshape(side, k, side, k).sum(axis=(1, 3))
    out = np.zeros((n, n))
    o = (n - side) // 2
    out[o : o + side, o : o + side] = binned
    return out


def _arm_pattern(host: HostModel, n: int, scale: float) -> np.ndarray:
    """Spiral-arm modulation (0..~1.4) of the disc in the image plane."""
    arms = host.arms
    c = (n - 1) / 2.0
    yy, xx = np.mgrid[0:n, 0:n]
    dx, dy = xx - c, yy - c
    cos_pa, sin_pa = np.cos(host.pa), np.sin(host.pa)
    u = dx * cos_pa + dy * sin_pa
    v = (-dx * sin_pa + dy * cos_pa) / host.axis_ratio
    h_px = host.disc_re * _EXP_H_PER_RE / scale
    rho = np.hypot(u, v) / h_px + 1e-3
    theta = np.arctan2(v, u)
    wave = np.cos(arms.m * (theta - np.log(rho) / np.tan(arms.pitch)) + arms.phase)
    pattern = (0.5 * (1.0 + wave)) ** arms.sharpness
    pattern *= 1.0 - np.exp(-((rho / arms.inner) ** 2))
    if arms.texture > 0:
        field = np.random.default_rng(arms.texture_seed).standard_normal((n, n))
        field = ndimage.gaussian_filter(field, sigma=max(1.5, 0.15 * h_px), mode="wrap")
        field /= field.std() or 1.0
        pattern *= np.clip(1.0 + arms.texture * field, 0.0, None)
    return pattern


def host_components(host: HostModel, n: int, scale: float = SDSS_PIXEL_SCALE) -> dict[str, np.ndarray]:
    """Unit-flux images of the host's components before the PSF.

    Parameters
    ----------
    host : HostModel
    n : int
        Side of the square cutout in pixels; the host is centred on the
        image centre, pixel ``((n - 1) / 2, (n - 1) / 2)``.
    scale : float
        Pixel scale in arcsec.

    Returns
    -------
    dict of str to ndarray
        ``disc``, ``bulge`` and, where present, ``arms`` and ``bar``; each
        sums to 1 and is sampled at pixel centres (the PSF kernel carries the
        pixel response). Multiply by :meth:`HostModel.component_fluxes`.
    """
    q, pa = host.axis_ratio, host.pa
    disc = _draw(_incline(galsim.Exponential(half_light_radius=host.disc_re), q, pa), n, scale)
    out = {"disc": _normalised(disc)}
    bulge = galsim.DeVaucouleurs(half_light_radius=host.bulge_re).shear(
        q=host.bulge_axis_ratio, beta=pa * galsim.radians
    )
    out["bulge"] = _normalised(_draw_bulge(bulge, n, scale, host.bulge_re / scale))
    if host.arms:
        out["arms"] = _normalised(disc * _arm_pattern(host, n, scale))
    if host.bar:
        b = host.bar
        bar = galsim.Gaussian(half_light_radius=b.re * np.sqrt(b.axis_ratio)).shear(
            q=b.axis_ratio, beta=b.angle * galsim.radians
        )
        out["bar"] = _normalised(_draw(_incline(bar, q, pa), n, scale))
    return out
