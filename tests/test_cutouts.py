"""The cutout contract: round trip and every validation error names file and band."""

import numpy as np
import pytest
from astropy.io import fits

from clumpcat.errors import CutoutError
from clumpcat.survey.cutouts import Cutout, read_cutout, write_cutout

from .conftest import synthetic_cutout


def test_round_trip(tmp_path):
    cutout = synthetic_cutout("g1")
    path = write_cutout(tmp_path / "g1.fits", cutout)
    back = read_cutout(path, bands=tuple("ugriz"))
    assert back.objid == "g1"
    assert back.bands == tuple("ugriz")
    for band in "ugriz":
        np.testing.assert_array_equal(back.images[band], cutout.images[band].astype(np.float32))
        assert back.psf_fwhm[band] == pytest.approx(cutout.psf_fwhm[band])
    assert back.pixel_scale == pytest.approx(0.396, rel=1e-6)
    assert set(back.ivar) == set("ugriz")
    with fits.open(path) as hdul:
        assert hdul["R"].header["BUNIT"] == "nanomaggy"
        assert hdul[0].data is None


def _write(tmp_path, edit):
    path = write_cutout(tmp_path / "bad.fits", synthetic_cutout("bad"))
    with fits.open(path, mode="update") as hdul:
        edit(hdul)
    return path


def test_missing_band(tmp_path):
    cutout = synthetic_cutout("bad")
    del cutout.images["u"]
    path = write_cutout(tmp_path / "bad.fits", cutout)
    with pytest.raises(CutoutError, match=r"bad\.fits: missing band\(s\) U"):
        read_cutout(path, bands=tuple("ugriz"))


def test_missing_psf_fwhm(tmp_path):
    def edit(hdul):
        del hdul["G"].header["PSF_FWHM"]

    with pytest.raises(CutoutError, match="band G: no PSF_FWHM"):
        read_cutout(_write(tmp_path, edit))


def test_all_nan_band(tmp_path):
    def edit(hdul):
        hdul["I"].data[:] = np.nan

    with pytest.raises(CutoutError, match="band I: all pixels are NaN"):
        read_cutout(_write(tmp_path, edit))


def test_no_celestial_wcs(tmp_path):
    def edit(hdul):
        for hdu in hdul[1:]:
            for key in (
                "CTYPE1",
                "CTYPE2",
                "CRVAL1",
                "CRVAL2",
                "CDELT1",
                "CDELT2",
                "CRPIX1",
                "CRPIX2",
                "CUNIT1",
                "CUNIT2",
                "PC1_1",
                "PC2_2",
                "PC1_2",
                "PC2_1",
                "LATPOLE",
                "LONPOLE",
                "RADESYS",
                "EQUINOX",
                "MJDREF",
                "WCSAXES",
                "DATEREF",
                "MJDREFI",
                "MJDREFF",
            ):
                hdu.header.remove(key, ignore_missing=True)

    with pytest.raises(CutoutError, match="no celestial WCS"):
        read_cutout(_write(tmp_path, edit))


def test_truncated_file(tmp_path):
    path = write_cutout(tmp_path / "t.fits", synthetic_cutout("t"))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(CutoutError, match=r"t\.fits: unreadable or truncated"):
        read_cutout(path, bands=tuple("ugriz"))


def test_missing_file(tmp_path):
    with pytest.raises(CutoutError, match="file not found"):
        read_cutout(tmp_path / "nope.fits")


def test_psf_hdus_round_trip_normalised(tmp_path):
    from clumpcat.survey.psf import draw_psf, measure_fwhm

    cutout = _psf_cutout()
    psf = draw_psf("moffat", 3.5, beta=3.0, half_width=12)
    cutout.psf = {"r": 2.0 * psf}  # any scale on disk; read back with unit sum
    path = write_cutout(tmp_path / "g1.fits", cutout)
    back = read_cutout(path)
    assert set(back.psf) == {"r"}
    np.testing.assert_allclose(back.psf["r"].sum(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(back.psf["r"], psf, rtol=1e-5, atol=1e-9)
    assert abs(measure_fwhm(back.psf["r"]) - measure_fwhm(psf)) < 1e-3


def test_psf_hdu_with_even_side_is_a_clear_error(tmp_path):
    cutout = _psf_cutout()
    cutout.psf = {"r": np.ones((10, 10))}
    path = write_cutout(tmp_path / "g2.fits", cutout)
    with pytest.raises(CutoutError, match=r"g2\.fits.*PSF_R.*odd"):
        read_cutout(path)


def _psf_cutout():
    from clumpcat.survey.simulate.observe import tan_wcs

    rng = np.random.default_rng(0)
    images = {b: rng.normal(size=(32, 32)).astype(np.float32) for b in "gr"}
    return Cutout(objid="g", images=images, wcs=tan_wcs(150.0, 2.0, (32, 32)), psf_fwhm={"g": 1.4, "r": 1.3})
