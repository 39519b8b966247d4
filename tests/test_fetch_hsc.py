"""HSC fetching against a DAS-like cutout service with basic auth on 127.0.0.1.

The service answers in the DAS layout: PRIMARY, IMAGE (counts, zero point
27), MASK (bits named by ``MP_*`` keywords: a bad column, a saturated blob,
a bright-object region, detected sources) and VARIANCE, whose prediction is
``NOISE_RATIO`` times smaller than the image's real scatter (as on warped
coadds). The PSF picker serves Moffat PSFs with wings (beta 2.5), one of them
with an even side.
"""

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
from clumpcat.survey.fetch.hsc import COUNTS_TO_NANOMAGGY, fetch_hsc
from clumpcat.survey.fetch.http import HttpClient, RetryPolicy, find_credentials
from clumpcat.survey.psf import draw_psf
from clumpcat.tables import read_table
from tests.servers import ArchiveServer

USER, PASSWORD = "astro-user", "pa55-Wd!s3cr3t"
DAS_PATH = "/das_cutout/pdr3/cgi-bin/cutout"
PSF_PATH = "/psf/pdr3/cgi/getpsf"
SCALE = 0.168
TRACT = (34.0, -5.0)
FLUX = {"g": 8.0, "r": 12.0, "i": 16.0, "z": 18.0, "y": 20.0}  # nanomaggies
TABLE_PSF = {"g": 0.80, "r": 0.72, "i": 0.62, "z": 0.66, "y": 0.70}
SERVICE_PSF = {"g": 0.90, "r": 0.85, "i": 0.70, "z": 0.75, "y": 0.78}  # half-maximum FWHM, arcsec
VARIANCE = 4e-4  # counts^2, what the VARIANCE plane says
NOISE_RATIO = 1.3  # real sky scatter / sqrt(VARIANCE)
MP = {
    "BAD": 0,
    "SAT": 1,
    "INTRP": 2,
    "CR": 3,
    "EDGE": 4,
    "DETECTED": 5,
    "SUSPECT": 7,
    "NO_DATA": 8,
    "BRIGHT_OBJECT": 9,
}
BAD_COLUMN = 5030  # tract x of a bad column (on h1's cutout)
SAT_BLOB = (33.9988, -5.0000)  # a saturated blob, 4 x 4 pixels, beside h1
BRIGHT_REGION = (34.0010, -4.9985)  # BRIGHT_OBJECT: a flag, not bad data
POLICY = RetryPolicy(retries=3, backoff_s=0.01, backoff_max_s=0.05, timeout_s=2.0)

GALAXIES = pd.DataFrame(
    {
        "objid": ["h1", "h2", "h3", "h4", "h5"],
        "ra": [34.000, 34.004, 34.002, 34.001, 33.990],
        "dec": [-5.000, -4.997, -12.0, -5.002, -5.004],  # h3 outside the survey
        "petro_r90_r": [2.0, 1.8, 2.0, np.nan, 2.0],  # h4 cannot be sized
    }
)
for _b in HSC_BANDS:
    GALAXIES[f"psf_fwhm_{_b}"] = [TABLE_PSF[_b], np.nan, TABLE_PSF[_b], TABLE_PSF[_b], TABLE_PSF[_b]]
NO_VARIANCE_RA = 33.990  # h5: the service sends no VARIANCE plane


def _tract_wcs():
    w = WCS(naxis=2)
    w.wcs.crpix = [5000.5, 5000.5]
    w.wcs.crval = list(TRACT)
    w.wcs.cd = [[-SCALE / 3600, 0.0], [0.0, SCALE / 3600]]
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    return w


