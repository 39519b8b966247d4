"""Tests of the r-band host-galaxy segmentation (Section 4.3.2)."""

from __future__ import annotations

import numpy as np
import pytest

from clumpcat.errors import ClumpcatWarning
from clumpcat.postprocess.hostmask import clump_exclusion_mask, in_mask, photometry_mask
from clumpcat.settings import PostprocessSettings
from clumpcat.survey.hostsegment import host_galaxy_mask, host_segment_id, segment_host

FWHM = 3.5
SIGMA = 0.02


def disc_image(n=160, h=10.0, q=0.6, i0=1.0, sigma=SIGMA, seed=0, star=None):
    """Inclined exponential disc at the centre + Gaussian noise (+ a PSF star)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:n, :n].astype(float)
    c = (n - 1) / 2
    image = i0 * np.exp(-np.hypot(xx - c, (yy - c) / q) / h)
    if star is not None:
        sx, sy, flux = star
        s = FWHM / 2.3548
        image += flux / (2 * np.pi * s * s) * np.exp(-((xx - sx) ** 2 + (yy - sy) ** 2) / (2 * s * s))
    return image + rng.normal(0.0, sigma, image.shape)


def isophote_area(h=10.0, q=0.6, i0=1.0, sigma=SIGMA, nsigma=PostprocessSettings.host_nsigma):
    """Area inside the isophote at nsigma x sigma of an exponential disc."""
    r_iso = h * np.log(i0 / (nsigma * sigma))
    return np.pi * r_iso**2 * q


def test_mask_covers_disc_and_matches_isophote():
    image = disc_image()
    mask = host_galaxy_mask(image, FWHM)
    assert mask.dtype == bool and mask.shape == image.shape
    assert mask[80, 80] and not mask[0, 0] and not mask[-1, -1]
    ratio = mask.sum() / isophote_area()
    assert 0.75 < ratio < 1.33, ratio


def test_background_and_rms_recovered():
    host = segment_host(disc_image(), FWHM)
    assert host.found and host.centre_offset_px == 0.0
    assert abs(np.median(host.background)) < 0.2 * SIGMA
    assert np.median(host.background_rms) == pytest.approx(SIGMA, rel=0.1)


def test_background_star_is_its_own_segment():
    image = disc_image(star=(145.0, 15.0, 20.0))
    host = segment_host(image, FWHM)
    assert host.segmentation.data[15, 145] > 0  # the star was detected
    assert not host.mask[15, 145]  # but is not the host
    assert host.mask[79, 79]


def test_nan_pixels_are_masked_not_fatal():
    image = disc_image()
    image[:, 80] = np.nan  # a bad column through the centre
    image[:20, :] = np.nan  # an off-footprint strip
    mask = host_galaxy_mask(image, FWHM)
    ratio = mask.sum() / isophote_area()
    assert 0.75 < ratio < 1.33
    assert mask[70, 80]  # the bad column is bridged, the disc stays one segment
    assert not mask[:20].any()


def test_blank_image_warns_and_gives_empty_mask():
    with pytest.warns(ClumpcatWarning, match="no host-galaxy segment"):
        mask = host_galaxy_mask(np.zeros((64, 64)), FWHM)
    assert not mask.any()
    with pytest.warns(ClumpcatWarning):
        assert not host_galaxy_mask(np.full((64, 64), np.nan), FWHM).any()


def test_off_centre_galaxy_found_with_centre_argument():
    image = np.roll(disc_image(), (-30, 25), axis=(0, 1))  # galaxy at x=104.5, y=49.5
    host = segment_host(image, FWHM, centre=(104.5, 49.5))
    assert host.mask[50, 104] and host.centre_offset_px == 0.0


def test_host_segment_id_nearest_and_max_offset():
    labels = np.zeros((21, 21), dtype=int)
    labels[2:5, 2:5] = 1
    labels[10:13, 15:18] = 2
    assert host_segment_id(labels, (16.0, 11.0)) == (2, 0.0)
    sid, offset = host_segment_id(labels, (10.0, 10.0))  # unsegmented centre
    assert sid == 2 and offset == pytest.approx(5.0)
    assert host_segment_id(labels, (10.0, 10.0), max_offset_px=4.0)[0] == 0
    assert host_segment_id(np.zeros((5, 5), int), (2.0, 2.0))[0] == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fwhm_px": 0.0}, "fwhm_px"),
        ({"fwhm_px": np.nan}, "fwhm_px"),
        ({"fwhm_px": 3.0, "nsigma": -1.0}, "nsigma"),
        ({"fwhm_px": 3.0, "npixels": 0}, "npixels"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        segment_host(np.zeros((32, 32)), **kwargs)


def test_non_2d_image_rejected():
    with pytest.raises(ValueError, match="2-D"):
        segment_host(np.zeros((3, 32, 32)), 3.0)


def test_in_mask_edges():
    mask = np.zeros((10, 10), dtype=bool)
    mask[5, 5] = True
    x = np.array([5.0, 5.49, 5.5, -3.0, 12.0, np.nan])
    y = np.array([5.0, 4.51, 5.0, 5.0, 5.0, 5.0])
    assert in_mask(x, y, mask).tolist() == [True, True, False, False, False, False]


def test_photometry_mask_masks_outside_and_other_clumps():
    host = np.zeros((40, 40), dtype=bool)
    host[5:35, 5:35] = True
    x, y = np.array([12.0, 28.0]), np.array([20.0, 20.0])
    m = photometry_mask(host, x, y, 3.0, index=0)
    assert m[0, 0]  # outside the galaxy
    assert not m[20, 12]  # the measured clump
    assert m[20, 28] and m[20, 31] and not m[20, 32]  # the other clump's disc, radius 3
    both = clump_exclusion_mask(host.shape, x, y, 3.0)
    assert both[20, 12] and both[20, 28]
    assert both.sum() == 2 * 29  # 29 pixel centres within r=3 of a pixel centre
