"""Tests of clumpcat.photometry.apertures and clumpcat.photometry.aperture_correction (App. E).

Two accuracy tests check the flux recovery and pulls of issue item 6: one on
a small set of the project's simulator (Moffat PSF, discs with bulges, arms
and bars, background galaxies; ``clumpcat.survey.simulate``), one on simple
synthetic galaxies: exponential discs with pixel-integrated Gaussian-PSF
point sources of known ugriz flux, noise drawn from the IVAR planes.
``make_synthetic_galaxy`` is reused by ``benchmarks/bench_photometry.py``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from astropy.wcs import WCS
from scipy.special import erf

from clumpcat.constants import APERTURE_RADIUS_FWHM, EXTINCTION_R, NANOMAGGY_JY, SDSS_BANDS, SDSS_PIXEL_SCALE
from clumpcat.errors import InputError
from clumpcat.photometry.aperture_correction import (
    aperture_correction,
    encircled_energy,
    gaussian_aperture_correction,
    moffat_aperture_correction,
)
from clumpcat.photometry.apertures import (
    PHOT_FLAGS,
    PhotometrySettings,
    add_magnitudes,
    measure_band,
    measure_galaxy,
    photometry_columns,
    photometry_shard,
)
from clumpcat.survey.cutouts import Cutout, write_cutout
from clumpcat.survey.psf import draw_psf

#: Per-band PSF FWHM in arcsec (SDSS-like: u and z broader).
FWHM = {"u": 1.6, "g": 1.45, "r": 1.35, "i": 1.3, "z": 1.4}
#: Per-band sky noise per pixel in nanomaggies (SDSS-like).
SKY_SIGMA = {"u": 0.08, "g": 0.025, "r": 0.03, "i": 0.045, "z": 0.12}
#: Clump colours relative to r, in magnitudes (blue star-forming clumps).
CLUMP_COLOUR = {"u": 1.0, "g": 0.2, "r": 0.0, "i": -0.05, "z": -0.1}
#: Disc colours relative to r.
DISC_COLOUR = {"u": 1.6, "g": 0.5, "r": 0.0, "i": -0.3, "z": -0.5}


def tan_wcs(shape, ra=180.0, dec=20.0, scale=SDSS_PIXEL_SCALE) -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.crpix = [(shape[1] + 1) / 2, (shape[0] + 1) / 2]
    wcs.wcs.cdelt = [-scale / 3600.0, scale / 3600.0]
    return wcs


def point_source(shape, x, y, fwhm_px, flux, effective=False) -> np.ndarray:
    """A pixel-integrated circular Gaussian of total ``flux`` at ``(x, y)``.

    With ``effective``, ``fwhm_px`` is the FWHM of the pixelated image (as a
    PSF measured on stars is), so the Gaussian before pixel integration has
    ``sigma^2 = (fwhm / 2.3548)^2 - 1/12``.
    """
    sigma = fwhm_px / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    if effective:
        sigma = np.sqrt(sigma**2 - 1.0 / 12.0)
    edges_x = (np.arange(shape[1] + 1) - 0.5 - x) / (np.sqrt(2.0) * sigma)
    edges_y = (np.arange(shape[0] + 1) - 0.5 - y) / (np.sqrt(2.0) * sigma)
    px = 0.5 * np.diff(erf(edges_x))
    py = 0.5 * np.diff(erf(edges_y))
    return flux * np.outer(py, px)


def make_synthetic_galaxy(
    rng: np.random.Generator,
    objid: str = "g0",
    *,
    size: int = 96,
    n_clumps: int = 3,
    r_mag_range: tuple[float, float] = (17.8, 20.0),
    disc_r_mag: float = 16.0,
    scale_px: float = 9.0,
    ebv: float = 0.0,
    min_sep_fwhm: float = 4.0,
    with_ivar: bool = True,
    with_psf: bool = False,
):
    """A synthetic 5-band cutout with clumps of known flux and its truth.

    Returns
    -------
    cutout : Cutout
    truth : DataFrame
        ``objid, x, y, ra, dec``, ``true_flux_<b>`` (observed, reddened
        nanomaggies), ``true_mag0_<b>`` (intrinsic AB magnitudes).
    host_mask : ndarray of bool
        True within 3.5 scale lengths of the centre.
    """
    shape = (size, size)
    wcs = tan_wcs(shape, ra=rng.uniform(10, 350), dec=rng.uniform(-5, 60))
    yy, xx = np.mgrid[:size, :size]
    c = (size - 1) / 2
    rad = np.hypot(xx - c, yy - c)
    disc_shape = np.exp(-rad / scale_px)
    disc_shape /= disc_shape.sum()
    fwhm_px = {b: FWHM[b] / SDSS_PIXEL_SCALE for b in SDSS_BANDS}
    max_fwhm = max(fwhm_px.values())
    pos = []
    while len(pos) < n_clumps:
        r = rng.uniform(1.0, 2.2) * scale_px
        phi = rng.uniform(0, 2 * np.pi)
        p = (c + r * np.cos(phi) + rng.uniform(-0.5, 0.5), c + r * np.sin(phi) + rng.uniform(-0.5, 0.5))
        if all(np.hypot(p[0] - q[0], p[1] - q[1]) > min_sep_fwhm * max_fwhm for q in pos):
            pos.append(p)
    r_mags = rng.uniform(*r_mag_range, n_clumps)
    ext = {b: EXTINCTION_R[b] * ebv for b in SDSS_BANDS}
    images, ivars = {}, {}
    truth = {"objid": [objid] * n_clumps, "x": [p[0] for p in pos], "y": [p[1] for p in pos]}
    for b in SDSS_BANDS:
        model = 10 ** ((22.5 - disc_r_mag - DISC_COLOUR[b] - ext[b]) / 2.5) * disc_shape
        mag0 = r_mags + CLUMP_COLOUR[b]
        flux = 10 ** ((22.5 - mag0 - ext[b]) / 2.5)
        for (x, y), f in zip(pos, flux, strict=True):
            model = model + point_source(shape, x, y, fwhm_px[b], f, effective=True)
        # Sky noise plus a little source photon noise, both in the IVAR.
        var = SKY_SIGMA[b] ** 2 + 0.002 * np.clip(model, 0, None)
        images[b] = (model + rng.normal(0.0, np.sqrt(var))).astype(np.float32)
        ivars[b] = (1.0 / var).astype(np.float32)
        truth[f"true_flux_{b}"] = flux
        truth[f"true_mag0_{b}"] = mag0
    ra, dec = wcs.pixel_to_world_values(np.array(truth["x"]), np.array(truth["y"]))
    truth["ra"], truth["dec"] = ra, dec
    cutout = Cutout(objid, images, wcs, dict(FWHM), ivars if with_ivar else {})
    if with_psf:  # the clumps' own PSF: a Gaussian of pixelated FWHM fwhm_px
        pre = {b: np.sqrt(fwhm_px[b] ** 2 - 8 * np.log(2) / 12) for b in SDSS_BANDS}
        cutout.psf = {b: draw_psf("gaussian", pre[b], half_width=int(5 * fwhm_px[b])) for b in SDSS_BANDS}
    return cutout, pd.DataFrame(truth), rad < 3.5 * scale_px


def clumps_from_truth(truth: pd.DataFrame) -> pd.DataFrame:
    half = 8.0
    out = truth[["objid", "x", "y", "ra", "dec"]].copy()
    out["box_x0"], out["box_x1"] = out["x"] - half, out["x"] + half
    out["box_y0"], out["box_y1"] = out["y"] - half, out["y"] + half
    out["score"] = 0.9
    out["label"] = "normal"
    out["fwhm_r_px"] = FWHM["r"] / SDSS_PIXEL_SCALE
    return out


# --------------------------------------------------------------------------- aperture corrections


def test_gaussian_correction_formula():
    k = APERTURE_RADIUS_FWHM
    assert gaussian_aperture_correction(k) == pytest.approx(1.0 / (1.0 - 2.0 ** (-4 * k * k)))
    assert gaussian_aperture_correction(1.125) == pytest.approx(1.0308, abs=1e-4)
    # A larger aperture needs less correction.
    assert gaussian_aperture_correction(2.0) < gaussian_aperture_correction(1.0)


def test_gaussian_correction_matches_pixelated_psf():
    fwhm = 12.0  # well sampled, so pixelisation is negligible
    image = point_source((151, 151), 75.0, 75.0, fwhm, 1.0)
    from photutils.aperture import CircularAperture, aperture_photometry

    enclosed = float(aperture_photometry(image, CircularAperture((75, 75), 1.125 * fwhm))["aperture_sum"][0])
    assert enclosed == pytest.approx(encircled_energy(1.125), rel=1e-3)


def test_moffat_correction():
    k = 1.125
    assert (
        moffat_aperture_correction(k, 2.5)
        > moffat_aperture_correction(k, 4.765)
        > gaussian_aperture_correction(k)
    )
    # A Moffat profile tends to a Gaussian for large beta.
    assert moffat_aperture_correction(k, 1e5) == pytest.approx(gaussian_aperture_correction(k), rel=1e-3)
    assert aperture_correction(k, "moffat", 3.0) == moffat_aperture_correction(k, 3.0)
    assert np.allclose(encircled_energy(np.array([0.5, 1.0]), "moffat", 3.0) < 1, True)


def test_annulus_aware_correction():
    k, ann = APERTURE_RADIUS_FWHM, (1.5, 2.5)
    # Gaussian: the PSF light in the annulus is negligible (< 0.1%).
    assert aperture_correction(k, annulus_fwhm=ann) == pytest.approx(
        gaussian_aperture_correction(k), rel=1e-3
    )
    # Moffat beta = 4.765: ~1.2% more than the plain correction.
    plain = moffat_aperture_correction(k)
    assert aperture_correction(k, "moffat", annulus_fwhm=ann) / plain == pytest.approx(1.0 + 0.012, abs=0.003)
    with pytest.raises(ValueError, match="0 < inner < outer"):
        aperture_correction(k, annulus_fwhm=(2.5, 1.5))


def test_moffat_point_source_recovered():
    """A Moffat PSF measured with the Moffat correction (mean background)."""
    from clumpcat.photometry.aperture_correction import MOFFAT_BETA

    fwhm = 8.0  # well sampled
    yy, xx = np.mgrid[:121, :121]
    alpha = fwhm / (2 * np.sqrt(2 ** (1 / MOFFAT_BETA) - 1))
    image = (
        (MOFFAT_BETA - 1)
        / (np.pi * alpha**2)
        * (1 + ((xx - 60) ** 2 + (yy - 60) ** 2) / alpha**2) ** -MOFFAT_BETA
    )
    res = measure_band(image * 10.0, [60.0], [60.0], fwhm, settings=PhotometrySettings(correction="moffat"))
    assert res["flux"][0] == pytest.approx(10.0, rel=0.005)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"radius_fwhm": 0.0}, "must be finite and > 0"),
        ({"radius_fwhm": 1.0, "profile": "airy"}, "must be one of gaussian, moffat"),
        ({"radius_fwhm": 1.0, "profile": "moffat", "beta": 1.0}, "beta must be > 1"),
    ],
)
def test_correction_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        encircled_energy(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"radius_fwhm": -1.0}, "aperture radius must be > 0"),
        ({"annulus_fwhm": (1.0, 2.5)}, "annulus must satisfy"),
        ({"correction": "airy"}, "--aperture-correction must be one of"),
        ({"correction": "moffat", "beta": 0.5}, "--moffat-beta must be > 1"),
        ({"min_bkg_fraction": 2.0}, "min_bkg_fraction"),
        ({"background": "mode"}, "--background must be one of"),
    ],
)
def test_settings_errors(kwargs, match):
    with pytest.raises(InputError, match=match):
        PhotometrySettings(**kwargs)


# --------------------------------------------------------------------------- one band


def test_measure_band_noiseless_point_source():
    shape = (64, 64)
    fwhm = 3.5
    # FWHM of the pixelated image, as PSF_FWHM states it: the fallback's shape.
    image = point_source(shape, 30.3, 33.6, fwhm, 25.0, effective=True) + 0.7
    res = measure_band(image, [30.3], [33.6], fwhm)
    assert res["bkg"][0] == pytest.approx(0.7, abs=2e-3)
    assert res["flux"][0] == pytest.approx(25.0, rel=0.005)
    assert res["flag"][0] == 0
    # The annulus-only estimators do not lean on the PSF's core: a PSF 1%
    # wider than stated (pixel integration left out) moves their flux by
    # ~1%, the joint fit's by ~1.5%.
    image = point_source(shape, 30.3, 33.6, fwhm, 25.0) + 0.7
    for background, tol in (("quadratic", 0.015), ("joint", 0.025)):
        res = measure_band(image, [30.3], [33.6], fwhm, settings=PhotometrySettings(background=background))
        assert res["flux"][0] == pytest.approx(25.0, rel=tol)
    # 1 / EE of the Gaussian fallback drawn on the pixel grid: the analytic
    # value up to the aperture's pixelisation.
    assert res["correction"][0] == pytest.approx(gaussian_aperture_correction(APERTURE_RADIUS_FWHM), rel=5e-3)
    assert res["apcorr_source"][0] == "gaussian"


def test_other_clumps_and_off_host_area_are_masked():
    shape = (80, 80)
    fwhm = 3.5
    x = np.array([40.0, 40.0 + 2.2 * fwhm])  # neighbour inside the first clump's annulus
    y = np.array([40.0, 40.0])
    image = point_source(shape, x[0], y[0], fwhm, 20.0) + point_source(shape, x[1], y[1], fwhm, 100.0) + 1.0
    # Off the host (x < 36), the image holds unrelated bright light.
    host = np.ones(shape, bool)
    host[:, :36] = False
    image[:, :36] += 50.0
    masked = measure_band(image, x, y, fwhm, host_mask=host)
    assert masked["bkg"][0] == pytest.approx(1.0, abs=0.005)
    # The neighbour's own wing inside the aperture remains (~3%).
    assert masked["flux"][0] == pytest.approx(20.0, rel=0.05)
    no_host = measure_band(image, x, y, fwhm)
    assert no_host["bkg"][0] > 5.0
    no_clump_mask = measure_band(
        image, x, y, fwhm, host_mask=host, settings=PhotometrySettings(clump_mask_fwhm=0.0)
    )
    assert no_clump_mask["n_bkg"][0] > masked["n_bkg"][0] + 20


@pytest.mark.parametrize("method", ["median", "mean", "plane", "radial"])
def test_background_methods_on_flat_background(method):
    shape = (64, 64)
    fwhm = 3.5
    image = point_source(shape, 32.2, 31.7, fwhm, 10.0, effective=True) + 0.5
    res = measure_band(image, [32.2], [31.7], fwhm, settings=PhotometrySettings(background=method))
    assert res["flux"][0] == pytest.approx(10.0, rel=0.01)


def test_plane_background_with_one_sided_annulus():
    shape = (64, 64)
    fwhm = 3.5
    yy, xx = np.mgrid[:64, :64]
    ramp = 0.5 + 0.05 * (xx - 32)
    image = point_source(shape, 32, 32, fwhm, 10.0, effective=True) + ramp
    host = xx < 30  # the host mask keeps only the left (fainter) part of the annulus
    plane = measure_band(
        image, [32.0], [32.0], fwhm, host_mask=host, settings=PhotometrySettings(background="plane")
    )
    mean = measure_band(
        image, [32.0], [32.0], fwhm, host_mask=host, settings=PhotometrySettings(background="mean")
    )
    assert plane["bkg"][0] == pytest.approx(0.5, abs=0.01)
    assert plane["flux"][0] == pytest.approx(10.0, rel=0.01)
    assert mean["flux"][0] > 12.0


def test_radial_background_removes_curvature():
    shape = (64, 64)
    fwhm = 3.5
    yy, xx = np.mgrid[:64, :64]
    bowl = 0.2 + 0.002 * ((xx - 32) ** 2 + (yy - 32) ** 2) + 0.01 * xx
    image = point_source(shape, 32, 32, fwhm, 10.0, effective=True) + bowl
    radial = measure_band(image, [32.0], [32.0], fwhm, settings=PhotometrySettings(background="radial"))
    median = measure_band(image, [32.0], [32.0], fwhm, settings=PhotometrySettings(background="median"))
    assert radial["flux"][0] == pytest.approx(10.0, rel=0.01)
    assert median["flux"][0] < 9.5  # the annulus over-estimates a convex background


def test_host_mask_dropped_when_annulus_off_host():
    shape = (64, 64)
    fwhm = 3.5
    image = point_source(shape, 32, 32, fwhm, 10.0, effective=True) + 0.5
    host = np.zeros(shape, bool)
    host[30:35, 30:35] = True  # the clump only
    res = measure_band(image, [32.0], [32.0], fwhm, host_mask=host)
    assert res["flag"][0] & PHOT_FLAGS["host_mask_dropped"]
    assert res["flux"][0] == pytest.approx(10.0, rel=0.01)


def test_bad_pixels_and_edges_give_nan_with_flags():
    shape = (64, 64)
    fwhm = 3.5
    image = point_source(shape, 32, 32, fwhm, 10.0, effective=True) + 0.5
    ivar = np.full(shape, 100.0)
    ivar[32, 32] = 0.0
    res = measure_band(image, [32.0, 1.0, -30.0], [32.0, 32.0, -30.0], fwhm, ivar=ivar)
    # The bad centre pixel is left out of the sum and of the PSF's EE alike.
    assert res["flux"][0] == pytest.approx(10.0, rel=0.015)
    assert np.isnan(res["flux"][1:]).all()
    assert res["flag"][0] & PHOT_FLAGS["bad_pixels"]
    assert res["flag"][1] & PHOT_FLAGS["off_image"]
    assert res["flag"][2] & PHOT_FLAGS["off_image"]
    nan_image = image.copy()
    nan_image[20:45, 20:45] = np.nan
    res = measure_band(nan_image, [32.0], [32.0], fwhm)
    assert res["flag"][0] & PHOT_FLAGS["no_background"]


def test_errors_with_and_without_ivar():
    rng = np.random.default_rng(3)
    shape = (64, 64)
    fwhm, sigma = 3.5, 0.05
    image = point_source(shape, 32, 32, fwhm, 10.0) + rng.normal(0, sigma, shape)
    ivar = np.full(shape, 1 / sigma**2)
    # The PSF image at hand, and no PSF-width error: the noise terms alone.
    psf = draw_psf("gaussian", fwhm, half_width=14)
    settings = PhotometrySettings(background="plane", psf_width_err_image=0.0, psf_width_err_analytic=0.0)
    with_ivar = measure_band(image, [32.0], [32.0], fwhm, ivar=ivar, psf=psf, settings=settings)
    no_ivar = measure_band(image, [32.0], [32.0], fwhm, psf=psf, settings=settings)
    area = np.pi * (APERTURE_RADIUS_FWHM * fwhm) ** 2
    n_ann = np.pi * ((2.5 * fwhm) ** 2 - (1.5 * fwhm) ** 2)
    corr = gaussian_aperture_correction(APERTURE_RADIUS_FWHM)
    expected = corr * np.sqrt(area * sigma**2 + (area * sigma) ** 2 / n_ann)
    assert with_ivar["flux_err"][0] == pytest.approx(expected, rel=0.03)
    assert no_ivar["flux_err"][0] == pytest.approx(expected, rel=0.25)
    median = measure_band(
        image,
        [32.0],
        [32.0],
        fwhm,
        ivar=ivar,
        psf=psf,
        settings=PhotometrySettings(background="median", psf_width_err_image=0.0, psf_width_err_analytic=0.0),
    )
    expected = corr * np.sqrt(area * sigma**2 + (area * np.sqrt(np.pi / 2) * sigma) ** 2 / n_ann)
    assert median["flux_err"][0] == pytest.approx(expected, rel=0.03)


# --------------------------------------------------------------------------- magnitudes


def test_add_magnitudes_units_and_limits():
    frame = pd.DataFrame({"objid": ["a", "a", "a"]})
    for b in SDSS_BANDS:
        frame[f"flux_nmgy_{b}"] = [10.0, -1.0, np.nan]
        frame[f"flux_nmgy_err_{b}"] = [0.5, 0.4, np.nan]
        frame[f"phot_flag_{b}"] = [0, 0, PHOT_FLAGS["bad_pixels"]]
    out = add_magnitudes(frame, np.array([0.1, 0.1, 0.1]), np.array([15.0, 15.0, np.nan]))
    assert out["clump_flux_g"][0] == pytest.approx(10.0 * NANOMAGGY_JY)
    assert out["clump_mag_g"][0] == pytest.approx(22.5 - 2.5)
    # AB from Jansky: m = -2.5 log10(f / 3631 Jy).
    assert out["clump_mag_g"][0] == pytest.approx(-2.5 * np.log10(out["clump_flux_g"][0] / 3631.0))
    assert out["clump_mag_err_g"][0] == pytest.approx(2.5 / np.log(10) * 0.05)
    assert out["clump_ext_mag_u"][0] == pytest.approx(EXTINCTION_R["u"] * 0.1)
    assert out["clump_mag_corr_r"][0] == pytest.approx(20.0 - EXTINCTION_R["r"] * 0.1)
    assert out["clump_mag_corr_g_r"][0] == pytest.approx(-(EXTINCTION_R["g"] - EXTINCTION_R["r"]) * 0.1)
    # Non-positive flux: NaN magnitude, flag, 5-sigma limit from the error.
    assert np.isnan(out["clump_mag_r"][1]) and np.isnan(out["clump_mag_err_r"][1])
    assert out["phot_flag_r"][1] & PHOT_FLAGS["nonpositive_flux"]
    assert out["clump_mag_lim_r"][1] == pytest.approx(22.5 - 2.5 * np.log10(5 * 0.4))
    assert out["clump_flux_r"][1] == pytest.approx(-NANOMAGGY_JY)
    # Flux ratio against the host u magnitude (15 mag = 10^3 nMgy).
    assert out["clump_flux_ratio"][0] == pytest.approx(10.0 / 1000.0)
    assert not out["is_clump_3pct"][0]
    assert list(out["is_clump_3pct"]) == [False, False, False]
    bright = add_magnitudes(frame, np.zeros(3), np.array([17.0, 17.0, 17.0]))
    ratio = 10.0 / 10 ** ((22.5 - 17.0) / 2.5)
    assert bright["clump_flux_ratio"][0] == pytest.approx(ratio)
    assert bright["is_clump_3pct"][0] == (ratio >= 0.03)
    assert bright["is_clump_8pct"][0] == (ratio >= 0.08)


# --------------------------------------------------------------------------- accuracy (issue item 6)


def _synthetic_set(n_gal: int, seed: int, ebv: float = 0.0, with_ivar: bool = True):
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n_gal):
        cutout, truth, host = make_synthetic_galaxy(rng, f"g{k}", ebv=ebv, with_ivar=with_ivar, with_psf=True)
        phot = measure_galaxy(cutout, clumps_from_truth(truth), host_mask=host)
        rows.append(pd.concat([phot, truth.filter(like="true_")], axis=1))
    return pd.concat(rows, ignore_index=True)


def test_flux_accuracy_and_pulls_on_synthetic_truth():
    data = _synthetic_set(30, seed=11)
    for b in ("g", "r"):
        snr = data[f"true_flux_{b}"] / data[f"flux_nmgy_err_{b}"]
        sel = (snr > 20) & (data["phot_flag_g"] == 0) & (data["phot_flag_r"] == 0)
        assert sel.sum() >= 40
        ratio = data.loc[sel, f"flux_nmgy_{b}"] / data.loc[sel, f"true_flux_{b}"]
        pull = (data.loc[sel, f"flux_nmgy_{b}"] - data.loc[sel, f"true_flux_{b}"]) / data.loc[
            sel, f"flux_nmgy_err_{b}"
        ]
        assert np.median(np.abs(ratio - 1)) <= 0.03, b
        assert 0.8 <= np.std(pull) <= 1.3, (b, np.std(pull))


def test_extinction_corrected_magnitudes_recover_intrinsic():
    ebv = 0.08
    data = _synthetic_set(12, seed=5, ebv=ebv)
    ebv_col = np.full(len(data), ebv)
    out = add_magnitudes(data, ebv_col, None)
    for b in ("g", "r", "i"):
        diff = out[f"clump_mag_corr_{b}"] - out[f"true_mag0_{b}"]
        assert abs(np.nanmedian(diff)) < 0.03, b
        # Without the correction the magnitudes are off by A_b.
        assert np.nanmedian(out[f"clump_mag_{b}"] - out[f"true_mag0_{b}"]) == pytest.approx(
            EXTINCTION_R[b] * ebv, abs=0.03
        )


def _simulator_set(seed: int, n_gal: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Clumps of ``n_gal`` galaxies of the project's simulator, measured in g and r at their true positions.

    Returns the photometry (with magnitudes, E(B-V) from the galaxy) joined
    to the truth, and whether each clump is isolated (no other truth source
    within 4 r-band FWHM).
    """
    from clumpcat.survey.hostsegment import host_galaxy_mask
    from clumpcat.survey.simulate.survey import draw_galaxy, render_galaxy

    settings = PhotometrySettings(correction="moffat")
    parts = []
    for index in range(n_gal):
        # the nominal condition: its Moffat PSF is the one the "moffat" correction assumes
        model = draw_galaxy(seed, index, conditions="nominal")
        if not any(src.kind == "clump" for src in model.sources):
            continue  # nothing to measure: skip the rendering
        rendered = render_galaxy(model)
        cutout, truth = rendered.cutout, rendered.truth
        # The simulator's own PSF travels with the cutout (as it writes it).
        assert {"g", "r"} <= set(cutout.psf)
        mask = host_galaxy_mask(cutout.images["r"], cutout.fwhm_pixels("r"))
        phot = measure_galaxy(
            cutout,
            truth[["objid", "x", "y", "ra", "dec"]],
            bands=("g", "r"),
            host_mask=mask,
            settings=settings,
        )
        phot = add_magnitudes(phot, np.full(len(phot), model.ebv), None, bands=("g", "r"))
        xy = truth[["x", "y"]].to_numpy()
        dist = np.hypot(xy[:, None, 0] - xy[None, :, 0], xy[:, None, 1] - xy[None, :, 1])
        isolated = (dist < 4.0 * cutout.fwhm_pixels("r")).sum(axis=1) == 1
        extra = truth[["kind", "flux_g", "flux_r", "snr_g", "snr_r"]].assign(isolated=isolated, ebv=model.ebv)
        parts.append(pd.concat([phot, extra.reset_index(drop=True)], axis=1))
    return pd.concat(parts, ignore_index=True)


