"""Tests of clumpcat.matching: centroid matching and completeness/purity."""

import numpy as np
import pandas as pd
import pytest

from clumpcat.errors import InputError
from clumpcat.matching import (
    binomial_interval,
    completeness_purity,
    match_catalogues,
    match_to_truth,
    truth_match_scores,
)


def test_match_radius_is_075_fwhm():
    fwhm = 4.0
    det, found = match_to_truth([10 + 0.7 * fwhm], [10.0], [0.9], [10.0], [10.0], fwhm)
    assert det.tolist() == [0] and found.tolist() == [True]
    det, found = match_to_truth([10 + 0.8 * fwhm], [10.0], [0.9], [10.0], [10.0], fwhm)
    assert det.tolist() == [-1] and found.tolist() == [False]
    # strictly less than 0.75 FWHM (Section 4.4.2)
    det, _ = match_to_truth([10 + 0.75 * fwhm], [10.0], [0.9], [10.0], [10.0], fwhm)
    assert det.tolist() == [-1]


def test_one_to_one_greedy_by_score():
    # two detections near one true clump: the higher score takes it
    det, found = match_to_truth([10.5, 10.2], [10.0, 10.0], [0.6, 0.9], [10.0], [10.0], 4.0)
    assert det.tolist() == [-1, 0]
    assert found.tolist() == [True]


def test_nearest_free_truth_is_taken():
    det, found = match_to_truth([10.0, 13.0], [10.0, 10.0], [0.9, 0.8], [10.5, 12.5], [10.0, 10.0], 4.0)
    assert det.tolist() == [0, 1]
    assert found.all()


def test_empty_inputs_and_errors():
    det, found = match_to_truth([], [], [], [1.0], [1.0], 3.0)
    assert det.shape == (0,) and found.tolist() == [False]
    with pytest.raises(InputError, match="fwhm_px"):
        match_to_truth([1.0], [1.0], [0.5], [1.0], [1.0], 0.0)
    with pytest.raises(InputError, match="differ in length"):
        match_to_truth([1.0, 2.0], [1.0], [0.5], [1.0], [1.0], 2.0)


def _tables():
    truth = pd.DataFrame(
        {
            "objid": ["a", "a", "b", "c"],
            "source_id": [1, 2, 3, 4],
            "x": [10.0, 30.0, 20.0, 5.0],
            "y": [10.0, 30.0, 20.0, 5.0],
            "label": ["normal", "odd", "normal", "normal"],
            "flux_ratio_u": [0.1, 0.02, 0.05, 0.001],
            "detectable": [True, True, True, False],
            "fwhm_r_px": [4.0, 4.0, 3.0, 3.0],
        }
    )
    return truth


def test_perfect_detections_complete_and_pure():
    truth = _tables()
    dets = truth[["objid", "x", "y", "label", "fwhm_r_px"]].assign(
        score=0.95, flux_ratio_u=truth.flux_ratio_u
    )
    cp = completeness_purity(dets, truth)
    assert np.allclose(cp["completeness"], 1.0)
    assert np.allclose(cp["purity"], 1.0)
    assert np.allclose(cp["f1"], 1.0)
    assert cp["threshold"].tolist() == pytest.approx(np.arange(1, 10) / 10)


def test_catalogue_matching_columns_and_sweep():
    truth = _tables()
    dets = pd.DataFrame(
        {
            "objid": ["a", "a", "a", "b", "d"],
            "x": [10.5, 10.0, 30.0, 50.0, 1.0],
            "y": [10.0, 10.0, 30.0, 50.0, 1.0],
            "score": [0.9, 0.4, 0.3, 0.8, 0.7],
            "label": ["normal", "normal", "odd", "normal", "odd"],
        }
    )
    m = match_catalogues(dets, truth, {"d": 3.0})
    assert m["truth_index"].tolist() == [0, -1, 1, -1, -1]
    assert m["match_source_id"].tolist() == [1, None, 2, None, None]
    assert m["match_distance_px"].iloc[0] == pytest.approx(0.5)
    scores = truth_match_scores(m, len(truth))
    assert scores[:2].tolist() == [0.9, 0.3] and np.isnan(scores[2:]).all()

    cp = completeness_purity(dets, truth, thresholds=[0.2, 0.5])
    row = cp.set_index("threshold")
    assert row.loc[0.2, "n_tp"] == 2 and row.loc[0.2, "n_truth"] == 4
    assert row.loc[0.2, "n_det"] == 5 and row.loc[0.2, "n_det_matched"] == 2
    assert row.loc[0.5, "n_tp"] == 1 and row.loc[0.5, "n_det"] == 3
    assert row.loc[0.5, "purity"] == pytest.approx(1 / 3)

    # only detectable truth in completeness; galaxy 'd' outside the evaluated set
    cp = completeness_purity(dets, truth, [0.2], truth_subset="detectable", objids=["a", "b", "c"])
    assert cp["n_truth"].iloc[0] == 3 and cp["n_det"].iloc[0] == 4


