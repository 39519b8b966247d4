"""The plain-FITS scanner reads what astropy reads, and leaves astropy every file it does not handle."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from clumpcat.survey import cutouts
from clumpcat.survey.cutouts import read_cutout, write_cutout
from clumpcat.survey.fits_scan import scan_images

from .conftest import synthetic_cutout


def _full_cutout():
    from clumpcat.survey.psf import draw_psf

    cutout = synthetic_cutout("g7", shape=(48, 40))
    cutout.psf = {b: draw_psf("moffat", 3.0 + i, beta=3.0, half_width=8) for i, b in enumerate("gri")}
    cutout.noise_correction = {"g": 1.25, "r": 1.5}
    return cutout


def _read_with_astropy(path, bands=None):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cutouts, "scan_images", lambda _path: None)
        return read_cutout(path, bands=bands)


@pytest.mark.parametrize("bands", [None, ("r",), ("z", "g")])
def test_scanned_cutout_is_the_one_astropy_reads(tmp_path, bands):
    path = write_cutout(tmp_path / "g7.fits", _full_cutout())
    assert scan_images(path) is not None  # the fast path is the one under test
    fast, slow = read_cutout(path, bands=bands), _read_with_astropy(path, bands=bands)
    assert fast.bands == slow.bands
    for name in ("images", "ivar", "psf"):
        a, b = getattr(fast, name), getattr(slow, name)
        assert a.keys() == b.keys(), name
        for band in a:
            assert a[band].dtype == b[band].dtype and a[band].dtype.isnative
            np.testing.assert_array_equal(a[band], b[band])
    assert fast.psf_fwhm == slow.psf_fwhm
    assert fast.noise_correction == slow.noise_correction
    assert fast.wcs.to_header() == slow.wcs.to_header()
    assert fast.pixel_scale == slow.pixel_scale


def test_header_values_are_astropys(tmp_path):
    header = fits.Header()
    header["QUOTE"] = ("it's a 'test'", "quotes doubled on disk")
    header["TRAIL"] = "padded   "
    header["YES"] = True
    header["NO"] = False
    header["INT"] = -42
    header["BIG"] = 123456789012
    header["FLT"] = (-1.25e-13, "a comment / with a slash")
    header["UNDEF"] = None
    header.append(("DUP", 1))
    header.append(("DUP", 2))  # astropy's header["DUP"] is the first
    header["HISTORY"] = "made by a test"
    header["COMMENT"] = "x = 3"
    header.append(fits.Card.fromstring("DEXP    =              1.5D+02 / Fortran exponent"))
    header.append(fits.Card.fromstring("HIERARCH ESO DET CHIP = 3"))
    path = tmp_path / "cards.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((3, 2), ">f8"), header, name="sci")]).writeto(
        path
    )

    scanned = scan_images(path)
    assert [h.name for h in scanned] == ["", "SCI"]
    with fits.open(path) as hdul:
        expected = hdul[1].header
        for keyword in scanned[1].header:
            assert scanned[1].header[keyword] == expected[keyword], keyword
            assert type(scanned[1].header[keyword]) is type(expected[keyword]), keyword
        assert scanned[1].header["dexp"] == 150.0
        assert "TRAIL" in scanned[1].header and "ESO DET CHIP" not in scanned[1].header
        np.testing.assert_array_equal(scanned[1].data(), hdul[1].data)
        assert scanned[1].data().dtype == np.float64 and scanned[1].data().dtype.isnative
    assert scanned[0].data() is None


def _scaled_int(path, header=None):
    hdu = fits.ImageHDU(np.arange(400, dtype=np.float32).reshape(20, 20), header, name="R")
    hdu.scale("int16", bscale=0.5, bzero=10.0)
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path)


def _compressed(path):
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(np.ones((20, 20), np.float32), name="R")]).writeto(
        path
    )


def _table(path):
    table = fits.BinTableHDU.from_columns([fits.Column(name="a", format="E", array=np.ones(3))], name="T")
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(path)


def _long_string(path):
    hdu = fits.ImageHDU(np.ones((20, 20), np.float32), name="R")
    hdu.header["NOTE"] = "a long note " * 10  # written with CONTINUE cards
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path)


def _truncated(path):
    write_cutout(path, synthetic_cutout("t"))
    path.write_bytes(path.read_bytes()[:-3000])


def _trailing_bytes(path):
    write_cutout(path, synthetic_cutout("t"))
    path.write_bytes(path.read_bytes() + b"extra")


def _non_ascii(path):
    write_cutout(path, synthetic_cutout("t"))
    data = bytearray(path.read_bytes())
    at = data.index(b"galaxy identifier")
    data[at : at + 2] = "é".encode()
    path.write_bytes(bytes(data))


def _squeezed_value_indicator(path):
    write_cutout(path, synthetic_cutout("t"))
    data = bytearray(path.read_bytes())
    at = data.index(b"PSF_FWHM= ")
    data[at + 9 : at + 10] = b"1"  # "PSF_FWHM=1..." is no standard card
    path.write_bytes(bytes(data))


def _random_groups(path):
    fits.GroupsHDU(
        fits.GroupData(np.ones((2, 1, 1, 1), np.float32), parnames=["p"], pardata=[np.ones(2)], bitpix=-32)
    ).writeto(path)


@pytest.mark.parametrize(
    "write",
    [
        _scaled_int,
        _compressed,
        _table,
        _long_string,
        _truncated,
        _trailing_bytes,
        _non_ascii,
        _squeezed_value_indicator,
        _random_groups,
    ],
)
def test_files_outside_the_plain_subset_are_left_to_astropy(tmp_path, write):
    path = tmp_path / "x.fits"
    write(path)
    assert scan_images(path) is None


def test_scaled_integer_cutout_reads_through_astropy(tmp_path):
    path = tmp_path / "s.fits"
    header = synthetic_cutout("s", shape=(20, 20), bands="r").wcs.to_header()
    header["PSF_FWHM"] = 1.3
    _scaled_int(path, header)
    assert scan_images(path) is None
    back = read_cutout(path, bands=("r",))
    assert back.psf_fwhm == {"r": 1.3}
    np.testing.assert_allclose(back.images["r"], np.arange(400, dtype=np.float32).reshape(20, 20))


def test_truncated_cutout_is_reported_by_astropy(tmp_path):
    path = tmp_path / "t.fits"
    _truncated(path)
    with pytest.raises(cutouts.CutoutError, match=r"t\.fits: unreadable or truncated"):
        read_cutout(path)


def test_cutout_cut_short_after_its_headers_were_read_is_a_cutout_error(tmp_path, monkeypatch):
    path = write_cutout(tmp_path / "late.fits", synthetic_cutout("late"))

    def scan_then_truncate(p):
        scanned = scan_images(p)
        p.write_bytes(p.read_bytes()[:5000])  # another process rewrites it meanwhile
        return scanned

    monkeypatch.setattr(cutouts, "scan_images", scan_then_truncate)
    with pytest.raises(cutouts.CutoutError, match=r"late\.fits: unreadable or truncated FITS"):
        read_cutout(path)