def test_item6_on_the_project_simulator():
    """Issue 4 item 6 on galaxies of ``clumpcat simulate`` (Moffat PSF image, structured hosts)."""
    data = _simulator_set(seed=5, n_gal=110)
    sel = (
        (data["kind"] == "clump")
        & data["isolated"]
        & (data["snr_g"] > 20)
        & (data["snr_r"] > 20)
        & (data["phot_flag_g"] == 0)
        & (data["phot_flag_r"] == 0)
    )
    assert sel.sum() >= 25, sel.sum()
    pulls = []
    for b in ("g", "r"):
        true = data.loc[sel, f"flux_{b}"]
        meas = data.loc[sel, f"flux_nmgy_{b}"]
        pulls.append((meas - true) / data.loc[sel, f"flux_nmgy_err_{b}"])
        assert np.median(np.abs(meas / true - 1)) <= 0.03, b
        assert abs(np.median(meas / true - 1)) <= 0.01, b
        # Extinction-corrected magnitudes recover the intrinsic ones.
        intrinsic = 22.5 - 2.5 * np.log10(true) - EXTINCTION_R[b] * data.loc[sel, "ebv"]
        dmag = data.loc[sel, f"clump_mag_corr_{b}"] - intrinsic
        assert abs(np.median(dmag)) < 0.02, (b, np.median(dmag))
    # g and r pooled: ~70 pulls pin the standard deviation to +-0.09 (35 per band: +-0.12).
    assert 0.8 <= np.std(np.concatenate(pulls)) <= 1.3, np.std(np.concatenate(pulls))


