"""Tests of clumpcat.evaluation.plots: files are made and figures show the right data."""

import json

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from matplotlib.image import imsave

from clumpcat.cli import main
from clumpcat.errors import InputError
from clumpcat.evaluation.evaluate import evaluate_run, truth_boxes
from clumpcat.evaluation.plots import (
    gallery_objids,
    plot_colour_colour,
    plot_completeness_purity,
    plot_conditions,
    plot_flux_ratio,
    plot_gallery,
    plot_training_curves,
)
from clumpcat.render.selection import GALLERY_SIZE, gallery_pngs_in_shard, png_objids
from clumpcat.tables import read_table, write_table


def _gid(ax, gid):
    found = [
        a
        for a in [*ax.lines, *ax.collections, *ax.containers]
        if getattr(a, "get_gid", lambda: None)() == gid
    ]
    lines = [a for a in ax.lines if a.get_gid() == gid]
    return lines[0] if lines else found[0]


@pytest.fixture
def run_dir(tmp_path):
    gal = pd.DataFrame({"objid": ["a", "b"], "ra": [1.0, 2.0], "dec": [0.0, 0.0], "psf_fwhm_r": [1.5, 1.5]})
    truth = pd.DataFrame(
        {
            "objid": ["a", "a", "b"],
            "x": [10.0, 30.0, 20.0],
            "y": [10.0, 30.0, 25.0],
            "label": ["normal", "odd", "normal"],
            "flux_ratio_u": [0.05, 0.2, 0.01],
            "fwhm_r_px": 4.0,
            "detectable": True,
        }
    )
    model = truth_boxes(truth).assign(score=[0.9, 0.6, 0.3])
    base = model.assign(score=0.4, label="normal")
    evaluate_run(model, truth, gal, tmp_path / "evaluation", baseline=base)
    return tmp_path, gal, truth, model


def test_completeness_purity_figure_data(run_dir, tmp_path):
    root, _, _, _ = run_dir
    sweep = read_table(root / "evaluation" / "completeness_purity.parquet")
    fig = plot_completeness_purity(sweep, tmp_path / "cp.png")
    assert (tmp_path / "cp.png").stat().st_size > 0
    ax = fig.axes[0]
    model = _gid(ax, "model")
    # purity on x, completeness on y, thresholds 0.1..0.9: model completeness 1, 1, 1, 2/3, ... 1/3
    assert np.allclose(model.get_ydata()[:3], 1.0)
    assert model.get_ydata()[5] == pytest.approx(2 / 3)  # threshold 0.6
    assert model.get_ydata()[6] == pytest.approx(1 / 3)
    assert np.allclose(model.get_xdata(), 1.0)
    base = _gid(ax, "baseline")
    assert np.allclose(base.get_ydata(), 1.0)  # baseline scores 0.4: drawn up to threshold 0.4
    assert len(base.get_ydata()) == 4


def test_flux_ratio_figure_bins(run_dir):
    root, *_ = run_dir
    sweep = read_table(root / "evaluation" / "completeness_purity.parquet")
    fig = plot_flux_ratio(sweep, threshold=0.5)
    line = _gid(fig.axes[0], "model")
    # truth ratios -1.3 (found at 0.5), -0.7 (found), -2.0 (score 0.3: missed)
    # bin centres, shifted slightly so that the two detectors' error bars do not overlap
    assert line.get_xdata().tolist() == pytest.approx([-1.75, -1.25, -0.75], abs=0.03)
    assert line.get_ydata().tolist() == [0.0, 1.0, 1.0]


def test_conditions_figure_per_bin_and_detector(run_dir, tmp_path):
    root, _, _, _ = run_dir
    table = read_table(root / "evaluation" / "conditions.parquet")
    fig = plot_conditions(table, tmp_path / "conditions.png")
    assert (tmp_path / "conditions.png").stat().st_size > 0
    # Without cutouts the seeing comes from the galaxy table (both 1.5"), the
    # other conditions are unknown: one bin per axis, two rows, three columns.
    assert len(fig.axes) == 6
    seeing_completeness, seeing_purity = fig.axes[1], fig.axes[4]
    assert [t.get_text() for t in seeing_completeness.get_xticklabels()] == ['1.2-1.6"\n(2 gal)']
    # model: score 0.9, 0.6 and 0.3 on all three clumps -> complete at the 0.3 threshold
    assert list(_gid(seeing_completeness, "model").get_ydata()) == [1.0]
    assert list(_gid(seeing_purity, "baseline").get_ydata()) == [1.0]


def test_training_curves_mark_best_epoch(tmp_path):
    hist = pd.DataFrame(
        {
            "epoch": [0, 1, 2, 3],
            "train_loss": [1.0, 0.6, 0.5, 0.45],
            "train_loss_box_reg": [0.3, 0.2, 0.2, 0.1],
            "val_ap": [0.1, 0.3, 0.35, 0.3],
            "val_ar": [0.2, 0.5, 0.6, 0.55],
            "val_f1": [0.1, 0.4, 0.5, 0.45],
        }
    )
    fig = plot_training_curves(hist, tmp_path / "t.png")
    assert (tmp_path / "t.png").exists()
    loss_ax, met_ax = fig.axes
    assert _gid(loss_ax, "train_loss").get_ydata().tolist() == [1.0, 0.6, 0.5, 0.45]
    assert _gid(met_ax, "ap").get_ydata().tolist() == [0.1, 0.3, 0.35, 0.3]
    assert _gid(met_ax, "best_epoch").get_xdata()[0] == 2
    with pytest.raises(InputError, match="epoch"):
        plot_training_curves(hist.drop(columns="epoch"))


