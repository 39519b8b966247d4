"""HSC fetching against a DAS-like cutout service with basic auth on 127.0.0.1."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS

from clumpcat.cli import main
from clumpcat.constants import HSC_BANDS
from clumpcat.survey.cutouts import read_cutout
from clumpcat.survey.fetch.hsc import COUNTS_TO_NANOMAGGY, fetch_hsc, psf_fwhm_from_image
from clumpcat.survey.fetch.http import HttpClient, RetryPolicy, find_credentials
from clumpcat.tables import read_table
from tests.servers import ArchiveServer

USER, PASSWORD = "astro-user", "pa55-Wd!s3cr3t"
DAS_PATH = "/das_cutout/pdr3/cgi-bin/cutout"
PSF_PATH = "/psf/pdr3/cgi/getpsf"
SCALE = 0.168
TRACT = (34.0, -5.0)
FLUX = {"g": 8.0, "r": 12.0, "i": 16.0, "z": 18.0, "y": 20.0}  # nanomaggies
TABLE_PSF = {"g": 0.80, "r": 0.72, "i": 0.62, "z": 0.66, "y": 0.70}
SERVICE_PSF = {"g": 0.90, "r": 0.85, "i": 0.70, "z": 0.75, "y": 0.78}
POLICY = RetryPolicy(retries=3, backoff_s=0.01, backoff_max_s=0.05, timeout_s=2.0)

GALAXIES = pd.DataFrame(
    {
        "objid": ["h1", "h2", "h3", "h4"],
        "ra": [34.000, 34.004, 34.002, 34.001],
        "dec": [-5.000, -4.997, -12.0, -5.002],  # h3 outside the survey
        "petro_r90_r": [2.0, 1.8, 2.0, np.nan],  # h4 cannot be sized
    }
)
for _b in HSC_BANDS:
    GALAXIES[f"psf_fwhm_{_b}"] = [TABLE_PSF[_b], np.nan, TABLE_PSF[_b], TABLE_PSF[_b]]


def _tract_wcs():
    w = WCS(naxis=2)
    w.wcs.crpix = [5000.5, 5000.5]
    w.wcs.crval = list(TRACT)
    w.wcs.cd = [[-SCALE / 3600, 0.0], [0.0, SCALE / 3600]]
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    return w


def _das(params):
    band = params["filter"].split("-")[1].lower()
    ra, dec = float(params["ra"]), float(params["dec"])
    assert params["rerun"] == "pdr3_wide" and params["type"] == "coadd"
    if dec < -10:
        return 404, b"no data\n", "text/plain"
    half = int(np.ceil(float(params["sw"].removesuffix("asec")) / SCALE))
    tract = _tract_wcs()
    x, y = (float(v) for v in tract.world_to_pixel(SkyCoord(ra, dec, unit="deg")))
    x0, y0 = int(round(x)) - half, int(round(y)) - half
    n = 2 * half + 1
    yy, xx = np.mgrid[y0 : y0 + n, x0 : x0 + n]
    sigma = TABLE_PSF[band] / 2.3548 / SCALE
    image = np.zeros((n, n))
    for gra, gdec in zip(GALAXIES["ra"], GALAXIES["dec"], strict=True):
        sx, sy = tract.world_to_pixel(SkyCoord(gra, gdec, unit="deg"))
        counts = FLUX[band] / COUNTS_TO_NANOMAGGY
        image += counts / (2 * np.pi * sigma**2) * np.exp(-((xx - sx) ** 2 + (yy - sy) ** 2) / (2 * sigma**2))
    wcs = tract.deepcopy()
    wcs.wcs.crpix = [tract.wcs.crpix[0] - x0, tract.wcs.crpix[1] - y0]
    header = wcs.to_header()
    hdul = fits.HDUList(
        [
            fits.PrimaryHDU(),
            fits.ImageHDU(image.astype(np.float32), header=header, name="IMAGE"),
            fits.ImageHDU(np.zeros((n, n), np.int32), header=header, name="MASK"),
            fits.ImageHDU(np.full((n, n), 0.04, np.float32), header=header, name="VARIANCE"),
        ]
    )
    buf = io.BytesIO()
    hdul.writeto(buf)
    return 200, buf.getvalue(), "application/fits"


def _psf(params):
    band = params["filter"].split("-")[1].lower()
    sigma = SERVICE_PSF[band] / 2.3548 / SCALE
    yy, xx = np.mgrid[-20:21, -20:21]
    psf = np.exp(-(xx**2 + yy**2) / (2 * sigma**2))
    buf = io.BytesIO()
    fits.PrimaryHDU((psf / psf.sum()).astype(np.float32)).writeto(buf)
    return 200, buf.getvalue(), "application/fits"


def _server():
    return ArchiveServer(
        endpoints={DAS_PATH: _das, PSF_PATH: _psf}, auth=(USER, PASSWORD), auth_paths=("/das", "/psf")
    )


def test_psf_fwhm_from_gaussian_image():
    sigma = 0.8 / 2.3548 / SCALE
    yy, xx = np.mgrid[-25:26, -25:26]
    assert psf_fwhm_from_image(np.exp(-(xx**2 + yy**2) / (2 * sigma**2))) == pytest.approx(0.8, rel=0.01)


def test_fetch_hsc_with_faults(tmp_path):
    cutouts, cache = tmp_path / "cutouts", tmp_path / "cache"
    with (
        _server() as server,
        HttpClient(
            max_parallel=2,
            policy=POLICY,
            auth=find_credentials(
                "127.0.0.1", "NO_SUCH_USER_ENV", "NO_SUCH_PASS_ENV", netrc_file=_netrc(tmp_path)
            ),
        ) as client,
    ):
        server.add_fault(DAS_PATH, ("status", 500), ("retry_after", 429, 0), ("cut", 0.5), ("short", 0.5))
        result = fetch_hsc(
            GALAXIES,
            cutouts,
            client,
            cache,
            das_url=server.url + DAS_PATH,
            psf_url=server.url + PSF_PATH,
            max_parallel=2,
        )
        # every request carried the credentials
        assert all(h.startswith("Basic ") for h in server.auth_headers)
        # h1, h2: 5 bands each; 4 faults; h3: stops at its first band (not found)
        assert server.counts[DAS_PATH] == 5 + 5 + 4 + 1
        assert server.counts[PSF_PATH] == 5  # only h2 lacks psf_fwhm_*
    failed = {e.objid: e.reason for e in result.failures}
    assert set(failed) == {"h3", "h4"}
    assert "coverage" in failed["h3"] and "petro_r90_r" in failed["h4"]
    for objid, psf in (("h1", TABLE_PSF), ("h2", SERVICE_PSF)):
        cut = read_cutout(cutouts / f"{objid}.fits", HSC_BANDS)
        row = GALAXIES.set_index("objid").loc[objid]
        assert cut.pixel_scale == pytest.approx(SCALE, rel=1e-3)
        assert abs(cut.shape[0] - 6 * row["petro_r90_r"] / SCALE) <= 2  # same field of view as SDSS
        x, y = cut.wcs.world_to_pixel(SkyCoord(row["ra"], row["dec"], unit="deg"))
        yy, xx = np.indices(cut.shape)
        inside = (xx - x) ** 2 + (yy - y) ** 2 <= 20**2
        for band in HSC_BANDS:
            assert float(np.nansum(cut.images[band][inside])) == pytest.approx(FLUX[band], rel=0.03)
            assert cut.psf_fwhm[band] == pytest.approx(psf[band], rel=0.02)
            assert np.median(cut.ivar[band]) == pytest.approx(1 / (0.04 * COUNTS_TO_NANOMAGGY**2), rel=1e-3)
    assert not list((cache / "hsc").rglob("*.fits"))  # per-band downloads removed once used
    # A rerun fetches only what is missing: h1's cutout is gone, h2's is kept.
    (cutouts / "h1.fits").unlink()
    with (
        _server() as server,
        HttpClient(
            policy=POLICY,
            auth=find_credentials(
                "127.0.0.1", "NO_SUCH_USER_ENV", "NO_SUCH_PASS_ENV", netrc_file=_netrc(tmp_path)
            ),
        ) as client,
    ):
        again = fetch_hsc(
            GALAXIES, cutouts, client, cache, das_url=server.url + DAS_PATH, psf_url=server.url + PSF_PATH
        )
        assert server.counts[DAS_PATH] == 5 + 1  # h1's five bands, h3's refused first band
        assert server.counts[PSF_PATH] == 0
    assert {e.objid for e in again.failures} == {"h3", "h4"}
    read_cutout(cutouts / "h1.fits", HSC_BANDS)
    _assert_no_secret(tmp_path)


def _netrc(tmp_path):
    path = tmp_path / "netrc"
    path.write_text(f"machine 127.0.0.1 login {USER} password {PASSWORD}\n")
    path.chmod(0o600)
    return path


def _assert_no_secret(folder):
    for path in folder.rglob("*"):
        if path.is_file() and path.name != "netrc":
            assert PASSWORD.encode() not in path.read_bytes(), path


def test_cli_credentials_from_env_never_leak(tmp_path, monkeypatch):
    gal = tmp_path / "galaxies.parquet"
    GALAXIES.to_parquet(gal)
    status, log = tmp_path / "status-fetch.parquet", tmp_path / "fetch.log"
    monkeypatch.setenv("HSC_SSP_CAS_USERNAME", USER)
    monkeypatch.setenv("HSC_SSP_CAS_PASSWORD", PASSWORD)
    with _server() as server:
        argv = [
            "fetch",
            "hsc",
            "--galaxies",
            str(gal),
            "--status",
            str(status),
            "--cutouts",
            str(tmp_path / "c"),
            "--cache",
            str(tmp_path / "cache"),
            "--das-url",
            server.url + DAS_PATH,
            "--psf-url",
            server.url + PSF_PATH,
            "--retries",
            "2",
            "--backoff-s",
            "0.01",
            "--info",
            str(tmp_path / "info.parquet"),
            "--log",
            str(log),
            "-v",
        ]
        assert main(argv) == 0
        table = read_table(status)
        assert table.set_index("objid")["status"].to_dict() == {
            "h1": "ok",
            "h2": "ok",
            "h3": "failed",
            "h4": "failed",
        }
        # A wrong password: refused at once (no retry on 401), recorded, and never echoed.
        monkeypatch.setenv("HSC_SSP_CAS_PASSWORD", PASSWORD + "-wrong")
        before = server.counts[DAS_PATH]
        status2 = tmp_path / "status2.parquet"
        argv2 = [a if a != str(status) else str(status2) for a in argv]
        argv2[argv2.index(str(tmp_path / "c"))] = str(tmp_path / "c2")
        assert main(argv2) == 0
        assert server.counts[DAS_PATH] - before == 3  # h1, h2, h3: one request each
        reasons = read_table(status2)["reason"]
        assert reasons.str.contains("access refused").sum() == 3
        assert not reasons.str.contains("wrong").any()
    assert PASSWORD not in log.read_text()
    _assert_no_secret(tmp_path)


def test_cli_without_credentials_names_the_variables(tmp_path, monkeypatch, capsys):
    gal = tmp_path / "galaxies.parquet"
    GALAXIES.to_parquet(gal)
    monkeypatch.delenv("HSC_SSP_CAS_USERNAME", raising=False)
    monkeypatch.delenv("HSC_SSP_CAS_PASSWORD", raising=False)
    argv = [
        "fetch",
        "hsc",
        "--galaxies",
        str(gal),
        "--status",
        str(tmp_path / "s.parquet"),
        "--cutouts",
        str(tmp_path / "c"),
        "--cache",
        str(tmp_path / "cache"),
        "--das-url",
        "http://127.0.0.1:9/das",
        "--netrc",
        str(tmp_path / "absent-netrc"),
    ]
    assert main(argv) == 1
    assert "HSC_SSP_CAS_USERNAME and HSC_SSP_CAS_PASSWORD" in capsys.readouterr().err