def test_per_label_and_flux_ratio_bins():
    truth = _tables()
    dets = truth[["objid", "x", "y", "label", "fwhm_r_px"]].assign(score=0.9)
    by_label = completeness_purity(dets, truth, [0.5], by="label").set_index("label")
    assert by_label.loc["normal", "n_truth"] == 3 and by_label.loc["odd", "n_truth"] == 1
    assert by_label["completeness"].tolist() == [1.0, 1.0]
    bins = completeness_purity(dets, truth, [0.5], by="flux_ratio")
    assert bins["log_flux_ratio_lo"].tolist() == [-2.5, -2.0, -1.5, -1.0]
    # ratio 0.001 (-3 dex) falls below the lowest bin; 0.02, 0.05, 0.1 in bins 2, 3, 4
    assert bins["n_truth"].tolist() == [0, 1, 1, 1]
    assert bins["purity"].isna().all()  # no measured ratio on the detections
    dets["flux_ratio_u"] = truth["flux_ratio_u"]
    bins = completeness_purity(dets, truth, [0.5], by="flux_ratio")
    assert bins["purity"].tolist()[1:] == [1.0, 1.0, 1.0]
    with pytest.raises(InputError, match="'by'"):
        completeness_purity(dets, truth, by="colour")


def test_missing_fwhm_is_named():
    truth = _tables().drop(columns="fwhm_r_px")
    dets = truth[["objid", "x", "y"]].assign(score=0.9)
    with pytest.raises(InputError, match="a, b, c"):
        match_catalogues(dets, truth)


def test_binomial_interval_contains_estimate_and_shrinks():
    k = np.array([0, 3, 8, 10, 30, 300])
    n = np.array([10, 10, 10, 10, 100, 1000])
    lo, hi = binomial_interval(k, n)
    frac = k / n
    assert np.all(lo <= frac) and np.all(frac <= hi)
    assert lo[0] == 0.0 and hi[3] == 1.0
    widths = (hi - lo)[[1, 4, 5]]  # 0.3 at n = 10, 100, 1000
    assert widths[0] > widths[1] > widths[2]
    lo, hi = binomial_interval([0], [0])
    assert np.isnan(lo[0]) and np.isnan(hi[0])


def test_psf_fwhm_not_a_resolved_sources_size():
    # a resolved true source lists its own larger FWHM; the match radius uses the PSF
    truth = pd.DataFrame({"objid": ["a", "a"], "x": [10.0, 40.0], "y": [10.0, 40.0], "fwhm_r_px": [8.0, 4.0]})
    dets = pd.DataFrame({"objid": ["a"], "x": [14.0], "y": [10.0], "score": [0.9]})
    assert match_catalogues(dets, truth)["truth_index"].tolist() == [-1]  # 4 px > 0.75 x 4
    assert match_catalogues(dets, truth, {"a": 8.0})["truth_index"].tolist() == [0]
    assert match_catalogues(dets.assign(fwhm_r_px=6.0), truth)["truth_index"].tolist() == [0]


def test_training_validation_uses_the_evaluation_sweep():
    # One true clump; the model finds it (score 0.9) and adds one false
    # candidate on empty sky (score 0.6): at 0.5 C = 1, P = 0.5; at 0.7 P = 1.
    from clumpcat.detection.engine import validate

    truth_box = np.array([[40.0, 40.0, 50.0, 50.0]])
    pred = {
        "boxes": np.array([[40.5, 40.0, 50.5, 50.0], [100.0, 100.0, 110.0, 110.0]]),
        "scores": np.array([0.9, 0.6]),
        "labels": np.array([1, 1]),
    }
    predictions = {"g1": pred, "_targets": {"g1": {"boxes": truth_box, "labels": np.array([1])}}}
    out = validate(predictions, {"g1": 4.0}, thresholds=[0.5, 0.7])
    assert out["completeness_at_0.5"] == 1.0
    assert out["purity_at_0.5"] == 0.5
    assert out["threshold"] == 0.7 and out["purity"] == 1.0 and out["f1"] == 1.0
    assert out["n_truth"] == 1
