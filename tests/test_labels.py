"""Tests of clumpcat.render.labels: truth boxes, Clump Scout label tables, crops."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clumpcat.constants import LABEL_BOX_FWHM
from clumpcat.errors import InputError
from clumpcat.geometry import RenderGeometry, box_centres
from clumpcat.render.labels import (
    LABEL_COLUMNS,
    read_clump_scout_labels,
    truth_boxes,
    validate_clump_scout_labels,
)


def _truth(**overrides):
    frame = pd.DataFrame(
        {
            "objid": ["a", "a", "b"],
            "source_id": [0, 1, 0],
            "x": [10.0, 30.0, 5.0],
            "y": [20.0, 40.0, 7.0],
            "label": ["normal", "odd", "normal"],
            "fwhm_r_px": [3.5, 3.5, 4.0],
            "detectable": [True, False, True],
        }
    )
    for key, value in overrides.items():
        frame[key] = value
    return frame


GEOMS = {"a": RenderGeometry.for_shape((80, 80)), "b": RenderGeometry.for_shape((100, 50))}


# -- truth boxes --------------------------------------------------------------


def test_truth_box_position_and_side():
    boxes = truth_boxes(_truth(), GEOMS)
    assert list(boxes.columns) == list(LABEL_COLUMNS)
    assert boxes["label"].tolist() == ["normal", "odd", "normal"]
    assert boxes["label_id"].tolist() == [1, 2, 1]
    # galaxy a: 80 px -> 400 px, scale 5; source at cutout (10, 20) -> rendered (52, 102)
    cx, cy = box_centres(boxes.iloc[[0]][["box_x0", "box_y0", "box_x1", "box_y1"]].to_numpy())
    assert cx[0] == pytest.approx(52.0) and cy[0] == pytest.approx(102.0)
    side = LABEL_BOX_FWHM * 3.5 * 5.0
    assert boxes.box_x1[0] - boxes.box_x0[0] == pytest.approx(side)
    assert boxes.box_y1[0] - boxes.box_y0[0] == pytest.approx(side)
    # galaxy b: nx=50 (scale 8), ny=100 (scale 4): side scales per axis
    assert boxes.box_x1[2] - boxes.box_x0[2] == pytest.approx(2.5 * 4.0 * 8.0)
    assert boxes.box_y1[2] - boxes.box_y0[2] == pytest.approx(2.5 * 4.0 * 4.0)


def test_truth_boxes_detectable_only_and_unrendered_skipped():
    boxes = truth_boxes(_truth(), {"a": GEOMS["a"]}, detectable_only=True)
    assert boxes["objid"].tolist() == ["a"] and boxes["label"].tolist() == ["normal"]
    empty = truth_boxes(_truth(), {})
    assert empty.empty and list(empty.columns) == list(LABEL_COLUMNS)


def test_truth_boxes_fwhm_fallback():
    truth = _truth().drop(columns="fwhm_r_px")
    boxes = truth_boxes(truth, GEOMS, fwhm_r_px={"a": 2.0, "b": 2.0})
    assert boxes.box_x1[0] - boxes.box_x0[0] == pytest.approx(2.5 * 2.0 * 5.0)


@pytest.mark.parametrize(
    ("truth", "kwargs", "match"),
    [
        (_truth().drop(columns="label"), {}, r"missing column\(s\) label"),
        (_truth().drop(columns="fwhm_r_px"), {}, r"missing column\(s\) fwhm_r_px"),
        (_truth().drop(columns="detectable"), {"detectable_only": True}, r"missing column\(s\) detectable"),
        (_truth(label=["normal", "star", "normal"]), {}, r"label not in normal, odd in row\(s\) 1"),
        (_truth(x=[np.nan, 1.0, 2.0]), {}, r"non-finite x or y in row\(s\) 0"),
        (_truth(fwhm_r_px=[3.0, 3.0, -1.0]), {}, r"non-positive fwhm_r_px in row\(s\) 2"),
    ],
)
def test_truth_boxes_errors(truth, kwargs, match):
    with pytest.raises(InputError, match=match):
        truth_boxes(truth, GEOMS, **kwargs)


# -- Clump Scout label tables ---------------------------------------------------


def _labels(**overrides):
    frame = pd.DataFrame(
        {"image_id": [11, 11, 12], "x1": [100.0, 150, 200], "x2": [120.0, 170, 215], "y1": [90.0, 95, 180],
         "y2": [110.0, 115, 195], "label": [1, 2, 1]}
    )  # fmt: skip
    for key, value in overrides.items():
        frame[key] = value
    return frame


def test_read_clump_scout_labels_csv(tmp_path):
    path = tmp_path / "labels.csv"
    _labels().to_csv(path, index=False)
    boxes = read_clump_scout_labels(path)
    assert list(boxes.columns) == list(LABEL_COLUMNS)
    assert boxes["objid"].tolist() == ["11", "11", "12"]
    assert boxes["label"].tolist() == ["normal", "odd", "normal"]
    np.testing.assert_array_equal(
        boxes.loc[0, ["box_x0", "box_y0", "box_x1", "box_y1"]].to_numpy(float), [100, 90, 120, 110]
    )


def test_label_names_and_objid_column_accepted():
    boxes = validate_clump_scout_labels(
        _labels(label=["normal", "odd", "2"]).rename(columns={"image_id": "objid"})
    )
    assert boxes["label_id"].tolist() == [1, 2, 2]


@pytest.mark.parametrize(
    ("frame", "match"),
    [
        (_labels().drop(columns="image_id"), r"missing column\(s\) objid \(or image_id\)"),
        (_labels().drop(columns=["x2", "label"]), r"missing column\(s\) x2, label"),
        (_labels(x2=[120.0, 140.0, 215.0]), r"x2 <= x1 or y2 <= y1 in row\(s\) 1"),
        (_labels(y2=[110.0, 115.0, 180.0]), r"x2 <= x1 or y2 <= y1 in row\(s\) 2"),
        (_labels(label=[1, 3, 0]), r"label not in \{1, 2\} \(1 normal, 2 odd\) in row\(s\) 1, 2"),
        (_labels(y1=[np.inf, 95.0, np.nan]), r"non-finite x1, x2, y1 or y2 in row\(s\) 0, 2"),
        (_labels(image_id=["11", "", "12"]), r"empty image_id in row\(s\) 1"),
    ],
)
def test_clump_scout_validation_errors(frame, match):
    with pytest.raises(InputError, match=match):
        validate_clump_scout_labels(frame)


def test_clump_scout_errors_gathered_and_file_named(tmp_path):
    path = tmp_path / "bad.csv"
    _labels(x2=[90.0, 170.0, 215.0], label=[1, 2, 5]).to_csv(path, index=False)
    with pytest.raises(InputError, match=r"bad\.csv: x2 <= x1 or y2 <= y1 in row\(s\) 0; label not in"):
        read_clump_scout_labels(path)


def test_read_clump_scout_labels_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_clump_scout_labels(tmp_path / "nope.csv")
