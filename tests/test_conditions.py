"""Observing conditions measured on cutouts, metrics per condition, photometric pulls."""

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from clumpcat.cli import main
from clumpcat.evaluation.conditions import (
    NOMINAL_SKY_SIGMA_R,
    UNKNOWN,
    measure_conditions,
    psf_shape,
    psf_wing_excess,
    seeing_bin,
    sky_noise_tier,
    stored_host_masks,
)
from clumpcat.evaluation.evaluate import evaluate_run, truth_boxes
from clumpcat.evaluation.pulls import pull_summary, pull_table
from clumpcat.survey.cutouts import write_cutout
from clumpcat.survey.psf import draw_psf
from clumpcat.survey.segments import GalaxySegment, SegmentSet, write_segments
from clumpcat.tables import write_table

from .conftest import synthetic_cutout

FWHM = 4.0


def _cutout(objid="g0", tier=1.6, fwhm_arcsec=1.4, psf=None, ivar=True, pixel_scale=0.396, seed=0):
    # Per-pixel noise that reads as `tier` x nominal once scaled to a 0.396" pixel.
    sigma = tier * NOMINAL_SKY_SIGMA_R * 0.396 / pixel_scale
    cut = synthetic_cutout(
        objid,
        shape=(96, 96),
        bands=("g", "r"),
        psf_fwhm=fwhm_arcsec,
        pixel_scale=pixel_scale,
        noise=sigma,
        seed=seed,
    )
    if not ivar:
        cut = replace(cut, ivar={})
    if psf is not None:
        cut = replace(cut, psf={"r": psf})
    return cut


def test_tier_and_bins_from_a_cutout_of_known_noise_and_psf():
    moffat = draw_psf("moffat", 1.4 / 0.396, beta=2.5)
    row = measure_conditions(_cutout(tier=1.6, fwhm_arcsec=1.4, psf=moffat))
    assert row["noise_source"] == "ivar"
    assert row["sky_noise_ratio"] == pytest.approx(1.6, rel=0.01)
    assert (row["sky_tier"], row["seeing_bin"], row["psf_shape"]) == ("x1.6", '1.2-1.6"', "strong wings")
    # Without IVAR the robust scatter of the sky pixels gives the same tier;
    # with no PSF image the shape is unknown.
    row = measure_conditions(_cutout(tier=0.6, fwhm_arcsec=2.1, ivar=False, seed=3))
    assert row["noise_source"] == "pixels"
    assert row["sky_noise_ratio"] == pytest.approx(0.6, rel=0.06)
    assert (row["sky_tier"], row["seeing_bin"], row["psf_shape"]) == ("x0.6", '>=2.0"', UNKNOWN)
    # A finer pixel grid of the same depth per unit area reads the same tier.
    row = measure_conditions(_cutout(tier=2.2, pixel_scale=0.2, ivar=False, seed=4))
    assert row["sky_tier"] == "x2.2"


def test_the_stored_host_segment_sets_the_sky(tmp_path):
    # Noise three times higher on the right half: with the stored segment
    # covering that half, the sky is the left half and reads x1; segmented
    # afresh (the noisy half is not a galaxy) the sky is both halves.
    cut = _cutout(tier=1.0, ivar=False, seed=5)
    rng = np.random.default_rng(6)
    image = cut.images["r"].copy()
    image[:, 48:] += rng.normal(0.0, 2.0 * NOMINAL_SKY_SIGMA_R, image[:, 48:].shape)
    cut = replace(cut, images={**cut.images, "r": image})
    host = np.zeros(image.shape, dtype=bool)
    host[:, 48:] = True
    stored = measure_conditions(cut, host_mask=host)
    fresh = measure_conditions(cut)
    assert stored["sky_noise_ratio"] == pytest.approx(1.0, rel=0.1)
    assert fresh["sky_noise_ratio"] > 1.3
    # the shard file round trip: what `clumpcat segment` stored is what is used
    segments = SegmentSet({"g0": GalaxySegment("g0", host, (48.0, 48.0), 0.0, 3.5)}, {"g1": "no host"}, {})
    write_segments(tmp_path / "segments.npz", segments)
    masks = stored_host_masks([tmp_path / "segments.npz"])
    assert list(masks) == ["g0"] and np.array_equal(masks["g0"], host)


