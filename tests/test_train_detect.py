"""Training, resuming, DDP and batched detection on a tiny synthetic survey."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from clumpcat.detection.checkpoint import load_detector
from clumpcat.detection.data import CropDataset, load_training_table, stratified_split
from clumpcat.detection.inference import detect_shard
from clumpcat.detection.training import train_detector
from clumpcat.errors import InputError
from clumpcat.ledger import LedgerEntry, write_status
from clumpcat.render.labels import truth_boxes
from clumpcat.render.rgb import geometries, render_shard
from clumpcat.survey.simulate.survey import simulate_survey
from clumpcat.tables import read_table

pytestmark = pytest.mark.xdist_group("torch")


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    """Twelve simulated galaxies, rendered, with label boxes."""
    root = tmp_path_factory.mktemp("survey")
    galaxies, truth = simulate_survey(seed=4, first=0, count=12, cutout_dir=root / "cutouts")
    table, failures = render_shard(galaxies["objid"].tolist(), root / "cutouts", root / "rgb", "synthetic")
    assert not failures
    table.to_parquet(root / "render.parquet")
    labels = truth_boxes(truth, geometries(table), detectable_only=True)
    labels.to_parquet(root / "labels.parquet")
    galaxies.to_parquet(root / "galaxies.parquet")
    truth.to_parquet(root / "truth.parquet")
    return root


def test_split_is_stratified_and_complete(survey):
    table = load_training_table([survey / "render.parquet"], [survey / "labels.parquet"])
    split = stratified_split(table, seed=1)
    together = split["train"] + split["val"] + split["test"]
    assert sorted(together) == sorted(table.images["objid"])
    assert len(split["train"]) > len(split["val"]) >= 1 and len(split["test"]) >= 1


def centre_pixels(image, boxes):
    """Sorted RGB sums of the pixels holding each box centre (edge coordinates)."""
    values = []
    for b in boxes.numpy():
        i, j = int(np.floor(0.5 * (b[1] + b[3]))), int(np.floor(0.5 * (b[0] + b[2])))
        values.append(float(image[:, i, j].sum()))
    return sorted(values)


def test_crops_keep_boxes_on_their_clumps(survey):
    table = load_training_table([survey / "render.parquet"], [survey / "labels.parquet"])
    plain = CropDataset(table, table.images["objid"], augment=False)
    flipped = CropDataset(table, table.images["objid"], augment=True, seed=3)
    for i in range(len(plain)):
        image, target = plain[i]
        assert image.shape == (3, 200, 200) and 0.0 <= float(image.min()) and float(image.max()) <= 1.0
        image_f, target_f = flipped[i]
        for tgt in (target, target_f):
            assert torch.all(tgt["boxes"][:, 2] > tgt["boxes"][:, 0])
        # Flips move pixels and boxes together: the pixel under each box centre is the same.
        assert centre_pixels(image_f, target_f["boxes"]) == pytest.approx(
            centre_pixels(image, target["boxes"])
        )


@pytest.fixture(scope="module")
def trained(survey, tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    torch.set_num_threads(2)
    result = train_detector(
        [survey / "render.parquet"],
        [survey / "labels.parquet"],
        out,
        setup="cpu-small",
        epochs=1,
        batch_size=4,
        seed=0,
        device="cpu",
    )
    return out, result


def test_training_writes_model_metrics_and_test_split(trained):
    out, result = trained
    assert (out / "model.pt").exists() and (out / "checkpoint.pt").exists()
    metrics = pd.read_csv(out / "metrics.csv")
    assert metrics["epoch"].tolist() == [0]
    assert np.isfinite(metrics["train_loss"]).all()
    for column in ("val_ap", "val_ar", "val_f1", "val_completeness", "val_purity"):
        assert 0.0 <= metrics[column].iloc[0] <= 1.0 or np.isnan(metrics[column].iloc[0])
    assert json.loads((out / "test_metrics.json").read_text())["best_epoch"] == 0
    model, meta = load_detector(out / "model.pt")
    assert meta["config"].setup == "cpu-small"


def test_resume_continues_after_the_last_epoch(survey, trained, tmp_path):
    out, _ = trained
    copy = tmp_path / "resume"
    copy.mkdir()
    # As after a killed job: Snakemake removed the outputs, the checkpoint is left.
    (copy / "checkpoint.pt").write_bytes((out / "checkpoint.pt").read_bytes())
    train_detector(
        [survey / "render.parquet"],
        [survey / "labels.parquet"],
        copy,
        setup="cpu-small",
        epochs=2,
        batch_size=4,
        seed=0,
        device="cpu",
        resume=True,
    )
    history = pd.read_csv(copy / "metrics.csv")
    assert history["epoch"].tolist() == [0, 1]
    _model, meta = load_detector(copy / "model.pt")
    assert meta["epoch"] == int(history["val_f1"].idxmax())


def test_pretrained_setup_without_weights_is_a_clear_error(survey, tmp_path):
    with pytest.raises(InputError, match="needs|pretrained weights.*weights.zoobot"):
        train_detector(
            [survey / "render.parquet"], [survey / "labels.parquet"], tmp_path, setup="zoobot", epochs=1
        )


def test_detect_maps_boxes_to_the_cutout_and_sky(survey, trained, tmp_path):
    out, _ = trained
    render = read_table(survey / "render.parquet")
    bad = render["objid"].iloc[0]
    status = write_status(
        tmp_path / "status-render.parquet",
        render["objid"].tolist(),
        [LedgerEntry(bad, "failed", "render", "broken for the test")],
    )
    detections = detect_shard(
        out / "model.pt",
        survey / "render.parquet",
        survey / "cutouts",
        tmp_path / "det.parquet",
        tmp_path / "status-detect.parquet",
        status_in=tmp_path / "status-render.parquet",
        device="cpu",
        batch_size=4,
        score_floor=0.0,
    )
    assert bad not in set(detections["objid"])
    status = read_table(tmp_path / "status-detect.parquet")
    assert len(status) == len(render)
    assert status.set_index("objid").loc[bad, "reason"] == "broken for the test"
    if len(detections):
        from clumpcat.survey.cutouts import read_cutout

        row = detections.iloc[0]
        cutout = read_cutout(survey / "cutouts" / f"{row.objid}.fits")
        sky = cutout.wcs.pixel_to_world(row.x, row.y)
        assert sky.ra.deg == pytest.approx(row.ra) and sky.dec.deg == pytest.approx(row.dec)
        assert row.box_x0 < row.x + 0.5 < row.box_x1
        assert (detections["label"].isin(["normal", "odd"])).all()


@pytest.fixture(scope="module")
def png_detections(survey, trained, tmp_path_factory):
    """Detections of the survey from its rendered PNGs (the path before issue 13)."""
    out, _ = trained
    tmp = tmp_path_factory.mktemp("png-detect")
    return detect_shard(
        out / "model.pt", survey / "render.parquet", survey / "cutouts", tmp / "png.parquet",
        tmp / "status-png.parquet", device="cpu", batch_size=4, score_floor=0.0,
    )  # fmt: skip


def test_render_rows_without_png_are_refused_by_training_and_failed_by_detect(survey, trained, tmp_path):
    """`clumpcat render --png none` rows (png null): training names them; PNG detection fails them alone."""
    render = read_table(survey / "render.parquet")
    render.loc[render.index[:2], "png"] = None
    render.to_parquet(tmp_path / "render.parquet")
    with pytest.raises(InputError, match=r"2 galaxies have no PNG.*--png all"):
        load_training_table([tmp_path / "render.parquet"], [survey / "labels.parquet"])
    out, _ = trained
    detect_shard(
        out / "model.pt", tmp_path / "render.parquet", survey / "cutouts", tmp_path / "det.parquet",
        tmp_path / "status.parquet", device="cpu", batch_size=4, score_floor=0.0,
    )  # fmt: skip
    status = read_table(tmp_path / "status.parquet").set_index("objid")
    no_png = render["objid"].iloc[:2].tolist()
    assert (status.loc[no_png, "status"] == "failed").all()
    assert status.loc[no_png, "reason"].str.contains("no PNG rendered").all()
    assert (status.drop(index=no_png)["status"] == "ok").all()


@pytest.mark.parametrize("render_on", ["loader", "device"])
def test_detect_from_cutouts_equals_detect_from_pngs(survey, trained, png_detections, tmp_path, render_on):
    """No PNG round trip: the same candidates, in the same frame, as from the rendered PNGs."""
    out, _ = trained
    from_png = png_detections
    direct = detect_shard(
        out / "model.pt", None, survey / "cutouts", tmp_path / "direct.parquet",
        tmp_path / "status-direct.parquet", galaxies=survey / "galaxies.parquet",
        survey="synthetic", render_on=render_on, device="cpu", batch_size=4, score_floor=0.0,
    )  # fmt: skip
    assert list(direct.columns) == list(from_png.columns) and dict(direct.dtypes) == dict(from_png.dtypes)
    assert len(from_png) > 0
    # The images differ by at most one grey level at a few pixels ("device"):
    # each confident candidate is found again, at the same place and score.
    confident = from_png[from_png["score"] >= 0.1]
    for row in confident.itertuples():
        same = direct[(direct["objid"] == row.objid) & (direct["label"] == row.label)]
        distance = np.hypot(same["x"] - row.x, same["y"] - row.y)
        assert len(same) and distance.min() < 0.5, row
        assert same["score"].iloc[int(np.argmin(distance))] == pytest.approx(row.score, abs=0.02)
    if render_on == "loader":  # the same numpy/Pillow rendering: identical
        pd.testing.assert_frame_equal(direct, from_png)
    status = read_table(tmp_path / "status-direct.parquet")
    assert (status["status"] == "ok").all() and len(status) == 12


def test_detect_with_workers_gives_the_same_detections(survey, trained, tmp_path):
    """Workers read the cutouts; the sky positions come from a process pool (no WCS pickled)."""
    out, _ = trained
    tables = []
    for workers in (0, 2):
        tables.append(
            detect_shard(
                out / "model.pt",
                None,
                survey / "cutouts",
                tmp_path / f"d{workers}.parquet",
                tmp_path / f"s{workers}.parquet",
                galaxies=survey / "galaxies.parquet",
                device="cpu",
                batch_size=4,
                num_workers=workers,
                score_floor=0.0,
            )  # fmt: skip
        )
    assert len(tables[0]) > 0
    pd.testing.assert_frame_equal(tables[0], tables[1])


def test_detect_from_cutouts_fails_a_broken_cutout_alone(survey, trained, tmp_path):
    out, _ = trained
    folder = tmp_path / "cutouts"
    folder.mkdir()
    galaxies = read_table(survey / "galaxies.parquet").iloc[:3]
    for objid in galaxies["objid"]:
        (folder / f"{objid}.fits").write_bytes((survey / "cutouts" / f"{objid}.fits").read_bytes())
    broken = galaxies["objid"].iloc[1]
    (folder / f"{broken}.fits").write_bytes(b"SIMPLE  =                    T")
    galaxies.to_parquet(tmp_path / "galaxies.parquet")
    detect_shard(
        out / "model.pt", None, folder, tmp_path / "det.parquet", tmp_path / "status.parquet",
        galaxies=tmp_path / "galaxies.parquet", device="cpu", batch_size=2, score_floor=0.0,
    )  # fmt: skip
    status = read_table(tmp_path / "status.parquet").set_index("objid")
    assert status.loc[broken, "status"] == "failed" and status.loc[broken, "stage"] == "detect"
    assert f"{broken}.fits" in status.loc[broken, "reason"]
    assert (status.drop(index=broken)["status"] == "ok").all()


def test_detect_cli_reads_cutouts_as_the_rule_does(survey, trained, tmp_path):
    from clumpcat.cli import main
    from clumpcat.detection.inference import DETECTION_COLUMNS

    out, _ = trained
    argv = ["detect", "--model", str(out / "model.pt"), "--cutouts", str(survey / "cutouts"),
            "--survey", "synthetic", "--out", str(tmp_path / "d.parquet"),
            "--status-out", str(tmp_path / "s.parquet"), "--batch-size", "6", "--score-floor", "0.3"]  # fmt: skip
    assert main([*argv, "--galaxies", str(survey / "galaxies.parquet"), "--render-on", "device"]) == 0
    detections = read_table(tmp_path / "d.parquet")
    assert list(detections.columns) == list(DETECTION_COLUMNS)
    assert (detections["score"] >= 0.3).all()
    assert set(detections["objid"]) <= set(read_table(survey / "galaxies.parquet")["objid"].astype(str))
    with pytest.raises(SystemExit):  # one source of images, not two
        main([*argv, "--galaxies", "g.parquet", "--render", "r.parquet"])


def test_detect_asks_for_cuda_without_one_clearly(survey, trained, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out, _ = trained
    with pytest.raises(InputError, match="no CUDA device.*--device cpu"):
        detect_shard(
            out / "model.pt", None, survey / "cutouts", tmp_path / "d.parquet", tmp_path / "s.parquet",
            galaxies=survey / "galaxies.parquet", device="cuda",
        )  # fmt: skip


def test_rendered_boxes_map_back_to_cutout_pixels_and_sky():
    from clumpcat.detection.inference import to_cutout_frame
    from clumpcat.geometry import RenderGeometry, boxes_around

    from .conftest import tan_wcs

    geometry = RenderGeometry(100, 80, 4.0, 5.0)
    wcs = tan_wcs((80, 100), 0.396)
    x, y = 37.0, 21.0
    boxes = boxes_around(*geometry.cutout_to_render(x, y), 20.0)
    frame = to_cutout_frame(
        "a",
        {"boxes": np.atleast_2d(boxes), "scores": np.array([0.9]), "labels": np.array([2])},
        geometry,
        wcs,
        3.0,
    )
    assert frame.x[0] == pytest.approx(x) and frame.y[0] == pytest.approx(y)
    assert frame.box_x1[0] - frame.box_x0[0] == pytest.approx(5.0)
    assert frame.box_y1[0] - frame.box_y0[0] == pytest.approx(4.0)
    sky = wcs.pixel_to_world(x, y)
    assert frame.ra[0] == pytest.approx(sky.ra.deg) and frame.dec[0] == pytest.approx(sky.dec.deg)
    assert frame.label[0] == "odd"


def test_unknown_detector_override_is_a_clear_error(survey, tmp_path):
    with pytest.raises(InputError, match="unknown detector config keys.*anchor_size"):
        train_detector(
            [survey / "render.parquet"],
            [survey / "labels.parquet"],
            tmp_path,
            setup="cpu-small",
            epochs=1,
            overrides={"anchor_size": [8]},
        )
