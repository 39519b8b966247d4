"""Tests of clumpcat.photometry.extinction on small SFD-format maps built here.

The maps are Lambert zenithal-equal-area hemispheres in the SFD (1998)
layout; their values are linear in the pixel coordinates, so bilinear
interpolation is exact and the expected E(B-V) at any position follows from
the SFD pixel formula (App. C of SFD 1998), independently of the WCS.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits

from clumpcat.constants import EXTINCTION_R, HSC_BANDS, NANOMAGGY_JY, SDSS_BANDS
from clumpcat.errors import InputError
from clumpcat.photometry.apertures import add_magnitudes
from clumpcat.photometry.extinction import (
    clump_ebv,
    extinction_coefficients,
    extinction_mags,
    resolve_ebv_source,
    sfd_ebv,
    sfd_lambert_header,
)

SIZE = 64
#: Map value = OFFSET[pole] + AX * x + AY * y (0-based pixels).
OFFSET = {"ngp": 0.02, "sgp": 0.30}
AX, AY = 0.001, 0.002


def sfd_pixel(l_deg, b_deg, size=SIZE):
    """0-based pixel of galactic (l, b) in an SFD Lambert map (SFD 1998 App. C)."""
    n = 1 if b_deg >= 0 else -1
    scale = size / 2
    lr, br = np.radians(l_deg), np.radians(b_deg)
    rho = scale * np.sqrt(1 - n * np.sin(br))
    return rho * np.cos(lr) + scale - 0.5, -n * rho * np.sin(lr) + scale - 0.5


@pytest.fixture
def sfd_dir(tmp_path):
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for pole in ("ngp", "sgp"):
        data = (OFFSET[pole] + AX * xx + AY * yy).astype(np.float32)
        fits.PrimaryHDU(data, header=sfd_lambert_header(SIZE, pole)).writeto(
            tmp_path / f"SFD_dust_4096_{pole}.fits"
        )
    return tmp_path


def expected_ebv(ra, dec):
    gal = SkyCoord(ra=ra * u.deg, dec=dec * u.deg, frame="icrs").galactic
    out = []
    for l_deg, b_deg in zip(np.atleast_1d(gal.l.deg), np.atleast_1d(gal.b.deg), strict=True):
        x, y = sfd_pixel(l_deg, b_deg)
        out.append(OFFSET["ngp" if b_deg >= 0 else "sgp"] + AX * x + AY * y)
    return np.array(out)


def test_header_keywords():
    for pole, sign in (("ngp", 1), ("sgp", -1)):
        h = sfd_lambert_header(4096, pole)
        assert h["LAM_NSGP"] == sign and h["LAM_SCAL"] == 2048
        assert h["CRPIX1"] == h["CRPIX2"] == 2048.5
        assert (h["CTYPE1"], h["CTYPE2"]) == ("GLON-ZEA", "GLAT-ZEA")
        assert h["CRVAL2"] == 90.0 * sign
    with pytest.raises(ValueError, match="pole must be"):
        sfd_lambert_header(64, "north")


def test_sfd_value_at_known_positions(sfd_dir):
    # North: (ra, dec) = (180, 30) is at b ~ +78 deg; south: (10, -30) is at b ~ -86.
    ra = np.array([180.0, 150.0, 10.0, 40.0])
    dec = np.array([30.0, 2.0, -30.0, -10.0])
    got = sfd_ebv(ra, dec, sfd_dir)
    assert got == pytest.approx(expected_ebv(ra, dec), abs=1e-5)
    gal = SkyCoord(ra=ra * u.deg, dec=dec * u.deg).galactic
    assert (gal.b.deg[:2] > 0).all() and (gal.b.deg[2:] < 0).all()
    # Quantity input works as well.
    assert sfd_ebv(ra * u.deg, dec * u.deg, sfd_dir) == pytest.approx(got)


def test_extinction_from_sfd_map(sfd_dir):
    clumps = pd.DataFrame({"objid": ["a", "b"], "ra": [180.0, 10.0], "dec": [30.0, -30.0]})
    galaxies = pd.DataFrame({"objid": ["a", "b"], "ebv": [9.0, 9.0]})
    ebv = clump_ebv(clumps, galaxies, "sfd", sfd_dir)
    assert ebv == pytest.approx(expected_ebv(clumps["ra"].to_numpy(), clumps["dec"].to_numpy()), abs=1e-5)
    ext = extinction_mags(ebv, SDSS_BANDS)
    for b in SDSS_BANDS:
        assert ext[b] == pytest.approx(EXTINCTION_R[b] * ebv)
    assert EXTINCTION_R == {"u": 4.239, "g": 3.303, "r": 2.285, "i": 1.698, "z": 1.263}


def test_table_fallback_and_source_resolution(sfd_dir):
    galaxies = pd.DataFrame({"objid": ["a", "b"], "ebv": [0.03, np.nan]})
    assert resolve_ebv_source("auto", None, galaxies, ["a"]) == "table"
    assert resolve_ebv_source("auto", sfd_dir, galaxies) == "sfd"
    assert resolve_ebv_source("table", sfd_dir, galaxies, ["a"]) == "table"
    clumps = pd.DataFrame({"objid": ["a", "a"], "ra": [1.0, 2.0], "dec": [0.0, 0.0]})
    assert clump_ebv(clumps, galaxies, "table") == pytest.approx([0.03, 0.03])


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("sky", None, None), "--ebv-source must be one of"),
        (("sfd", None, None), "--ebv-source sfd needs --sfd-dir"),
        (("auto", None, None), "no E\\(B-V\\) available"),
        (("auto", None, pd.DataFrame({"objid": ["a"]})), "no E\\(B-V\\) available"),
        (("table", None, pd.DataFrame({"objid": ["a", "b"], "ebv": [0.1, -1.0]})), "for objid b"),
    ],
)
def test_resolution_errors(args, match):
    with pytest.raises(InputError, match=match):
        resolve_ebv_source(*args)


def test_missing_map_file_is_named(tmp_path, sfd_dir):
    (sfd_dir / "SFD_dust_4096_sgp.fits").unlink()
    with pytest.raises(InputError, match="SFD_dust_4096_sgp.fits"):
        resolve_ebv_source("sfd", sfd_dir)
    with pytest.raises(InputError, match="missing SFD map"):
        sfd_ebv([1.0], [2.0], tmp_path / "nowhere")


def test_band_without_coefficient_is_nan(caplog):
    ext = extinction_mags([0.1], ["r", "y"])
    assert np.isnan(ext["y"]).all()
    assert "no extinction coefficient R_y" in caplog.text


#: R_b = A_b / E(B-V)_SFD of the HSC filters as the HSC pipeline applies them
#: (lsst/obs_subaru config/extinctionCoeffs.py; M. Tanaka, NAOJ).
HSC_PIPELINE_R = {"g": 3.240, "r": 2.276, "i": 1.633, "z": 1.263, "y": 1.075}


def test_hsc_coefficients_in_every_grizy_band():
    ebv = np.array([0.0, 0.02, 0.15])
    ext = extinction_mags(ebv, HSC_BANDS, survey="hsc")
    for band in HSC_BANDS:  # y included: never NaN
        assert ext[band] == pytest.approx(HSC_PIPELINE_R[band] * ebv, abs=1e-12)
    # A redder filter is less extinguished; SDSS keeps its own (SF11) values.
    assert all(ext[a][-1] > ext[b][-1] for a, b in zip(HSC_BANDS[:-1], HSC_BANDS[1:], strict=True))
    assert extinction_mags(ebv, SDSS_BANDS, survey="sdss")["g"] == pytest.approx(EXTINCTION_R["g"] * ebv)
    assert extinction_coefficients("synthetic") == EXTINCTION_R
    with pytest.raises(InputError, match="survey must be one of sdss, synthetic, hsc.*'euclid'"):
        extinction_coefficients("euclid")


def _hsc_frame(flux_g):
    n = len(flux_g)
    frame = pd.DataFrame({"objid": [f"h{k}" for k in range(n)]})
    for k, band in enumerate(HSC_BANDS):
        frame[f"flux_nmgy_{band}"] = np.asarray(flux_g, float) * (1.0 + 0.2 * k)
        frame[f"flux_nmgy_err_{band}"] = 0.05
        frame[f"phot_flag_{band}"] = 0
    return frame


@pytest.mark.parametrize("survey", ["hsc", None])  # None: told by the y band
def test_hsc_row_extinction_and_g_band_flux_ratio(survey):
    host_mag_g = np.full(3, 17.0)  # 10**(5.5/2.5) = 158.49 nanomaggies
    host_nmgy = 10 ** ((22.5 - 17.0) / 2.5)
    ratios = np.array([0.02, 0.05, 0.10])  # below 3%, between, above 8%
    ebv = np.array([0.01, 0.05, 0.2])
    out = add_magnitudes(_hsc_frame(ratios * host_nmgy), ebv, host_mag_g, HSC_BANDS, survey)
    assert out["clump_flux_ratio"].to_numpy() == pytest.approx(ratios, rel=1e-12)
    assert out["is_clump_3pct"].tolist() == [False, True, True]
    assert out["is_clump_8pct"].tolist() == [False, False, True]
    assert set(out["clump_flux_ratio_band"]) == {"g"} and set(out["survey"]) == {"hsc"}
    for band in HSC_BANDS:
        assert out[f"clump_ext_mag_{band}"].to_numpy() == pytest.approx(HSC_PIPELINE_R[band] * ebv)
        corr = out[f"clump_mag_{band}"] - out[f"clump_mag_corr_{band}"]
        assert corr.to_numpy() == pytest.approx(HSC_PIPELINE_R[band] * ebv)
    assert np.isfinite(out["clump_mag_corr_z_y"]).all()
    assert out["clump_flux_y"].to_numpy() == pytest.approx(ratios * host_nmgy * 1.8 * NANOMAGGY_JY)