def _das(params):
    assert (params["image"], params["mask"], params["variance"]) == ("on", "on", "on")
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
    rng = np.random.default_rng([x0, y0, HSC_BANDS.index(band)])
    image = rng.normal(0.0, NOISE_RATIO * np.sqrt(VARIANCE), (n, n))
    mask = np.zeros((n, n), np.int32)
    for gra, gdec in zip(GALAXIES["ra"], GALAXIES["dec"], strict=True):
        sx, sy = tract.world_to_pixel(SkyCoord(gra, gdec, unit="deg"))
        r2 = (xx - sx) ** 2 + (yy - sy) ** 2
        counts = FLUX[band] / COUNTS_TO_NANOMAGGY
        image += counts / (2 * np.pi * sigma**2) * np.exp(-r2 / (2 * sigma**2))
        mask[r2 < (4 * sigma) ** 2] |= 1 << MP["DETECTED"]
    mask[xx == BAD_COLUMN] |= 1 << MP["BAD"]
    bx, by = tract.world_to_pixel(SkyCoord(*SAT_BLOB, unit="deg"))
    mask[(np.abs(xx - bx) < 2) & (np.abs(yy - by) < 2)] |= 1 << MP["SAT"]
    bx, by = tract.world_to_pixel(SkyCoord(*BRIGHT_REGION, unit="deg"))
    mask[(xx - bx) ** 2 + (yy - by) ** 2 < 25] |= 1 << MP["BRIGHT_OBJECT"]
    wcs = tract.deepcopy()
    wcs.wcs.crpix = [tract.wcs.crpix[0] - x0, tract.wcs.crpix[1] - y0]
    header = wcs.to_header()
    mask_header = header.copy()
    for name, bit in MP.items():
        mask_header[f"HIERARCH MP_{name}"] = bit  # hscPipe writes them as HIERARCH cards
    hdus = [
        fits.PrimaryHDU(),
        fits.ImageHDU(image.astype(np.float32), header=header, name="IMAGE"),
        fits.ImageHDU(mask, header=mask_header, name="MASK"),
    ]
    if abs(ra - NO_VARIANCE_RA) > 1e-4:
        hdus.append(fits.ImageHDU(np.full((n, n), VARIANCE, np.float32), header=header, name="VARIANCE"))
    buf = io.BytesIO()
    fits.HDUList(hdus).writeto(buf)
    return 200, buf.getvalue(), "application/fits"


def _served_psf(band):
    psf = draw_psf("moffat", SERVICE_PSF[band] / SCALE, beta=2.5, half_width=21)
    return psf[:-1, :-1] if band == "y" else psf  # the y PSF comes with an even side


def _psf(params):
    band = params["filter"]
    assert band in HSC_BANDS and params["centered"] == "true"  # the short band name
    buf = io.BytesIO()
    fits.PrimaryHDU(_served_psf(band).astype(np.float32)).writeto(buf)
    return 200, buf.getvalue(), "application/fits"


def _server():
    return ArchiveServer(
        endpoints={DAS_PATH: _das, PSF_PATH: _psf}, auth=(USER, PASSWORD), auth_paths=("/das", "/psf")
    )


def _client(tmp_path, max_parallel=4):
    creds = find_credentials("127.0.0.1", "NO_SUCH_USER_ENV", "NO_SUCH_PASS_ENV", netrc_file=_netrc(tmp_path))
    return HttpClient(max_parallel=max_parallel, policy=POLICY, auth=creds)


