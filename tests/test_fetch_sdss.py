"""SDSS fetching against a SAS-layout tree served on 127.0.0.1 (and as a local mirror).

The frames are small but follow the SDSS frame data model as real frames
have it: HDU0 image in nanomaggies with a TAN WCS, ``RADECSYS`` and no
``BUNIT``; HDU1 calibration vector; HDU2 sky table (ALLSKY with a gradient
that differs along rows and columns, XINTERP, YINTERP); HDU3 the astrometric
transformation (asTrans); bz2-compressed. Each band's WCS is offset by a
fraction of a pixel, as in real fields, and fields 100 and 101 overlap by
``OVERLAP`` rows along the scan. The psField files hold the KL PSF basis in
HDUs 1-5 (a double Gaussian with a wing whose width changes along the rows)
and PSF_WIDTH in HDU 6.
"""

from __future__ import annotations

import bz2
import io

import numpy as np
import pandas as pd
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS

from clumpcat.cli import main
from clumpcat.constants import SDSS_BANDS
from clumpcat.survey.cutouts import read_cutout
from clumpcat.survey.fetch.http import ArchiveRoot, HttpClient, RetryPolicy
from clumpcat.survey.fetch.psfield import read_psfield
from clumpcat.survey.fetch.sdss import (
    fetch_sdss,
    frame_path,
    psfield_path,
    read_frame,
    sdss_dark_variance,
    sdss_gain,
)
from clumpcat.survey.psf import draw_psf, measure_fwhm
from clumpcat.tables import read_table
from tests.servers import ArchiveServer, closed_port

NY, NX = 150, 200
SCALE = 0.396 / 3600.0
RUN, CAMCOL = 1000, 3
OVERLAP = 20  # rows shared by consecutive fields (128 in real frames)
FIELDS = {100: (150.00, 2.00), 101: (150.00, 2.00 + (NY - OVERLAP) * SCALE)}  # field -> frame centre
FLUX = {"u": 5.0, "g": 10.0, "r": 20.0, "i": 25.0, "z": 30.0}  # nanomaggies of the test source
PSF = {"u": 1.5, "g": 1.4, "r": 1.3, "i": 1.2, "z": 1.25}  # galaxy-table psf_fwhm_*
#: psField PSF: half-maximum FWHM (arcsec) at row 0 and at the last row of the frame.
KL_FWHM = {b: (1.05 * PSF[b], 1.35 * PSF[b]) for b in SDSS_BANDS}
PSF_WIDTH = {b: 1.6 * PSF[b] for b in SDSS_BANDS}  # effective-area width: not what the cutout carries
SKY0, SKY_DX, SKY_DY = 100.0, 3.0, 1.0  # ALLSKY = SKY0 + SKY_DX * x + SKY_DY * y on the coarse grid
CALIB = 0.005
# Timeouts well above a loaded machine's response time; the stalls well above them.
POLICY = RetryPolicy(retries=3, backoff_s=0.01, backoff_max_s=0.05, timeout_s=2.0)


def _wcs(ra, dec, band):
    w = WCS(naxis=2)
    k = SDSS_BANDS.index(band)
    w.wcs.crpix = [NX / 2 + 0.5 + 0.37 * k, NY / 2 + 0.5 - 0.23 * k]
    w.wcs.crval = [ra, dec]
    w.wcs.cd = [[-SCALE, 0.0], [0.0, SCALE]]
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    return w


def _sky_grid():
    ny_s, nx_s = 8, 10
    ys, xs = np.mgrid[0:ny_s, 0:nx_s]
    return (SKY0 + SKY_DX * xs + SKY_DY * ys).astype(np.float32)


def _sky_at(x, y):
    """Sky in counts at frame pixel (x, y): ALLSKY is linear, so interpolation is exact."""
    return SKY0 + SKY_DX * x * 9 / (NX - 1) + SKY_DY * y * 7 / (NY - 1)


