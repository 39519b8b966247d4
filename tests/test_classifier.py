"""The Zoobot Clumps classifier (paper App. B): labels, split, training, and its encoder in the detector."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from clumpcat.cli import main
from clumpcat.detection.classifier import build_classifier, load_zoobot_clumps_encoder, save_encoder
from clumpcat.detection.classifier_training import (
    binary_metrics,
    labels_from_table,
    labels_from_truth,
    roc_auc,
    stratified_class_split,
    train_classifier,
)
from clumpcat.detection.model import build_detector
from clumpcat.detection.training import _backbone_state
from clumpcat.detection.weights import load_zoobot_encoder
from clumpcat.errors import InputError
from tests.test_workflow import job_counts, snakemake


def _truth(rows):
    return pd.DataFrame(rows, columns=["objid", "label", "flux_ratio_u"])


def test_truth_labels_need_a_clump_at_the_flux_ratio():
    truth = _truth(
        [
            ("bright", "normal", 0.12),
            ("faint", "normal", 0.01),
            ("faint", "normal", 0.049),
            ("edge", "normal", 0.05),
            ("star", "odd", 0.9),  # a foreground star is not a clump
            ("mixed", "odd", 0.9),
            ("mixed", "normal", 0.06),
        ]
    )
    labels = labels_from_truth(["bright", "faint", "edge", "star", "mixed", "bare"], truth, 0.05)
    assert labels.to_dict() == {"bright": 1, "faint": 0, "edge": 1, "star": 0, "mixed": 1, "bare": 0}
    assert labels_from_truth(["bright", "faint"], truth, 0.005).tolist() == [1, 1]


def test_vote_table_labels_and_their_errors(tmp_path):
    path = tmp_path / "votes.csv"
    pd.DataFrame({"objid": ["a", "b", "c", "z"], "frac": [0.2, 0.5, 0.9, 1.0]}).to_csv(path, index=False)
    labels = labels_from_table(path, ["a", "b", "c", "unlabelled"], column="frac", vote_threshold=0.5)
    assert labels.to_dict() == {"a": 0, "b": 1, "c": 1}
    with pytest.raises(InputError, match=r"votes\.csv lacks column\(s\) clumpy.*--label-column"):
        labels_from_table(path, ["a"], column="clumpy")
    pd.DataFrame({"objid": ["a", "b"], "frac": [0.2, 1.5]}).to_csv(path, index=False)
    with pytest.raises(InputError, match=r"votes\.csv: column 'frac' must hold 0/1.*rows 1"):
        labels_from_table(path, ["a", "b"], column="frac")


def test_split_is_stratified_disjoint_and_complete():
    labels = pd.Series([1] * 40 + [0] * 60, index=[f"g{i}" for i in range(100)])
    split = stratified_class_split(labels, seed=3)
    ids = split["train"] + split["val"] + split["test"]
    assert sorted(ids) == sorted(labels.index) and len(set(ids)) == 100
    assert [len(split[k]) for k in ("train", "val", "test")] == [80, 10, 10]
    for part in split.values():
        assert labels.loc[part].mean() == pytest.approx(0.4)
    with pytest.raises(InputError, match="lacks a class"):
        stratified_class_split(labels.iloc[38:], seed=3)  # two clumpy galaxies cannot fill three splits


def test_roc_auc_and_majority_baseline():
    y = np.array([0, 0, 1, 1])
    assert roc_auc(y, np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert roc_auc(y, np.array([0.5, 0.5, 0.5, 0.5])) == pytest.approx(0.5)
    m = binary_metrics(np.array([0, 0, 0, 1]), np.array([0.1, 0.6, 0.2, 0.9]), majority=0)
    assert (m["accuracy"], m["majority_accuracy"]) == (0.75, 0.75)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (1, 1, 2, 0)


def _spots(n, size, seed):
    """Toy galaxies: a smooth disc, half with a bright compact clump off-centre."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - size / 2
    disc = np.exp(-np.hypot(xx, yy) / (size / 6))
    images, labels = [], []
    for i in range(n):
        image = disc + 0.05 * rng.standard_normal((size, size))
        clumpy = i % 2
        if clumpy:
            cx, cy = rng.uniform(-size / 5, size / 5, 2)
            image = image + 1.5 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 1.5**2))
        images.append(np.clip(image / 2.5, 0, 1))
        labels.append(clumpy)
    return np.stack(images), np.array(labels)


