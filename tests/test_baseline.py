"""Tests of clumpcat.evaluation.baseline, the classical peak finder."""

import numpy as np
import pandas as pd
import pytest
from astropy.wcs import WCS
from scipy import ndimage

from clumpcat.errors import InputError
from clumpcat.evaluation.baseline import (
    baseline_cutout,
    find_clump_peaks,
    significance_to_score,
)
from clumpcat.matching import completeness_purity
from clumpcat.survey.cutouts import Cutout

FWHM = 4.0
N = 121
SOURCES = [(40.0, 60.0), (75.0, 50.0), (60.0, 82.0), (52.0, 40.0), (80.0, 75.0)]


def _gauss(x0, y0, flux, fwhm=FWHM):
    yy, xx = np.mgrid[:N, :N]
    s = fwhm / 2.3548
    return flux * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * s * s)) / (2 * np.pi * s * s)


def _disc(rng, with_sources=True):
    yy, xx = np.mgrid[:N, :N]
    r = np.hypot(xx - 60, (yy - 60) / 0.8)
    # a PSF-convolved exponential disc of ~1000 nanomaggies
    image = ndimage.gaussian_filter(np.exp(-r / 14.0), FWHM / 2.3548)
    if with_sources:
        for x, y in SOURCES:
            image += _gauss(x, y, 15.0)  # 1.5 per cent of the host each
    image += rng.normal(0.0, 0.02, image.shape)
    mask = r < 40
    return image, mask


def test_finds_bright_point_sources_on_a_smooth_disc():
    image, mask = _disc(np.random.default_rng(3))
    found = find_clump_peaks(image, FWHM, mask)
    dets = found.assign(objid="g", fwhm_r_px=FWHM)
    truth = pd.DataFrame({"objid": "g", "x": [s[0] for s in SOURCES], "y": [s[1] for s in SOURCES]})
    cp = completeness_purity(dets, truth, [0.5]).iloc[0]
    assert cp["completeness"] == 1.0
    assert cp["purity"] >= 0.8
    # positions are the clumps' centres, not a pixel off
    top = found.head(len(SOURCES))
    for x, y in SOURCES:
        assert np.min(np.hypot(top["x"] - x, top["y"] - y)) < 0.25
    # scores in (0, 1), sorted, boxes centred on the position with side 2.5 FWHM
    assert found["score"].between(0, 1).all() and found["score"].is_monotonic_decreasing
    side = found["box_x1"] - found["box_x0"]
    assert np.allclose(side, 2.5 * FWHM)
    assert np.allclose((found["box_x0"] + found["box_x1"]) / 2 - 0.5, found["x"])


def test_pure_noise_gives_nothing_at_high_threshold():
    rng = np.random.default_rng(5)
    image = rng.normal(0.0, 0.02, (N, N))
    mask = np.zeros((N, N), bool)
    mask[20:100, 20:100] = True
    found = find_clump_peaks(image, FWHM, mask)
    assert (found["score"] >= 0.8).sum() == 0


def test_peaks_outside_the_mask_are_dropped():
    image, _ = _disc(np.random.default_rng(3))
    mask = np.zeros_like(image, dtype=bool)
    mask[:, :58] = True  # only the sources at x = 40 and 52
    found = find_clump_peaks(image, FWHM, mask)
    assert (found.loc[found.score >= 0.5, "x"] < 58).all()
    assert (found["score"] >= 0.5).sum() == 2


def test_score_is_monotone_and_half_at_snr_half():
    s = significance_to_score([1, 3, 5, 8, 20])
    assert np.all(np.diff(s) > 0) and s[2] == pytest.approx(0.5)
    assert 0 < s.min() and s.max() < 1


def test_cutout_wrapper_adds_contract_columns():
    image, mask = _disc(np.random.default_rng(3))
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.0, 2.0]
    wcs.wcs.crpix = [61.0, 61.0]
    wcs.wcs.cdelt = [-0.396 / 3600, 0.396 / 3600]
    cut = Cutout(
        "g1", {"g": image.astype(np.float32), "r": image.astype(np.float32)}, wcs, {"g": 1.6, "r": 1.584}
    )
    out = baseline_cutout(cut, mask)
    for col in ("objid", "x", "y", "ra", "dec", "box_x0", "box_y1", "score", "label", "fwhm_r_px"):
        assert col in out.columns
    assert (out["objid"] == "g1").all() and (out["label"] == "normal").all()
    assert out["fwhm_r_px"].iloc[0] == pytest.approx(4.0, rel=1e-3)
    assert np.all(np.abs(out["dec"] - 2.0) < 0.01)


def test_bad_inputs():
    with pytest.raises(InputError, match="fwhm_px"):
        find_clump_peaks(np.zeros((10, 10)), -1.0, None)
    with pytest.raises(InputError, match="shape"):
        find_clump_peaks(np.zeros((10, 10)), 2.0, np.ones((5, 5), bool))


def test_cli_runs_a_shard_and_records_failures(tmp_path):
    from clumpcat.cli import main
    from clumpcat.ledger import LedgerEntry, ledger_frame
    from clumpcat.survey.cutouts import write_cutout
    from clumpcat.tables import read_table, write_table

    image, _ = _disc(np.random.default_rng(7))
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.0, 2.0]
    wcs.wcs.crpix = [61.0, 61.0]
    wcs.wcs.cdelt = [-0.396 / 3600, 0.396 / 3600]
    psf = dict.fromkeys("ugriz", FWHM * 0.396)
    images = {b: image.astype(np.float32) for b in "ugriz"}
    write_cutout(tmp_path / "cutouts" / "g1.fits", Cutout("g1", images, wcs, psf))
    gal = pd.DataFrame({"objid": ["g1", "g2", "g3"], "ra": [150.0] * 3, "dec": [2.0] * 3})
    write_table(gal, tmp_path / "galaxies.parquet")
    status = ledger_frame(
        [LedgerEntry("g1", "ok"), LedgerEntry("g2", "ok"), LedgerEntry("g3", "failed", "render", "bad")]
    )
    write_table(status, tmp_path / "status-render.parquet")
    rc = main(
        [
            "baseline",
            "--galaxies",
            str(tmp_path / "galaxies.parquet"),
            "--cutouts",
            str(tmp_path / "cutouts"),
            "--status-in",
            str(tmp_path / "status-render.parquet"),
            "--out",
            str(tmp_path / "baseline.parquet"),
            "--status-out",
            str(tmp_path / "status-baseline.parquet"),
        ]
    )
    assert rc == 0
    out = read_table(tmp_path / "baseline.parquet")
    assert set(out["objid"]) == {"g1"}
    strong = out[out["score"] >= 0.5]
    for x, y in SOURCES:
        assert np.min(np.hypot(strong["x"] - x, strong["y"] - y)) < 1.0
    st = read_table(tmp_path / "status-baseline.parquet").set_index("objid")
    assert st.loc["g1", "status"] == "ok"
    assert st.loc["g2", "status"] == "failed" and st.loc["g2", "stage"] == "baseline"
    assert st.loc["g3", "stage"] == "render"
