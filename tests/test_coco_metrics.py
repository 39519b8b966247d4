"""Tests of clumpcat.coco_metrics (COCO AP/AR/F1, Appendix D)."""

import numpy as np
import pytest

from clumpcat.coco_metrics import coco_ap_ar, f1_score
from clumpcat.errors import InputError


def _truth():
    return {
        "g1": {"boxes": np.array([[10, 10, 20, 20], [40, 40, 52, 52]]), "labels": ["normal", "odd"]},
        "g2": {"boxes": np.array([[5, 5, 15, 15]]), "labels": [1]},
        "g3": {"boxes": np.zeros((0, 4)), "labels": []},
    }


def test_perfect_detections_give_ap_one(capsys):
    truth = _truth()
    dets = {k: {**v, "scores": np.full(len(v["boxes"]), 0.9)} for k, v in truth.items()}
    out = coco_ap_ar(dets, truth)
    assert out["AP"] == pytest.approx(1.0) and out["AR"] == pytest.approx(1.0)
    assert out["F1"] == pytest.approx(1.0)
    assert out["n_truth"] == 3 and out["n_det"] == 3 and out["n_images"] == 3
    per = coco_ap_ar(dets, truth, per_class=True)
    assert per["per_class"]["normal"]["AP"] == pytest.approx(1.0)
    assert per["per_class"]["odd"]["AR"] == pytest.approx(1.0)
    assert capsys.readouterr().out == ""  # pycocotools' printing silenced


def test_misses_and_false_positives_lower_ap_ar():
    truth = _truth()
    dets = {
        "g1": {"boxes": np.array([[10, 10, 20, 20], [70, 70, 80, 80]]), "scores": [0.9, 0.95]},
        "g2": {"boxes": np.array([[6, 5, 16, 15]]), "scores": [0.8]},  # IoU 0.82
    }
    out = coco_ap_ar(dets, truth)
    assert 0 < out["AR"] < 1 and out["AR50"] == pytest.approx(2 / 3)
    assert 0 < out["AP"] < out["AP50"] < 1
    assert out["F1"] == pytest.approx(f1_score(out["AP"], out["AR"]))
    # a threshold above every score leaves nothing: AP = AR = 0
    none = coco_ap_ar(dets, truth, score_threshold=0.99)
    assert none["n_det"] == 0 and none["AP"] == 0 and none["AR"] == 0


def test_wrong_class_only_counts_when_agnostic():
    truth = {"g": {"boxes": np.array([[10, 10, 20, 20]]), "labels": ["odd"]}}
    dets = {"g": {"boxes": np.array([[10, 10, 20, 20]]), "scores": [0.9], "labels": ["normal"]}}
    assert coco_ap_ar(dets, truth)["AP"] == pytest.approx(1.0)
    per = coco_ap_ar(dets, truth, per_class=True)
    assert per["per_class"]["odd"]["AR"] == 0.0
    assert np.isnan(per["per_class"]["normal"]["AR"])  # no normal truth


def test_errors_and_no_truth():
    truth = {"g": np.zeros((0, 4))}
    out = coco_ap_ar({}, truth)
    assert np.isnan(out["AP"]) and np.isnan(out["F1"])
    with pytest.raises(InputError, match="no 'scores'"):
        coco_ap_ar({"g": {"boxes": [[0, 0, 1, 1]]}}, {"g": [[0, 0, 1, 1]]})
    with pytest.raises(InputError, match="label must be one of"):
        coco_ap_ar({}, {"g": {"boxes": [[0, 0, 1, 1]], "labels": ["blob"]}}, per_class=True)
    assert f1_score(0.0, 0.0) == 0.0