def _frame_bytes(field, band, sources):
    rng = np.random.default_rng(field * 10 + SDSS_BANDS.index(band))
    wcs = _wcs(*FIELDS[field], band)
    yy, xx = np.mgrid[0:NY, 0:NX]
    image = rng.normal(0.0, 0.002, (NY, NX))
    sigma = PSF[band] / 2.3548 / 0.396
    for ra, dec in sources:
        x, y = wcs.world_to_pixel(SkyCoord(ra, dec, unit="deg"))
        image += (
            FLUX[band] / (2 * np.pi * sigma**2) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
        )
    calib = CALIB * (1.0 + 0.05 * np.sin(np.arange(NX) / 30.0))
    allsky = _sky_grid()
    ny_s, nx_s = allsky.shape
    cols = [
        fits.Column("ALLSKY", format=f"{ny_s * nx_s}E", dim=f"({nx_s},{ny_s})", array=allsky[None]),
        fits.Column("XINTERP", format=f"{NX}E", array=np.linspace(0, nx_s - 1, NX, dtype=np.float32)[None]),
        fits.Column("YINTERP", format=f"{NY}E", array=np.linspace(0, ny_s - 1, NY, dtype=np.float32)[None]),
    ]
    header = wcs.to_header()
    del header["RADESYS"]
    header["RADECSYS"] = "ICRS"  # the deprecated spelling real frames carry; no BUNIT
    as_trans = [
        fits.Column(name, format="D", array=np.array([value]))
        for name, value in (("A", 1.0), ("B", 0.0), ("C", 1.1e-4), ("D", 2.0), ("E", 1.1e-4), ("F", 0.0))
    ]
    hdul = fits.HDUList(
        [
            fits.PrimaryHDU(image.astype(np.float32), header=header),
            fits.ImageHDU(calib.astype(np.float32)),
            fits.BinTableHDU.from_columns(cols),
            fits.BinTableHDU.from_columns(as_trans),
        ]
    )
    buf = io.BytesIO()
    hdul.writeto(buf)
    return bz2.compress(buf.getvalue(), compresslevel=1)


def _kl_pair(band):
    """Eigen-images: the PSF at row 0, and the change from row 0 to the last row."""
    lo, hi = (
        draw_psf("double_gaussian", f / 0.396, wing_fraction=0.15, half_width=25) for f in KL_FWHM[band]
    )
    return lo, hi - lo


def _expected_psf(band, row):
    lo, step = _kl_pair(band)
    return lo + (row + 0.5) / NY * step


def _psfield_bytes():
    hdus = [fits.PrimaryHDU()]
    for band in SDSS_BANDS:
        lo, step = _kl_pair(band)
        c = np.zeros((2, 5, 5), np.float32)
        c[0, 0, 0] = 1.0
        c[1, 1, 0] = 1000.0 / NY  # weight of the second image: (row + 0.5) / NY, nothing along columns
        cols = [
            fits.Column(
                "RROWS", format="2601E", array=np.stack([lo.ravel(), step.ravel()]).astype(np.float32)
            ),
            fits.Column("RNROW", format="J", array=np.array([51, 51])),
            fits.Column("RNCOL", format="J", array=np.array([51, 51])),
            fits.Column("NROW_B", format="J", array=np.array([1, 2])),
            fits.Column("NCOL_B", format="J", array=np.array([1, 1])),
            fits.Column("C", format="25E", dim="(5,5)", array=c),
        ]
        hdus.append(fits.BinTableHDU.from_columns(cols))
    col = fits.Column(
        "PSF_WIDTH", format="5E", array=np.array([[PSF_WIDTH[b] for b in SDSS_BANDS]], np.float32)
    )
    hdus.append(fits.BinTableHDU.from_columns([col]))
    buf = io.BytesIO()
    fits.HDUList(hdus).writeto(buf)
    return buf.getvalue()


