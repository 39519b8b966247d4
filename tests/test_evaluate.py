"""Tests of clumpcat.evaluation.evaluate: metrics.json, tables and the selection function."""

import json

import numpy as np
import pandas as pd
import pytest

from clumpcat.cli import main
from clumpcat.errors import InputError
from clumpcat.evaluation.evaluate import evaluate_run, selection_function, truth_boxes
from clumpcat.tables import read_table, write_table

FWHM = 4.0


def _galaxies(n=4):
    return pd.DataFrame(
        {
            "objid": [f"g{k}" for k in range(n)],
            "ra": np.linspace(10, 11, n),
            "dec": np.zeros(n),
            "psf_fwhm_r": FWHM * 0.396,
            "host_mag_r": np.linspace(15.2, 17.8, n),
        }
    )


def _truth(galaxies, per=3, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for objid in galaxies["objid"]:
        for k in range(per):
            rows.append(
                {
                    "objid": objid,
                    "source_id": len(rows),
                    "x": 20.0 + 20 * k,
                    "y": 30.0 + 5 * k,
                    "label": "odd" if k == 2 else "normal",
                    "kind": "star" if k == 2 else "clump",
                    "flux_ratio_u": 10 ** rng.uniform(-2.4, -0.6),
                    "fwhm_r_px": FWHM,
                    "detectable": k != 1 or objid != "g0",
                }
            )
    return pd.DataFrame(rows)


def _perfect(truth):
    dets = truth_boxes(truth)[["objid", "x", "y", "label", "box_x0", "box_y0", "box_x1", "box_y1"]]
    return dets.assign(score=0.9, ra=0.0, dec=0.0, fwhm_r_px=FWHM)


def test_perfect_model_scores_one(tmp_path):
    gal = _galaxies()
    truth = _truth(gal)
    metrics = evaluate_run(_perfect(truth), truth, gal, tmp_path)
    model = metrics["detectors"]["model"]
    assert metrics["headline_truth_set"] == "detectable"
    for truth_set in ("all", "detectable"):
        assert model["headline"][truth_set]["completeness"] == 1.0
        assert model["headline"][truth_set]["purity"] == 1.0
    assert model["coco"]["AP"] == pytest.approx(1.0)
    assert model["coco"]["F1"] == pytest.approx(1.0)
    assert metrics["meets_target"] is True
    assert model["per_label"]["all"]["odd"]["n_truth"] == 4
    assert model["per_kind"]["star"]["completeness"] == 1.0
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["n_truth"] == 12 and on_disk["n_truth_detectable"] == 11
    for name in (
        "completeness_purity.parquet",
        "completeness_purity.csv",
        "coco.csv",
        "summary.csv",
        "matched_model.parquet",
    ):
        assert (tmp_path / name).exists(), name


def test_model_and_baseline_in_one_table(tmp_path):
    gal = _galaxies()
    truth = _truth(gal)
    model = _perfect(truth)
    # the baseline finds only the first clump of each galaxy, plus one spurious peak
    base = model.groupby("objid").head(1).assign(label="normal", score=0.7)
    spurious = base.iloc[[0]].assign(x=90.0, y=90.0, score=0.95)
    base = pd.concat([base, spurious], ignore_index=True)
    metrics = evaluate_run(model, truth, gal, tmp_path, baseline=base)
    head = metrics["detectors"]["baseline"]["headline"]["all"]
    assert head["completeness"] == pytest.approx(4 / 12)
    assert head["purity"] == pytest.approx(4 / 5)
    assert head["completeness_lo"] < head["completeness"] < head["completeness_hi"]
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert set(summary["detector"]) == {"model", "baseline"}
    assert set(summary["truth_set"]) == {"all", "detectable"}
    sweep = read_table(tmp_path / "completeness_purity.parquet")
    assert set(sweep["group"]) == {"all", "label", "flux_ratio"}
    base_all = sweep.query("detector == 'baseline' and group == 'all' and truth_set == 'all'")
    # completeness falls as the threshold passes the baseline's scores
    assert base_all.set_index("threshold").loc[0.8, "n_tp"] == 0
    assert base_all.set_index("threshold").loc[0.6, "n_tp"] == 4


def test_galaxy_without_truth_counts_false_positives(tmp_path):
    gal = _galaxies()
    truth = _truth(gal).query("objid != 'g3'")
    dets = _perfect(_truth(gal))  # detections in g3 have no truth
    metrics = evaluate_run(dets, truth, gal, tmp_path)
    head = metrics["detectors"]["model"]["headline"]["all"]
    assert head["completeness"] == 1.0 and head["purity"] == pytest.approx(9 / 12)


def test_selection_function_recovers_bright_injections():
    gal = _galaxies()
    inj = _truth(gal, per=4, seed=2)
    inj["flux_ratio_u"] = np.tile([0.002, 0.006, 0.03, 0.2], len(gal))
    dets = _perfect(inj)[inj["flux_ratio_u"].to_numpy() > 0.01]
    sel = selection_function(dets, inj, gal, threshold=0.5)
    fr = sel["flux_ratio"].set_index("log_flux_ratio_lo")
    assert fr.loc[-2.75, "completeness"] == 0.0 and fr.loc[-2.75, "n_injected"] == 4
    assert fr.loc[-1.75, "completeness"] == 1.0
    assert fr.loc[-0.75, "completeness"] == 1.0
    mag = sel["host_mag_r"]
    assert mag["n_injected"].sum() == 16
    assert np.allclose(mag.loc[mag.n_injected > 0, "completeness"], 0.5)


def test_snr_cut_cost_per_flux_ratio_bin(tmp_path):
    gal = _galaxies()
    inj = _truth(gal, per=4, seed=2)
    inj["flux_ratio_u"] = np.tile([0.002, 0.006, 0.03, 0.2], len(gal))
    # every injection found; the faintest two bins' candidates have S/N 2, the others 10
    dets = _perfect(inj).assign(detection_snr=np.where(inj["flux_ratio_u"] < 0.01, 2.0, 10.0))
    metrics = evaluate_run(
        _perfect(inj), inj, gal, tmp_path, injected_truth=inj, injected_clumps=dets, min_snr=3.0
    )
    cost = {r["log_flux_ratio_lo"]: r for r in metrics["snr_cut_cost"]["flux_ratio"]}
    assert metrics["snr_cut_cost"]["min_snr"] == 3.0
    for lo, lost in ((-2.75, 1.0), (-2.25, 1.0), (-1.75, 0.0), (-0.75, 0.0)):
        assert cost[lo]["completeness_without_cut"] == 1.0 and cost[lo]["n_injected"] == 4
        assert cost[lo]["completeness_lost"] == lost
    # the selection function is the catalogue's: with the cut
    sel = {r["log_flux_ratio_lo"]: r for r in metrics["selection_function"]["flux_ratio"]}
    assert sel[-2.75]["completeness"] == 0.0 and sel[-1.75]["completeness"] == 1.0
    assert "snr_cut_cost" not in evaluate_run(
        _perfect(inj), inj, gal, tmp_path, injected_truth=inj, injected_clumps=dets
    )


def test_cli_writes_metrics(tmp_path):
    gal = _galaxies()
    truth = _truth(gal)
    write_table(gal, tmp_path / "galaxies.parquet")
    write_table(truth, tmp_path / "truth.parquet")
    write_table(truth.iloc[:5], tmp_path / "truth-0.parquet")  # one table per shard
    write_table(truth.iloc[5:], tmp_path / "truth-1.parquet")
    write_table(_perfect(truth), tmp_path / "clumps.parquet")
    write_table(_perfect(truth).assign(score=0.6), tmp_path / "baseline.parquet")
    rc = main(
        [
            "evaluate",
            "--clumps",
            str(tmp_path / "clumps.parquet"),
            "--truth",
            str(tmp_path / "truth-0.parquet"),
            str(tmp_path / "truth-1.parquet"),
            "--galaxies",
            str(tmp_path / "galaxies.parquet"),
            "--baseline",
            str(tmp_path / "baseline.parquet"),
            "--injected-truth",
            str(tmp_path / "truth.parquet"),
            "--injected-clumps",
            str(tmp_path / "clumps.parquet"),
            "--out-dir",
            str(tmp_path / "evaluation"),
            "--metrics",
            str(tmp_path / "metrics.json"),
        ]
    )
    assert rc == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["detectors"]["baseline"]["headline"]["all"]["completeness"] == 1.0
    assert (tmp_path / "evaluation" / "selection_flux_ratio.csv").exists()
    assert (tmp_path / "evaluation" / "selection_host_mag_r.parquet").exists()


def test_missing_fwhm_is_a_clear_error(tmp_path):
    gal = _galaxies().drop(columns="psf_fwhm_r")
    truth = _truth(gal)
    dets = _perfect(truth).drop(columns="fwhm_r_px")
    with pytest.raises(InputError, match="no positive PSF FWHM in pixels for galaxies g0, g1"):
        evaluate_run(dets, truth.drop(columns="fwhm_r_px"), gal, tmp_path)