def test_tiers_are_nearest_in_log_and_seeing_edges():
    # Boundary between x0.6 and x1 lies at sqrt(0.6) = 0.775, not at 0.8.
    assert sky_noise_tier(0.77) == 0.6 and sky_noise_tier(0.78) == 1.0
    assert sky_noise_tier(5.0) == 2.2 and sky_noise_tier(0.1) == 0.3
    assert np.isnan(sky_noise_tier(0.0))
    assert [seeing_bin(f) for f in (0.9, 1.2, 1.59, 2.0, float("nan"))] == [
        '<1.2"',
        '1.2-1.6"',
        '1.2-1.6"',
        '>=2.0"',
        UNKNOWN,
    ]


@pytest.mark.parametrize(
    ("family", "kwargs", "shape"),
    [
        ("gaussian", {}, "gaussian-like"),
        ("moffat", {"beta": 4.765}, "moffat"),
        ("double_gaussian", {"wing_fraction": 0.15}, "moffat"),
        ("moffat", {"beta": 2.5}, "strong wings"),
    ],
)
def test_psf_shape_from_the_wings(family, kwargs, shape):
    psf = draw_psf(family, 3.5, **kwargs)
    assert psf_shape(psf) == shape
    if family == "gaussian":
        assert abs(psf_wing_excess(psf)) < 0.002
    assert psf_shape(None) == UNKNOWN


def _galaxies(n=4):
    return pd.DataFrame(
        {
            "objid": [f"g{k}" for k in range(n)],
            "ra": np.linspace(10, 11, n),
            "dec": np.zeros(n),
            "psf_fwhm_r": [1.0, 1.3, 1.7, 2.1][:n],
        }
    )


def _truth(galaxies, per=3):
    rows = []
    for objid in galaxies["objid"]:
        for k in range(per):
            rows.append(
                {
                    "objid": objid,
                    "source_id": len(rows),
                    "x": 20.0 + 20 * k,
                    "y": 30.0,
                    "label": "normal",
                    "flux_ratio_u": [0.01, 0.05, 0.2][k],
                    "fwhm_r_px": FWHM,
                    "detectable": True,
                }
            )
    return pd.DataFrame(rows)


def test_conditions_block_counts_per_tier(tmp_path):
    gal = _galaxies()
    truth = _truth(gal)
    dets = truth_boxes(truth).assign(score=0.9, fwhm_r_px=FWHM)
    # g2 and g3 are noisy: the model misses their faintest clump and adds two
    # candidates on empty sky in each; the baseline finds only the brightest.
    noisy = dets["objid"].isin(["g2", "g3"])
    dets = dets[~(noisy & (dets["flux_ratio_u"] < 0.03))]
    sky = dets[dets["objid"].isin(["g2", "g3"])].assign(x=150.0, score=0.4)
    sky = pd.concat([sky.iloc[:2], sky.iloc[:2].assign(y=100.0)], ignore_index=True)
    model = pd.concat([dets, sky], ignore_index=True)
    base = dets[dets["flux_ratio_u"] > 0.1].assign(score=0.35)
    conditions = pd.DataFrame(
        {
            "objid": gal["objid"],
            "sky_tier": ["x1", "x1", "x2.2", "x2.2"],
            "seeing_bin": [seeing_bin(f) for f in gal["psf_fwhm_r"]],
            "psf_shape": ["moffat", "moffat", "moffat", UNKNOWN],
        }
    )
    metrics = evaluate_run(model, truth, gal, tmp_path, baseline=base, conditions=conditions)
    block = metrics["conditions"]
    assert block["threshold"] == 0.3 and block["truth_set"] == "detectable"
    assert block["n_galaxies"]["sky_tier"] == {"x1": 2, "x2.2": 2}
    nominal, noisy_tier = block["model"]["sky_tier"]["x1"], block["model"]["sky_tier"]["x2.2"]
    assert (nominal["completeness"], nominal["purity"]) == (1.0, 1.0)
    assert noisy_tier["n_truth"] == 6 and noisy_tier["n_tp"] == 4
    assert noisy_tier["completeness_3pct"] == 1.0
    assert noisy_tier["n_det"] == 8 and noisy_tier["purity"] == pytest.approx(4 / 8)
    assert noisy_tier["purity_lo"] < 0.5 < noisy_tier["purity_hi"]
    assert block["baseline"]["sky_tier"]["x1"]["completeness"] == pytest.approx(1 / 3)
    assert block["model"]["psf_shape"][UNKNOWN]["n_galaxies"] == 1
    assert set(block["model"]["seeing_bin"]) == {'<1.2"', '1.2-1.6"', '1.6-2.0"', '>=2.0"'}
    table = pd.read_csv(tmp_path / "conditions.csv")
    assert set(table["detector"]) == {"model", "baseline"}
    # A candidate below the threshold is not counted.
    higher = evaluate_run(model, truth, gal, tmp_path, conditions=conditions, score_threshold=0.5)
    assert higher["conditions"]["model"]["sky_tier"]["x2.2"]["purity"] == 1.0


