"""``clumpcat experiment``: compare detector set-ups over training-set sizes (App. C).

The paper trained each Table 2 set-up on run-groups of increasing size (500 to
18,772 images, each split 70/20/10 with stratification) and compared them on
the test split (Figs. 8, 9). The workflow's ``experiment`` target trains one
model per (set-up, size) with ``clumpcat train --max-images``; this module
gathers their ``test_metrics.json`` into one table and draws the comparison.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from clumpcat.errors import InputError  # noqa: E402
from clumpcat.manifests import ManifestPaths, manifest_help  # noqa: E402
from clumpcat.tables import write_table  # noqa: E402

__all__ = ["EXPERIMENT_COLUMNS", "collect_runs", "plot_experiment", "configure_parser", "run"]

log = logging.getLogger(__name__)

EXPERIMENT_COLUMNS = {
    "setup": ("", "Detector set-up (paper Table 2, or cpu-small)"),
    "n_images": ("", "Images in the run-group (train + validation + test, App. C)"),
    "best_epoch": ("", "Epoch with the best validation F1 (Section 4.4.1)"),
    "test_ap": ("", "COCO AP on the test split"),
    "test_ar": ("", "COCO AR on the test split"),
    "test_threshold": ("", "Score threshold of the best test F1"),
    "test_completeness": ("", "Completeness at that threshold (match < 0.75 FWHM, Section 4.4.2)"),
    "test_purity": ("", "Purity at that threshold"),
    "test_f1": ("", "F1 of completeness and purity at that threshold"),
    "test_completeness_at_0.5": ("", "Completeness at score >= 0.5"),
    "test_purity_at_0.5": ("", "Purity at score >= 0.5"),
}


def collect_runs(run_dirs: list[str | Path]) -> pd.DataFrame:
    """One row per trained model: set-up, run-group size and test metrics.

    Parameters
    ----------
    run_dirs : list of path
        Folders named ``{setup}-{n_images}`` holding ``test_metrics.json``.

    Raises
    ------
    InputError
        If a folder name is not ``{setup}-{n}`` or its metrics are missing.
    """
    rows = []
    for run_dir in map(Path, run_dirs):
        setup, _, size = run_dir.name.rpartition("-")
        if not setup or not size.isdigit():
            raise InputError(f"{run_dir}: experiment folders are named SETUP-N, e.g. zoobot-500")
        path = run_dir / "test_metrics.json"
        if not path.exists():
            raise InputError(f"{path}: missing; train this run first")
        metrics = json.loads(path.read_text())
        test = metrics.get("test", {})
        rows.append(
            {
                "setup": setup,
                "n_images": int(size),
                "best_epoch": metrics.get("best_epoch"),
                **{
                    f"test_{k}": test.get(k)
                    for k in (
                        "ap",
                        "ar",
                        "threshold",
                        "completeness",
                        "purity",
                        "f1",
                        "completeness_at_0.5",
                        "purity_at_0.5",
                    )
                },
            }
        )
    return pd.DataFrame(rows, columns=list(EXPERIMENT_COLUMNS)).sort_values(["setup", "n_images"])


def plot_experiment(table: pd.DataFrame):
    """F1, completeness and purity on the test split against run-group size, per set-up."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), constrained_layout=True)
    for ax, (column, title) in zip(
        axes,
        (
            ("test_f1", "best F1"),
            ("test_completeness_at_0.5", "completeness (score >= 0.5)"),
            ("test_purity_at_0.5", "purity (score >= 0.5)"),
        ),
        strict=True,
    ):
        for setup, group in table.groupby("setup"):
            ax.plot(group["n_images"], group[column], marker="o", label=setup, gid=f"{column}:{setup}")
        ax.set_xscale("log")
        ax.set_xlabel("images in the run-group")
        ax.set_ylim(0, 1.02)
        ax.set_title(title)
    axes[0].legend(fontsize="small")
    return fig


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``clumpcat experiment``."""
    parser.add_argument(
        "--runs",
        nargs="+",
        required=True,
        action=ManifestPaths,
        help=manifest_help("folders SETUP-N with test_metrics.json"),
    )
    parser.add_argument(
        "--out-table", required=True, help="experiment table (.parquet; a .csv is written beside)"
    )
    parser.add_argument("--out-plot", required=True, help="comparison figure (.png)")


def run(args: argparse.Namespace) -> int:
    """Run ``clumpcat experiment``."""
    table = collect_runs(args.runs)
    write_table(table, args.out_table, EXPERIMENT_COLUMNS)
    table.to_csv(Path(args.out_table).with_suffix(".csv"), index=False)
    fig = plot_experiment(table)
    Path(args.out_plot).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out_plot, dpi=110)
    plt.close(fig)
    log.info("experiment: %d runs -> %s, %s", len(table), args.out_table, args.out_plot)
    return 0