def test_fetch_hsc_with_faults(tmp_path):
    cutouts, cache = tmp_path / "cutouts", tmp_path / "cache"
    with _server() as server, _client(tmp_path, max_parallel=2) as client:
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
        # h1, h2: 5 bands each; 4 faults; h3: stops at its first band (not found); h5: first band lacks VARIANCE
        assert server.counts[DAS_PATH] == 5 + 5 + 4 + 1 + 1
        assert server.counts[PSF_PATH] == 5 + 5  # one PSF per band of h1 and h2
    failed = {e.objid: e.reason for e in result.failures}
    assert set(failed) == {"h3", "h4", "h5"}
    assert "coverage" in failed["h3"] and "petro_r90_r" in failed["h4"]
    assert "VARIANCE" in failed["h5"] and "MASK" not in failed["h5"]
    info = result.info_frame().set_index("objid")
    tract = _tract_wcs()
    for objid in ("h1", "h2"):
        cut = read_cutout(cutouts / f"{objid}.fits", HSC_BANDS)
        row = GALAXIES.set_index("objid").loc[objid]
        assert cut.pixel_scale == pytest.approx(SCALE, rel=1e-3)
        assert abs(cut.shape[0] - 6 * row["petro_r90_r"] / SCALE) <= 2  # same field of view as SDSS
        x, y = cut.wcs.world_to_pixel(SkyCoord(row["ra"], row["dec"], unit="deg"))
        yy, xx = np.indices(cut.shape)
        inside = (xx - x) ** 2 + (yy - y) ** 2 <= 20**2
        # tract x of every cutout pixel: the bad column is NaN with IVAR 0, the rest is data
        sky = cut.wcs.pixel_to_world(xx.ravel(), yy.ravel())
        tx = np.round(tract.world_to_pixel(sky)[0]).reshape(cut.shape)
        bad = tx == BAD_COLUMN
        assert bad.any() == (objid == "h1") and not (bad & inside).any()
        for band in HSC_BANDS:
            image, ivar = cut.images[band], cut.ivar[band]
            assert float(np.nansum(image[inside])) == pytest.approx(FLUX[band], rel=0.03)
            assert np.isnan(image[bad]).all() and (ivar[bad] == 0).all()
            assert np.isfinite(image[~bad]).sum() >= (~bad).sum() - 16  # only the saturated blob besides
            assert np.median(ivar[~bad]) == pytest.approx(1 / (VARIANCE * COUNTS_TO_NANOMAGGY**2), rel=1e-3)
            # The noise correction is the measured ratio, and IVAR is left as the survey gives it.
            assert cut.noise_correction[band] == pytest.approx(NOISE_RATIO, rel=0.06)
            # The picker's PSF travels; PSF_FWHM is its half maximum, not the second moments.
            psf = cut.psf[band]
            assert psf.shape[0] % 2 == 1 and psf.sum() == pytest.approx(1.0)
            assert cut.psf_fwhm[band] == pytest.approx(SERVICE_PSF[band], rel=0.04), band
        assert (info.loc[objid, "masked_fraction"] > 0) == (objid == "h1")
    blob = read_cutout(cutouts / "h1.fits")
    bx, by = blob.wcs.world_to_pixel(SkyCoord(*SAT_BLOB, unit="deg"))
    assert np.isnan(blob.images["r"][int(round(float(by))), int(round(float(bx)))])
    rx, ry = blob.wcs.world_to_pixel(SkyCoord(*BRIGHT_REGION, unit="deg"))
    assert np.isfinite(blob.images["r"][int(round(float(ry))), int(round(float(rx)))])  # not a bad plane
    assert not list((cache / "hsc").rglob("*.fits"))  # per-band downloads removed once used
    # A rerun fetches only what is missing: h1's cutout is gone, h2's is kept.
    (cutouts / "h1.fits").unlink()
    with _server() as server, _client(tmp_path) as client:
        again = fetch_hsc(
            GALAXIES, cutouts, client, cache, das_url=server.url + DAS_PATH, psf_url=server.url + PSF_PATH
        )
        assert server.counts[DAS_PATH] == 5 + 1 + 1  # h1's five bands, h3's and h5's first band
        assert server.counts[PSF_PATH] == 5
    assert {e.objid for e in again.failures} == {"h3", "h4", "h5"}
    read_cutout(cutouts / "h1.fits", HSC_BANDS)
    _assert_no_secret(tmp_path)


def test_table_psf_without_picker_and_configured_mask_planes(tmp_path):
    galaxies = GALAXIES.iloc[:1]
    with _server() as server, _client(tmp_path) as client:
        fetch_hsc(
            galaxies,
            tmp_path / "c",
            client,
            tmp_path / "cache",
            das_url=server.url + DAS_PATH,
            psf_url=None,
            mask_planes=("BRIGHT_OBJECT",),
        )
        assert server.counts[PSF_PATH] == 0
    cut = read_cutout(tmp_path / "c" / "h1.fits", HSC_BANDS)
    assert cut.psf == {} and cut.psf_fwhm == TABLE_PSF
    rx, ry = cut.wcs.world_to_pixel(SkyCoord(*BRIGHT_REGION, unit="deg"))
    bx, by = cut.wcs.world_to_pixel(SkyCoord(*SAT_BLOB, unit="deg"))
    assert np.isnan(cut.images["g"][int(round(float(ry))), int(round(float(rx)))])
    assert np.isfinite(cut.images["g"][int(round(float(by))), int(round(float(bx)))])


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
            "--status-out",
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
            "h5": "failed",
        }
        # A wrong password: refused at once (no retry on 401), recorded, and never echoed.
        monkeypatch.setenv("HSC_SSP_CAS_PASSWORD", PASSWORD + "-wrong")
        before = server.counts[DAS_PATH]
        status2 = tmp_path / "status2.parquet"
        argv2 = [a if a != str(status) else str(status2) for a in argv]
        argv2[argv2.index(str(tmp_path / "c"))] = str(tmp_path / "c2")
        assert main(argv2) == 0
        assert server.counts[DAS_PATH] - before == 4  # h1, h2, h3, h5: one request each
        reasons = read_table(status2)["reason"]
        assert reasons.str.contains("access refused").sum() == 4
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
        "--status-out",
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