def test_cli_measures_conditions_from_cutouts(tmp_path):
    gal = _galaxies(2)
    truth = _truth(gal)
    for k, objid in enumerate(gal["objid"]):
        write_cutout(tmp_path / "cutouts" / f"{objid}.fits", _cutout(objid, tier=[1.0, 2.2][k], seed=k))
    write_table(gal, tmp_path / "galaxies.parquet")
    write_table(truth, tmp_path / "truth.parquet")
    write_table(truth_boxes(truth).assign(score=0.9), tmp_path / "clumps.parquet")
    args = [
        "evaluate",
        "--clumps",
        str(tmp_path / "clumps.parquet"),
        "--truth",
        str(tmp_path / "truth.parquet"),
    ]
    args += ["--galaxies", str(tmp_path / "galaxies.parquet"), "--cutouts", str(tmp_path / "cutouts")]
    assert main([*args, "--out-dir", str(tmp_path / "ev")]) == 0
    block = json.loads((tmp_path / "ev" / "metrics.json").read_text())["conditions"]
    assert block["n_galaxies"]["sky_tier"] == {"x1": 1, "x2.2": 1}
    assert block["n_galaxies"]["psf_shape"] == {UNKNOWN: 2}


def _injected(n=400, seed=1):
    rng = np.random.default_rng(seed)
    truth = pd.DataFrame(
        {
            "objid": np.repeat([f"g{k}" for k in range(n // 4)], 4),
            "source_id": np.arange(n),
            "x": np.tile([20.0, 40.0, 60.0, 80.0], n // 4),
            "y": 30.0,
            "flux_g": rng.uniform(2.0, 20.0, n),
            "flux_r": rng.uniform(2.0, 20.0, n),
            "fwhm_r_px": FWHM,
            "injected": np.tile([True, True, True, False], n // 4),
        }
    )
    err = 0.5
    phot = truth[["objid", "x", "y"]].assign(score=0.9)
    pulls = {}
    for band, scale in (("g", 1.0), ("r", 2.0)):  # r errors are half the true scatter
        pulls[band] = rng.normal(0.0, scale, n)
        phot[f"flux_nmgy_{band}"] = truth[f"flux_{band}"] + pulls[band] * err
        phot[f"flux_nmgy_err_{band}"] = err
    return truth, phot, pulls


def test_pulls_of_a_known_table():
    truth, phot, pulls = _injected()
    phot.loc[5, "score"] = 0.1  # below the threshold: not recovered
    table = pull_table(phot, truth, threshold=0.3)
    assert set(table["band"]) == {"g", "r"}
    assert len(table) == 2 * (300 - 1)  # injected rows only, one under threshold
    summary = pull_summary(table, min_snr=5.0, threshold=0.3)
    for band, scale in (("g", 1.0), ("r", 2.0)):
        sel = truth["injected"].to_numpy() & (truth[f"flux_{band}"].to_numpy() / 0.5 > 5.0)
        sel[5] = False
        expected = pulls[band][sel]
        got = summary["bands"][band]
        assert got["n"] == sel.sum()
        assert got["std"] == pytest.approx(np.std(expected, ddof=1))
        assert got["median"] == pytest.approx(np.median(expected))
        assert got["robust_std"] == pytest.approx(scale, rel=0.15)
    assert summary["bands"]["g"]["within_target"] is True
    assert summary["bands"]["r"]["within_target"] is False
    # Every candidate sits on its clump: all recoveries are centred.
    assert summary["centred"]["g"]["n"] == summary["bands"]["g"]["n"]
    # A band without any clump is still reported, with n = 0.
    empty = pull_summary(table.iloc[:0], bands=["g"])
    assert empty["bands"]["g"]["n"] == 0 and np.isnan(empty["bands"]["g"]["median"])


def test_offset_candidates_are_not_centred():
    truth, phot, _ = _injected(40)
    phot["x"] += np.where(np.arange(len(phot)) % 2 == 0, 0.5 * FWHM, 0.0)  # half of them 0.5 FWHM off
    table = pull_table(phot, truth, threshold=0.3)
    assert set(table["offset_fwhm"].round(6)) == {0.0, 0.5}
    summary = pull_summary(table, min_snr=0.0)
    assert summary["centred"]["g"]["n"] == (table.query("band == 'g'")["offset_fwhm"] < 0.2).sum() > 0
    assert summary["centred"]["g"]["n"] < summary["bands"]["g"]["n"]


def test_metrics_json_has_the_pulls(tmp_path):
    truth, phot, _ = _injected(40)
    gal = pd.DataFrame({"objid": truth["objid"].unique(), "ra": 1.0, "dec": 0.0, "psf_fwhm_r": 1.6})
    clumps = truth_boxes(truth).assign(score=0.9)
    metrics = evaluate_run(
        clumps,
        truth,
        gal,
        tmp_path,
        injected_truth=truth.assign(flux_ratio_u=0.05),
        injected_clumps=clumps,
        injected_photometry=phot,
    )
    block = metrics["photometry_pulls"]
    assert block["min_snr"] == 5.0 and block["threshold"] == 0.3
    assert set(block["bands"]) == {"g", "r"} and block["bands"]["g"]["n"] > 10
    assert (tmp_path / "photometry_pulls.parquet").exists()


def test_blended_injections_are_flagged_and_left_out_of_the_isolated_block():
    """A host clump next to an injected one (or another candidate) biases it: flagged, not judged."""
    truth, phot, _ = _injected(40)
    first = truth.iloc[0]
    # The host's own clump 1 FWHM from the first injected clump, bright in g and r.
    host = pd.DataFrame(
        {
            "objid": [first["objid"]],
            "x": [first["x"] + FWHM],
            "y": [first["y"]],
            "flux_g": [5.0],
            "flux_r": [0.1],
        }
    )
    # An extra candidate 1.5 FWHM from the second injected clump.
    second = truth.iloc[1]
    extra = phot.iloc[[1]].assign(x=second["x"] + 1.5 * FWHM)
    table = pull_table(pd.concat([phot, extra], ignore_index=True), truth, threshold=0.3, host_truth=host)
    flagged = table[table["blended"]]
    assert set(zip(flagged["source_id"], flagged["band"], strict=True)) == {(0, "g"), (1, "g"), (1, "r")}
    summary = pull_summary(table, min_snr=0.0)
    for band, n_blended in (("g", 2), ("r", 1)):
        assert summary["isolated"][band]["n"] == summary["centred"][band]["n"] - n_blended
    # Without a host truth and with no extra candidate nothing is blended.
    assert not pull_table(phot, truth, threshold=0.3)["blended"].any()