def test_optimiser_steps_reduce_the_loss_on_separable_images():
    torch.manual_seed(0)
    images, labels = _spots(16, 32, seed=1)
    x = torch.tensor(images, dtype=torch.float32)[:, None].repeat(1, 3, 1, 1)
    y = torch.tensor(labels, dtype=torch.float32)
    model = build_classifier("cpu-small", image_size=32)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


def test_resnet50_encoder_file_loads_into_the_zoobot_clumps_detector(tmp_path):
    torch.manual_seed(0)
    classifier = build_classifier("resnet50", image_size=64)
    path = save_encoder(tmp_path / "encoder.pt", classifier, epoch=3)
    state, overrides = load_zoobot_clumps_encoder(path)
    assert overrides == {}
    assert set(state) == set(load_zoobot_encoder(path))
    detector = build_detector("zoobot-clumps", backbone_weights=state)
    body = {k: v for k, v in detector.backbone.body.state_dict().items()}
    encoder = {
        k: v for k, v in classifier.encoder.state_dict().items() if not k.endswith("num_batches_tracked")
    }
    assert set(body) == set(encoder)
    for key in ("conv1.weight", "layer4.2.bn3.running_var", "layer3.5.conv2.weight"):
        assert torch.equal(body[key], encoder[key])


def _render_set(tmp_path, n=24, size=96):
    """Rendered PNGs (bright spot = clumpy), their render table and a truth table."""
    images, labels = _spots(n, size, seed=2)
    rows, truth = [], []
    for i, (image, clumpy) in enumerate(zip(images, labels, strict=True)):
        png = tmp_path / f"g{i}.png"
        Image.fromarray((np.repeat(image[..., None], 3, axis=2) * 255).astype(np.uint8)).save(png)
        rows.append({"objid": f"g{i}", "png": str(png)})
        truth.append((f"g{i}", "normal", 0.2 if clumpy else 0.01))
    pd.DataFrame(rows).to_parquet(tmp_path / "render.parquet")
    _truth(truth).to_parquet(tmp_path / "truth.parquet")
    return tmp_path / "render.parquet", tmp_path / "truth.parquet"


def test_render_rows_without_png_are_named(tmp_path):
    render, truth = _render_set(tmp_path, n=4, size=16)
    table = pd.read_parquet(render)
    table.loc[1, "png"] = None  # `clumpcat render --png none` leaves png null
    table.to_parquet(render)
    with pytest.raises(InputError, match=r"1 galaxies have no PNG \(e\.g\. g1\).*--png all"):
        train_classifier(
            [render], tmp_path / "clf", truth_paths=[truth], image_size=32, epochs=1, device="cpu"
        )