# --------------------------------------------------------------------------- shard


def _write_shard(tmp_path, n_gal=3, seed=1):
    rng = np.random.default_rng(seed)
    cut_dir = tmp_path / "cutouts"
    gal_rows, clump_rows = [], []
    for k in range(n_gal):
        cutout, truth, _host = make_synthetic_galaxy(rng, f"gal{k}", ebv=0.05)
        write_cutout(cut_dir / f"gal{k}.fits", cutout)
        gal_rows.append({"objid": f"gal{k}", "ra": 10.0 + k, "dec": 5.0, "ebv": 0.05, "host_mag_u": 17.0})
        clump_rows.append(clumps_from_truth(truth))
    return pd.DataFrame(gal_rows), pd.concat(clump_rows, ignore_index=True), cut_dir


def _box_host_mask(image, fwhm_px):
    ny, nx = image.shape
    yy, xx = np.mgrid[:ny, :nx]
    return np.hypot(xx - (nx - 1) / 2, yy - (ny - 1) / 2) < 32


def test_photometry_shard_records_bad_cutouts(tmp_path):
    galaxies, clumps, cut_dir = _write_shard(tmp_path)
    # gal1: corrupt file; gal3: no cutout at all.
    (cut_dir / "gal1.fits").write_bytes(b"SIMPLE  = T" + b"\0" * 100)
    galaxies = pd.concat(
        [galaxies, pd.DataFrame([{"objid": "gal3", "ra": 1.0, "dec": 1.0, "ebv": 0.0, "host_mag_u": 18.0}])],
        ignore_index=True,
    )
    extra = clumps[clumps["objid"] == "gal0"].copy()
    extra["objid"] = "gal3"
    clumps = pd.concat([clumps, extra], ignore_index=True)
    phot, failures = photometry_shard(
        galaxies, clumps, cut_dir, galaxies["objid"], ebv_source="table", host_mask_fn=_box_host_mask
    )
    assert {f.objid for f in failures} == {"gal1", "gal3"}
    assert all(f.stage == "photometry" and f.reason for f in failures)
    assert set(phot["objid"]) == {"gal0", "gal2"}
    assert list(phot.columns[: len(photometry_columns())]) == list(photometry_columns())
    assert (phot["ebv_source"] == "table").all()
    assert np.allclose(phot["clump_ext_mag_r"], EXTINCTION_R["r"] * 0.05)