def _dec_at_row(field, row):
    return FIELDS[field][1] + (row - (NY - 1) / 2) * SCALE


GALAXIES = pd.DataFrame(
    [
        # objid, ra, dec, field, petro_r90_r, psf columns given?
        ("g1", 150.0000, 2.0000, 100, 3.0, True),
        ("g2", 150.0040, 2.0030, 100, 2.5, True),
        ("g3", 149.9960, 1.9975, 100, 3.0, False),  # needs the psField
        ("g4", 150.0030, _dec_at_row(101, 90), 101, 3.0, True),
        ("edge", 150.0000 + 0.0100, _dec_at_row(101, 80), 101, 3.0, True),  # ~30% past the camcol's side
        ("seam_up", 149.9990, _dec_at_row(100, 140), 100, 3.0, True),  # completed from field 101
        ("seam_down", 150.0020, _dec_at_row(101, 6), 101, 3.0, True),  # completed from field 100
        ("runend", 149.9980, _dec_at_row(101, 141), 101, 3.0, True),  # field 102 does not exist
        ("offframe", 150.1000, 2.0000, 100, 3.0, True),  # not on the named frame
        ("nofield", 150.0010, 1.9990, -1, 3.0, True),  # run/camcol/field looked up at SkyServer
        ("nowhere", 10.0, -30.0, -1, 3.0, True),  # SkyServer knows nothing there
        ("missing", 150.0, 2.0, 999, 3.0, True),  # frames not in the archive (404)
    ],
    columns=["objid", "ra", "dec", "field", "petro_r90_r", "has_psf"],
)
ON_SKY = ("g1", "g2", "g3", "g4", "nofield", "edge", "seam_up", "seam_down", "runend")


def _galaxy_table():
    frame = GALAXIES.copy()
    frame["run"] = np.where(frame["field"] > 0, RUN, np.nan)
    frame["camcol"] = np.where(frame["field"] > 0, CAMCOL, np.nan)
    frame["field"] = np.where(frame["field"] > 0, frame["field"], np.nan)
    for band in SDSS_BANDS:
        frame[f"psf_fwhm_{band}"] = np.where(frame["has_psf"], PSF[band], np.nan)
    return frame.drop(columns="has_psf")


@pytest.fixture(scope="module")
def sas(tmp_path_factory):
    root = tmp_path_factory.mktemp("sas")
    sources = [(r.ra, r.dec) for r in GALAXIES.itertuples() if r.objid in ON_SKY]
    for field in FIELDS:
        for band in SDSS_BANDS:
            path = root / frame_path(band, RUN, CAMCOL, field)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(_frame_bytes(field, band, sources))
        ps = root / psfield_path(RUN, CAMCOL, field)
        ps.parent.mkdir(parents=True, exist_ok=True)
        ps.write_bytes(_psfield_bytes())
    return root


def _skyserver(params):
    sql = params.get("cmd", "")
    assert params.get("format") == "csv"
    if "150.001" in sql:  # the 'nofield' galaxy
        return 200, f"#Table1\nrun,camcol,field,petroR90_r\n{RUN},{CAMCOL},100,3.1\n".encode(), "text/plain"
    return 200, b"#Table1\nrun,camcol,field,petroR90_r\n", "text/plain"


def _frames_requested(server):
    return {p: n for p, n in server.counts.items() if "/frames/" in p}


def _aperture_flux(cutout, band, ra, dec, radius_px=9):
    x, y = cutout.wcs.world_to_pixel(SkyCoord(ra, dec, unit="deg"))
    yy, xx = np.indices(cutout.shape)
    inside = (xx - x) ** 2 + (yy - y) ** 2 <= radius_px**2
    return float(np.nansum(cutout.images[band][inside])), (x, y)