def test_trained_encoder_round_trip_into_a_detector_training_step(tmp_path):
    render, truth = _render_set(tmp_path)
    out = tmp_path / "clf"
    result = train_classifier(
        [render], out, truth_paths=[truth], image_size=32, epochs=2, batch_size=8, device="cpu", seed=1
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["counts"] == {"train": 20, "val": 2, "test": 2} and metrics == json.loads(
        json.dumps(result)
    )
    assert 0 <= metrics["test"]["roc_auc"] <= 1 and metrics["class_balance"]["train"] == 0.5
    assert (out / "roc.png").exists() and len(pd.read_csv(out / "history.csv")) == 2
    state, body = _backbone_state("zoobot-clumps", str(out / "encoder.pt"))
    assert body["backbone"] == "basic" and body["trainable_layers"] == 0
    detector = build_detector("zoobot-clumps", backbone_weights=state, **body)
    saved = torch.load(out / "encoder.pt", weights_only=True)["model"]
    assert torch.equal(
        detector.backbone.body.state_dict()["layer3.0.conv1.weight"], saved["layer3.0.conv1.weight"]
    )
    detector.train()
    image = torch.rand(3, 64, 64)
    target = {"boxes": torch.tensor([[20.0, 20.0, 34.0, 34.0]]), "labels": torch.tensor([1])}
    params = [p for p in detector.parameters() if p.requires_grad]
    before = detector.backbone.body.state_dict()["layer3.0.conv1.weight"].clone()
    loss = sum(detector([image], [target]).values())
    loss.backward()
    torch.optim.Adam(params, lr=1e-3).step()
    assert torch.isfinite(loss)
    assert torch.equal(
        detector.backbone.body.state_dict()["layer3.0.conv1.weight"], before
    )  # frozen, Table 2


def test_a_killed_run_resumes_after_its_last_epoch(tmp_path):
    render, truth = _render_set(tmp_path, n=20, size=48)
    kwargs = dict(truth_paths=[truth], image_size=32, batch_size=8, device="cpu", seed=2)
    train_classifier([render], tmp_path / "a", epochs=2, **kwargs)
    train_classifier([render], tmp_path / "b", epochs=1, **kwargs)
    train_classifier([render], tmp_path / "b", epochs=2, **kwargs)  # picks up checkpoint.pt
    full, resumed = (pd.read_csv(tmp_path / d / "history.csv") for d in ("a", "b"))
    assert resumed["epoch"].tolist() == [0, 1]
    pd.testing.assert_frame_equal(full.drop(columns="seconds"), resumed.drop(columns="seconds"))
    with pytest.raises(InputError, match="written for another encoder"):
        train_classifier([render], tmp_path / "b", epochs=3, **{**kwargs, "image_size": 40})


def test_cli_errors_name_the_option_and_the_file(tmp_path, caplog):
    render, truth = _render_set(tmp_path, n=6, size=40)
    caplog.set_level(logging.ERROR)
    missing = tmp_path / "nope.parquet"

    def train(truth_path, *options):
        args = ["train-classifier", "--render", str(render), "--truth", str(truth_path)]
        return main([*args, "--out-dir", str(tmp_path / "o"), *options])

    cases = [
        ((missing,), ["--truth: no such file", "nope.parquet"]),
        ((truth, "--min-flux-ratio", "-0.1"), ["classifier.min_flux_ratio (--min-flux-ratio) must be >= 0"]),
        ((truth, "--init", "zoobot"), ["--init zoobot loads ResNet50 weights: use --encoder resnet50"]),
        (
            (truth, "--encoder", "resnet50", "--init", "imagenet"),
            ["--init-weights FILE (config key weights.imagenet"],
        ),
    ]
    for args, messages in cases:
        caplog.clear()
        assert train(*args) == 1, args
        for message in messages:
            assert message in caplog.text, (args, caplog.text)


@pytest.mark.xdist_group("workflow")
def test_workflow_dry_run_of_zoobot_clumps_and_the_detector_that_uses_it(tmp_path):
    done = snakemake("-n", "zoobot_clumps", "--config", f"results={tmp_path / 'r'}")
    assert done.returncode == 0, done.stderr[-2000:]
    counts = job_counts(done.stdout)
    assert counts["train_classifier"] == 1 and counts["zoobot_clumps"] == 1 and "train" not in counts
    (tmp_path / "c.yaml").write_text(
        "training:\n  setup: zoobot-clumps\nexperiment:\n  setups: [cpu-small, zoobot-clumps]\n  sizes: [20]\n"
    )
    done = snakemake(
        "-n",
        "-p",
        "experiment",
        "--configfile",
        str(tmp_path / "c.yaml"),
        "--config",
        f"results={tmp_path / 'r'}",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert job_counts(done.stdout)["train_classifier"] == 1
    assert done.stdout.count(f"--backbone-weights {tmp_path / 'r' / 'classifier' / 'encoder.pt'}") == 1