def test_photometry_shard_needs_extinction_before_work(tmp_path):
    galaxies, clumps, cut_dir = _write_shard(tmp_path, n_gal=1)
    with pytest.raises(InputError, match="no E\\(B-V\\) available"):
        photometry_shard(galaxies.drop(columns="ebv"), clumps, cut_dir, ["gal0"], host_mask_fn=None)
    galaxies.loc[0, "ebv"] = np.nan
    with pytest.raises(InputError, match="'ebv' is missing, negative or not finite for objid gal0"):
        photometry_shard(galaxies, clumps, cut_dir, ["gal0"], ebv_source="table", host_mask_fn=None)
    with pytest.raises(InputError, match="missing SFD map file"):
        photometry_shard(galaxies, clumps, cut_dir, ["gal0"], ebv_source="sfd", sfd_dir=tmp_path)
    with pytest.raises(InputError, match="missing column"):
        photometry_shard(galaxies, clumps.drop(columns="score"), cut_dir, ["gal0"], ebv_source="table")


def test_cli_writes_photometry_and_status(tmp_path, monkeypatch):
    from clumpcat import cli
    from clumpcat.ledger import write_status
    from clumpcat.tables import read_table, write_table

    galaxies, clumps, cut_dir = _write_shard(tmp_path, n_gal=3)
    (cut_dir / "gal2.fits").unlink()
    write_table(galaxies, tmp_path / "galaxies.parquet")
    write_table(clumps, tmp_path / "clumps.parquet")
    from clumpcat.ledger import LedgerEntry

    write_status(
        tmp_path / "status-postprocess.parquet",
        galaxies["objid"],
        [LedgerEntry("gal1", "failed", "render", "cutout is all NaN")],
    )
    monkeypatch.setattr("clumpcat.photometry.apertures._default_host_mask_fn", lambda: _box_host_mask)
    rc = cli.main(
        [
            "photometry",
            "--galaxies", str(tmp_path / "galaxies.parquet"),
            "--clumps", str(tmp_path / "clumps.parquet"),
            "--cutouts", str(cut_dir),
            "--status-in", str(tmp_path / "status-postprocess.parquet"),
            "--status-out", str(tmp_path / "status-photometry.parquet"),
            "--out", str(tmp_path / "photometry.parquet"),
            "--aperture-correction", "moffat",
            "--ebv-source", "table",
        ]
    )  # fmt: skip
    assert rc == 0
    status = read_table(tmp_path / "status-photometry.parquet").set_index("objid")
    assert status.loc["gal0", "status"] == "ok"
    assert (status.loc["gal1", "stage"], status.loc["gal1", "reason"]) == ("render", "cutout is all NaN")
    assert status.loc["gal2", "status"] == "failed" and status.loc["gal2", "stage"] == "photometry"
    phot = read_table(tmp_path / "photometry.parquet")
    assert set(phot["objid"]) == {"gal0"}
    # No PSF images in these cutouts: the Moffat fallback, flagged.
    assert phot["aperture_correction_r"].iloc[0] == pytest.approx(
        moffat_aperture_correction(APERTURE_RADIUS_FWHM), rel=1e-2
    )
    assert (phot["apcorr_source_r"] == "moffat").all()
    assert (phot["clump_flux_r"] > 0).all()