def test_frame_reader_and_ivar(sas):
    frame = read_frame(sas / frame_path("r", RUN, CAMCOL, 100))
    assert frame.image.shape == (NY, NX) and frame.sky.shape == (NY, NX)
    yy, xx = np.indices((NY, NX))
    np.testing.assert_allclose(frame.sky, _sky_at(xx, yy), rtol=1e-5)  # rows and columns not swapped
    assert frame.wcs.wcs.radesys == "ICRS"
    ivar = frame.ivar(sdss_gain("r", CAMCOL, RUN), sdss_dark_variance("r", CAMCOL, RUN))
    calib = frame.calib[None, :]
    expected = 1.0 / (((frame.image / calib + _sky_at(xx, yy)) / 4.72 + 1.3225) * calib**2)
    np.testing.assert_allclose(ivar, expected, rtol=1e-4)
    assert sdss_gain("u", 2, 1000) == 1.595 and sdss_gain("u", 2, 2000) == 1.825
    assert sdss_dark_variance("i", 4, 1000) == 6.25 and sdss_dark_variance("i", 4, 2000) == 7.5625


def test_psfield_rebuilds_the_psf_at_a_row(sas):
    basis = read_psfield(sas / psfield_path(RUN, CAMCOL, 100))
    for row, col in ((0.0, 150.0), (120.0, 10.0)):
        np.testing.assert_allclose(basis["g"].at(row, col), _expected_psf("g", row), atol=1e-7)
    lo, hi = (measure_fwhm(basis["r"].at(r, 50.0)) * 0.396 for r in (0.0, NY - 1.0))
    assert KL_FWHM["r"][0] < lo < hi < KL_FWHM["r"][1] * 1.05  # the PSF widens along the rows


def _frame_pixel(field, band, ra, dec):
    x, y = _wcs(*FIELDS[field], band).world_to_pixel(SkyCoord(ra, dec, unit="deg"))
    return float(x), float(y)