def test_colour_colour_separates_labels():
    cat = pd.DataFrame(
        {
            "clump_label_name": ["normal", "normal", "odd"],
            "clump_mag_corr_u_g": [0.8, 0.9, 1.6],
            "clump_mag_corr_g_r": [0.2, 0.3, 0.9],
            "clump_mag_corr_r_i": [0.1, np.nan, 0.4],
        }
    )
    fig = plot_colour_colour(cat)
    scat = {c.get_gid(): c for c in fig.axes[0].collections if isinstance(c, PathCollection)}
    assert scat["normal"].get_offsets().tolist() == [[0.2, 0.8], [0.3, 0.9]]
    assert scat["odd"].get_offsets().tolist() == [[0.9, 1.6]]
    scat = {c.get_gid(): c for c in fig.axes[1].collections}
    assert len(scat["normal"].get_offsets()) == 1  # NaN colour left out
    with pytest.raises(InputError, match="clump_mag_corr_r_i"):
        plot_colour_colour(cat.drop(columns="clump_mag_corr_r_i"))


def test_gallery_maps_cutout_to_render_frame(run_dir, tmp_path):
    _, _, truth, model = run_dir
    for objid in ("a", "b"):
        imsave(tmp_path / f"{objid}.png", np.zeros((400, 400, 3)))
    render = pd.DataFrame(
        {
            "objid": ["a", "b"],
            "png": [str(tmp_path / "a.png"), str(tmp_path / "b.png")],
            "nx": [80, 100],
            "ny": [80, 100],
        }
    )
    fig = plot_gallery(render, model, truth, tmp_path / "g.png", threshold=0.5)
    assert (tmp_path / "g.png").exists()
    ax = {a.get_gid(): a for a in fig.axes}["a"]
    det = _gid(ax, "det-a")
    # cutout (10, 10) on an 80-px cutout: (10.5 * 5) - 0.5 = 52
    assert det.get_xdata().tolist() == [52.0, 152.0]
    tru = _gid(ax, "truth-a")
    assert tru.get_ydata().tolist() == [52.0, 152.0]
    det_b = _gid({a.get_gid(): a for a in fig.axes}["b"], "det-b")
    assert len(det_b.get_xdata()) == 0  # score 0.3 is below the threshold


def test_gallery_shows_the_pngs_the_workflow_renders():
    # The workflow asks each survey shard for its share of the sample's first
    # GALLERY_SIZE galaxies; the gallery must show exactly those.
    objids = [f"g{i:02d}" for i in range(3 * GALLERY_SIZE)]
    size = 5
    shards = [objids[k : k + size] for k in range(0, len(objids), size)]
    pngs = set().union(*(png_objids(s, gallery_pngs_in_shard(k, size)) for k, s in enumerate(shards)))
    render = pd.DataFrame({"objid": objids, "png": [f"{o}.png" if o in pngs else None for o in objids]})
    truth = pd.DataFrame({"objid": objids[1:], "x": 1.0, "y": 1.0})
    chosen = gallery_objids(render, truth)
    assert set(chosen) == pngs == set(objids[:GALLERY_SIZE])
    assert chosen[-1] == "g00"  # the one galaxy without truth comes last
    with pytest.raises(InputError, match="no galaxy .* has a PNG"):
        gallery_objids(render.assign(png=None))


def test_cli_makes_every_figure(run_dir, tmp_path):
    root, _, truth, model = run_dir
    hist = pd.DataFrame({"epoch": [0, 1], "train_loss": [1.0, 0.5], "val_f1": [0.2, 0.4]})
    hist.to_csv(tmp_path / "metrics.csv", index=False)
    cat = pd.DataFrame(
        {
            "clump_label_name": ["normal"],
            "clump_mag_corr_u_g": [1.0],
            "clump_mag_corr_g_r": [0.5],
            "clump_mag_corr_r_i": [0.2],
        }
    )
    write_table(cat, tmp_path / "catalogue.parquet")
    imsave(tmp_path / "a.png", np.zeros((400, 400, 3)))
    write_table(
        pd.DataFrame({"objid": ["a"], "png": [str(tmp_path / "a.png")], "nx": [80], "ny": [80]}),
        tmp_path / "render.parquet",
    )
    write_table(model, tmp_path / "clumps.parquet")
    write_table(truth, tmp_path / "truth.parquet")
    out = tmp_path / "figures"
    rc = main(
        [
            "plots",
            "--out-dir",
            str(out),
            "--evaluation",
            str(root / "evaluation"),
            "--training-metrics",
            str(tmp_path / "metrics.csv"),
            "--catalogue",
            str(tmp_path / "catalogue.parquet"),
            "--render",
            str(tmp_path / "render.parquet"),
            "--clumps",
            str(tmp_path / "clumps.parquet"),
            "--truth",
            str(tmp_path / "truth.parquet"),
        ]
    )
    assert rc == 0
    made = json.loads((out / "figures.json").read_text())
    assert set(made) == {
        "completeness_purity",
        "flux_ratio",
        "conditions",
        "training_curves",
        "colour_colour",
        "gallery",
    }
    for path in made.values():
        assert (out / path.split("/")[-1]).stat().st_size > 1000
    assert (out / ".done").exists()