def test_joint_background_halves_the_noise_and_keeps_the_flux():
    """background='joint': the host surface fitted with the clump's PSF (issue 11).

    On a tilted, curved host with the exact PSF, both quadratic estimators
    are unbiased; the joint one has about half the scatter (the annulus
    alone must extrapolate the curvature), and its errors hold.
    """
    rng = np.random.default_rng(3)
    fwhm, n, sigma = 3.5, 61, 0.1
    yy, xx = np.mgrid[0:n, 0:n].astype(float)
    host = 1.0 + 0.02 * (xx - 30) + 0.001 * (yy - 20) ** 2
    psf = point_source((31, 31), 15.0, 15.0, fwhm, 1.0, effective=True)
    results = {"quadratic": [], "joint": []}
    for _ in range(60):
        x0, y0 = 30.0 + rng.uniform(-0.5, 0.5), 30.0 + rng.uniform(-0.5, 0.5)
        image = host + point_source((n, n), x0, y0, fwhm, 10.0, effective=True)
        image = image + sigma * rng.standard_normal((n, n))
        ivar = np.full((n, n), 1.0 / sigma**2)
        for method, rows in results.items():
            settings = PhotometrySettings(
                background=method, psf_width_err_image=0.0, psf_width_err_analytic=0.0
            )
            res = measure_band(image, [x0], [y0], fwhm, ivar=ivar, psf=psf, settings=settings)
            rows.append((res["flux"][0], res["flux_err"][0]))
    quad, joint = (np.array(results[m]) for m in ("quadratic", "joint"))
    for flux in (quad[:, 0], joint[:, 0]):
        assert abs(flux.mean() - 10.0) < 3 * flux.std() / np.sqrt(flux.size)
    assert joint[:, 0].std() < 0.65 * quad[:, 0].std()
    pulls = (joint[:, 0] - 10.0) / joint[:, 1]
    assert 0.75 <= pulls.std() <= 1.3


@pytest.mark.parametrize(
    ("background", "source", "used"),
    [
        ("auto", "psf", "joint"),
        ("auto", "moffat", "quadratic"),
        ("auto", "gaussian", "quadratic"),
        ("quadratic", "psf", "quadratic"),
        ("joint", "gaussian", "joint"),
    ],
)
def test_auto_background_fits_the_psf_only_where_the_cutout_gives_it(background, source, used):
    assert PhotometrySettings(background=background).background_for(source) == used


def test_release_text_names_every_background():
    # The release README describes the estimator that ran; 'joint' once had no words and
    # the release failed with a KeyError.
    from clumpcat.catalogue.release import _BACKGROUND_TEXT
    from clumpcat.photometry.apertures import BACKGROUND_METHODS

    assert set(BACKGROUND_METHODS) <= set(_BACKGROUND_TEXT)