def test_two_crossmatches_in_a_row_fetch_only_new_galaxies(tmp_path):
    """Reruns over new HSC tables: each galaxy is fetched once, even after a later ledger replaces an earlier one."""
    parent, ledger, history = (
        tmp_path / "parent.parquet",
        tmp_path / "ledger.parquet",
        tmp_path / "history.parquet",
    )
    GALAXIES.iloc[:2].to_parquet(parent)  # h1, h2
    arcsec = 1.0 / 3600.0
    tables = {
        1: pd.DataFrame({"object_id": [11], "ra": [34.000 + 0.2 * arcsec], "dec": [-5.000]}),  # matches h1
        2: pd.DataFrame({"object_id": [11, 12], "ra": [34.000, 34.004], "dec": [-5.000, -4.997]}),  # h1, h2
    }

    def crossmatch(table):
        objects, out = tmp_path / f"hsc{table}.csv", tmp_path / "matches.parquet"
        tables[min(table, 2)].to_csv(objects, index=False)
        argv = ["crossmatch", "--galaxies", str(parent), "--hsc-objects", str(objects), "--out", str(out)]
        assert main(argv + ["--processed", str(ledger), "--history", str(history)]) == 0
        return read_table(out)

    def fetch_and_write_ledger(matches):
        with _server() as server, _client(tmp_path) as client:
            fetch_hsc(
                matches,
                tmp_path / "cutouts",
                client,
                tmp_path / "cache",
                das_url=server.url + DAS_PATH,
                psf_url=server.url + PSF_PATH,
            )
            requests = server.counts[DAS_PATH] + server.counts[PSF_PATH]
        # the run's catalogue stage writes a ledger naming this run's galaxies only
        pd.DataFrame({"objid": matches["objid"], "status": "ok"}).to_parquet(ledger)
        return requests

    first = crossmatch(1)
    assert first["objid"].tolist() == ["h1"]
    assert fetch_and_write_ledger(first) == 10  # 5 bands x (cutout + PSF)
    second = crossmatch(2)
    assert second["objid"].tolist() == ["h2"]  # h1 was processed by the first run
    assert fetch_and_write_ledger(second) == 10
    # The second run's ledger replaced the first's; the history still knows h1.
    assert crossmatch(3).empty
    assert set(read_table(history)["objid"]) == {"h1", "h2"}


def test_psf_put_on_a_coarser_grid_keeps_its_width():
    from clumpcat.survey.fetch.resample import psf_on_grid
    from clumpcat.survey.psf import measure_fwhm

    psf = draw_psf("moffat", 0.8 / SCALE, beta=2.5, half_width=30)  # 0.8" at 0.168"/px
    coarse = psf_on_grid(psf, SCALE, 0.396)  # onto SDSS-like pixels
    assert coarse.shape[0] % 2 == 1 and coarse.sum() == pytest.approx(1.0)
    assert np.unravel_index(np.argmax(coarse), coarse.shape) == (coarse.shape[0] // 2,) * 2
    # what 0.396" pixels collect of the same profile
    expected = measure_fwhm(draw_psf("moffat", 0.8 / 0.396, beta=2.5, half_width=12)) * 0.396
    assert measure_fwhm(coarse) * 0.396 == pytest.approx(expected, rel=0.03)
    np.testing.assert_allclose(psf_on_grid(psf, SCALE, SCALE), psf / psf.sum())  # same grid: unchanged