def test_fetch_over_http_with_faults(sas, tmp_path):
    cutouts, cache = tmp_path / "cutouts", tmp_path / "cache"
    galaxies = _galaxy_table()
    with ArchiveServer(sas, endpoints={"/skyserver/SqlSearch": _skyserver}) as server:
        server.add_fault(frame_path("r", RUN, CAMCOL, 100), ("status", 500), ("retry_after", 429, 1))
        server.add_fault(
            frame_path("g", RUN, CAMCOL, 100), ("short", 0.6)
        )  # truncated bz2, consistent length
        server.add_fault(frame_path("i", RUN, CAMCOL, 101), ("stall", 5.0))  # client read timeout
        server.add_fault(frame_path("z", RUN, CAMCOL, 101), ("cut", 0.3))  # connection dropped mid-body
        with HttpClient(max_parallel=2, policy=POLICY) as client:
            root = ArchiveRoot(server.url + "/", cache=cache, client=client)
            result = fetch_sdss(
                galaxies, cutouts, root, skyserver_url=server.url + "/skyserver/SqlSearch", max_parallel=2
            )
        frames = _frames_requested(server)
        faults = {
            frame_path("r", RUN, CAMCOL, 100): 2,
            frame_path("g", RUN, CAMCOL, 100): 1,
            frame_path("i", RUN, CAMCOL, 101): 1,
            frame_path("z", RUN, CAMCOL, 101): 1,
        }
        # Each frame downloaded once, though both fields' jobs read both fields' frames.
        for field in FIELDS:
            for band in SDSS_BANDS:
                path = "/" + frame_path(band, RUN, CAMCOL, field)
                assert frames[path] == 1 + faults.get(path.lstrip("/"), 0), path
        assert frames["/" + frame_path("u", RUN, CAMCOL, 102)] == 1  # asked once: the run ends there
        assert server.counts["/" + psfield_path(RUN, CAMCOL, 100)] == 1
        assert server.counts["/" + psfield_path(RUN, CAMCOL, 101)] == 1

    failed = {e.objid: e.reason for e in result.failures}
    assert set(failed) == {"offframe", "nowhere", "missing"}
    assert "not on frame" in failed["offframe"]
    assert "footprint" in failed["nowhere"]
    assert "not found" in failed["missing"]
    assert result.n_undone == 0
    ok = set(ON_SKY)
    assert ok | set(failed) == set(galaxies["objid"])  # no galaxy lost
    info = result.info_frame().set_index("objid")
    assert bool(info.loc["edge", "edge"]) and 0.15 < info.loc["edge", "outside_fraction"] < 0.5
    assert bool(info.loc["runend", "edge"]) and 0.15 < info.loc["runend", "outside_fraction"] < 0.5
    assert not info.loc["g1", "edge"]
    assert info.loc["seam_up", "source"] == f"{RUN}-{CAMCOL}-100+101"
    assert info.loc["seam_down", "source"] == f"{RUN}-{CAMCOL}-100+101"
    assert info.loc["g1", "source"] == f"{RUN}-{CAMCOL}-100"

    frame_r = read_frame(sas / frame_path("r", RUN, CAMCOL, 100))
    for objid in ok:
        row = galaxies.set_index("objid").loc[objid]
        cut = read_cutout(cutouts / f"{objid}.fits", SDSS_BANDS)
        side = (
            int(np.ceil(6 * row["petro_r90_r"] / 0.396))
            if objid != "nofield"
            else int(np.ceil(6 * 3.1 / 0.396))
        )
        assert abs(cut.shape[0] - side) <= 1 and cut.shape[0] == cut.shape[1]
        assert cut.pixel_scale == pytest.approx(0.396, rel=1e-3)
        assert set(cut.ivar) == set(SDSS_BANDS)
        field = 100 if objid in ("g1", "g2", "g3", "nofield", "seam_up") else 101
        for band in SDSS_BANDS:
            # The PSF rebuilt at the galaxy's row of its own field, and its half-maximum FWHM.
            _, y = _frame_pixel(field, band, row["ra"], row["dec"])
            expected = _expected_psf(band, y)
            np.testing.assert_allclose(cut.psf[band], expected / expected.sum(), atol=2e-6)
            assert cut.psf_fwhm[band] == pytest.approx(measure_fwhm(expected) * 0.396, rel=1e-3)
            assert KL_FWHM[band][0] < cut.psf_fwhm[band] < KL_FWHM[band][1] * 1.05 < PSF_WIDTH[band]
        if objid in ("edge", "runend"):
            assert np.isnan(cut.images["r"]).any()
            assert (cut.ivar["r"][np.isnan(cut.images["r"])] == 0).all()
            continue
        assert np.isfinite(cut.images["r"]).all(), objid  # seams: complete, and no NaN rim
        centres = []
        for band in SDSS_BANDS:
            flux, _ = _aperture_flux(cut, band, row["ra"], row["dec"])
            assert flux == pytest.approx(FLUX[band], rel=0.03), (objid, band)
            img = np.nan_to_num(cut.images[band])
            yy, xx = np.indices(img.shape)
            w = np.clip(img, 0, None) * ((xx - img.shape[1] // 2) ** 2 + (yy - img.shape[0] // 2) ** 2 < 64)
            centres.append(((w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()))
        centres = np.array(centres)
        assert np.ptp(centres, axis=0).max() < 0.1  # bands aligned on one grid
        if field == 100:
            # ivar of a sky pixel: the data model's value at that pixel's sky
            fx, fy = frame_r.wcs.world_to_pixel(cut.wcs.pixel_to_world(0, 0))
            calib = frame_r.calib[int(round(float(fx)))]
            expected = 1.0 / ((_sky_at(float(fx), float(fy)) / 4.72 + 1.3225) * calib**2)
            assert cut.ivar["r"][0, 0] == pytest.approx(expected, rel=0.02)
    # Pixels of the seam from field 101 are field 101's own: the source sits there too.
    seam = read_cutout(cutouts / "seam_up.fits", SDSS_BANDS)
    assert np.nanmax(seam.images["r"][-5:]) < 0.05  # top rows: sky of field 101, not NaN or zero-filled

    # A rerun downloads no frame again: cutouts exist, frames are cached; only
    # the galaxy whose frames the archive lacks is asked for again.
    (cutouts / "g4.fits").unlink()
    with ArchiveServer(sas, endpoints={"/skyserver/SqlSearch": _skyserver}) as server:
        with HttpClient(max_parallel=2, policy=POLICY) as client:
            root = ArchiveRoot(server.url, cache=cache, client=client)
            again = fetch_sdss(galaxies, cutouts, root, skyserver_url=server.url + "/skyserver/SqlSearch")
        assert all("-0999." in p for p in _frames_requested(server))
    assert (cutouts / "g4.fits").exists()
    assert {e.objid for e in again.failures} == {"offframe", "nowhere", "missing"}
    reused = again.info_frame().set_index("objid")["reused"]
    assert reused.loc["g1"] and not reused.loc["g4"]


def test_local_mirror_needs_no_server(sas, tmp_path):
    galaxies = _galaxy_table().iloc[:5]
    result = fetch_sdss(galaxies, tmp_path / "c", ArchiveRoot(sas), skyserver_url=None)
    assert result.failures == [] and result.n_undone == 0
    cut = read_cutout(tmp_path / "c" / "g1.fits", SDSS_BANDS)
    flux, _ = _aperture_flux(cut, "r", 150.0, 2.0)
    assert flux == pytest.approx(FLUX["r"], rel=0.03)
    assert not list(tmp_path.rglob("*.bz2"))  # read in place, nothing copied


def test_cli_status_table_and_rerun(sas, tmp_path):
    gal = tmp_path / "galaxies.parquet"
    _galaxy_table().to_parquet(gal)
    status, info, log = tmp_path / "status-fetch.parquet", tmp_path / "info.parquet", tmp_path / "fetch.log"
    with ArchiveServer(sas, endpoints={"/skyserver/SqlSearch": _skyserver}) as server:
        argv = [
            "fetch",
            "sdss",
            "--galaxies",
            str(gal),
            "--status-out",
            str(status),
            "--cutouts",
            str(tmp_path / "c"),
            "--cache",
            str(tmp_path / "cache"),
            "--sas-root",
            server.url,
            "--skyserver-url",
            server.url + "/skyserver/SqlSearch",
            "--info",
            str(info),
            "--retries",
            "2",
            "--backoff-s",
            "0.01",
            "--timeout-s",
            "2",
            "--log",
            str(log),
        ]
        assert main(argv) == 0
    table = read_table(status)
    assert table["objid"].tolist() == _galaxy_table()["objid"].tolist()
    assert set(table.loc[table["status"] == "failed", "objid"]) == {"offframe", "nowhere", "missing"}
    assert (table.loc[table["status"] == "failed", "reason"].str.len() > 0).all()
    assert (table.loc[table["status"] == "failed", "stage"] == "fetch").all()
    assert read_table(info)["edge"].any()


def test_offline_fails_naming_host_and_galaxies(tmp_path, capsys):
    gal = tmp_path / "galaxies.parquet"
    _galaxy_table().iloc[:4].to_parquet(gal)
    port = closed_port()
    status, log = tmp_path / "status.parquet", tmp_path / "fetch.log"
    argv = [
        "fetch",
        "sdss",
        "--galaxies",
        str(gal),
        "--status-out",
        str(status),
        "--cutouts",
        str(tmp_path / "c"),
        "--cache",
        str(tmp_path / "cache"),
        "--sas-root",
        f"http://127.0.0.1:{port}/sas",
        "--skyserver-url",
        "none",
        "--retries",
        "1",
        "--backoff-s",
        "0.01",
        "--log",
        str(log),
    ]
    assert main(argv) == 1
    text = log.read_text()
    assert f"127.0.0.1:{port} could not be reached (connection refused" in text
    for objid in ("g1", "g2", "g3", "g4"):
        assert objid in text
    assert not status.exists()
    # With --on-network-error record, every galaxy is in the status table with the reason.
    assert main(argv + ["--on-network-error", "record"]) == 0
    table = read_table(status)
    assert (table["status"] == "failed").all()
    assert table["reason"].str.contains(f"127.0.0.1:{port}").all()


def test_missing_psfield_fails_only_the_galaxies_that_need_it(sas, tmp_path):
    import shutil

    mirror = tmp_path / "mirror"
    shutil.copytree(sas / "dr17" / "eboss" / "photoObj", mirror / "dr17" / "eboss" / "photoObj")
    galaxies = _galaxy_table().set_index("objid").loc[["g1", "g3"]].reset_index()  # g3 needs the psField
    result = fetch_sdss(galaxies, tmp_path / "c", ArchiveRoot(mirror), skyserver_url=None)
    failed = {e.objid: e.reason for e in result.failures}
    assert (
        list(failed) == ["g3"] and "psField unusable" in failed["g3"] and "not in the mirror" in failed["g3"]
    )
    read_cutout(tmp_path / "c" / "g1.fits", SDSS_BANDS)
    assert (
        fetch_sdss(galaxies, tmp_path / "c2", ArchiveRoot(mirror), skyserver_url=None, use_psfield=False)
        .failures[0]
        .reason.endswith("psField disabled")
    )


def test_no_nan_rim_where_the_cutout_touches_the_frame_edge(sas):
    from clumpcat.survey.fetch.resample import reference_grid, sample_on_grid

    frame = read_frame(sas / frame_path("g", RUN, CAMCOL, 100))
    # A cutout reaching 10 px past the frame's left side: exactly 10 NaN columns, no NaN rim.
    side = 41
    position = frame.wcs.pixel_to_world(10.0, 60.0)
    _, grid_wcs, outside = reference_grid(frame.image, frame.wcs, position, side)
    image, ivar = sample_on_grid([frame.image, frame.ivar(3.8, 1.3)], frame.wcs, grid_wcs, side, position)
    assert outside == pytest.approx(10 / side)
    assert np.isnan(image[:, :10]).all() and np.isfinite(image[:, 10:]).all()
    np.testing.assert_array_equal(image[:, 10:], frame.image[40:81, :31])  # the frame's own pixels


def test_psfield_with_variable_length_rows_and_no_tdim(tmp_path):
    # Another writer's layout of the same data model: RROWS as a variable-length
    # array, C flat without TDIM (memory order of photo's c[row power][col power]).
    lo, step = _kl_pair("r")
    c = np.zeros((2, 25), np.float32)
    c[0, 0] = 1.0
    c[1, 5] = 1000.0 / NY  # [row power 1, col power 0]
    hdus = [fits.PrimaryHDU()]
    for _band in SDSS_BANDS:
        rrows = np.empty(2, dtype=object)
        rrows[:] = [lo.ravel().astype(np.float32), step.ravel().astype(np.float32)]
        cols = [
            fits.Column("RROWS", format="PE()", array=rrows),
            fits.Column("RNROW", format="J", array=np.array([51, 51])),
            fits.Column("RNCOL", format="J", array=np.array([51, 51])),
            fits.Column("NROW_B", format="J", array=np.array([1, 2])),
            fits.Column("NCOL_B", format="J", array=np.array([1, 1])),
            fits.Column("C", format="25E", array=c),
        ]
        hdus.append(fits.BinTableHDU.from_columns(cols))
    path = tmp_path / "psField.fit"
    fits.HDUList(hdus).writeto(path)
    basis = read_psfield(path)
    np.testing.assert_allclose(basis["r"].at(100.0, 20.0), _expected_psf("r", 100.0), atol=1e-7)
