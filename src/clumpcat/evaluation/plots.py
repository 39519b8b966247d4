"""Figures for the report; each answers one question, like the paper's figures.

=============================  =================================================
file                           question
=============================  =================================================
``completeness_purity.png``    How do completeness and purity trade off as the
                               score threshold rises (Fig. 8), for the model and
                               the baseline?
``flux_ratio.png``             How complete and pure are the detections per bin
                               of u-band clump/host flux ratio (Section 4.4.3)?
``selection_function.png``     What fraction of clumps injected into the run's
                               own cutouts is recovered, against flux ratio and
                               host r magnitude?
``conditions.png``             Do completeness and purity hold across sky
                               noise, seeing and PSF shape (issue 10)?
``training_curves.png``        Did training converge, and which epoch was kept
                               (best validation F1, Section 4.2)?
``colour_colour.png``          Where do normal and odd clumps lie in u-g vs g-r
                               and g-r vs r-i (extinction-corrected)?
``gallery.png``                Do the detections sit on the true clumps, seen by
                               eye?
=============================  =================================================

Every function draws on a fresh :class:`matplotlib.figure.Figure` (saved with
the Agg canvas; no pyplot state, so no display is needed), saves it when given a path and returns it, so tests can check
the plotted data. Overlays are drawn in the *rendered* frame (400x400 PNG):
points map as ``render = (cutout + 0.5) * 400 / nx - 0.5`` and XYXY box
edges as ``render = cutout * 400 / nx``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Circle, Rectangle

from clumpcat.constants import LABELS, MATCH_FWHM, RENDER_SIZE
from clumpcat.errors import InputError
from clumpcat.manifests import MANIFEST_EPILOG, ManifestPaths
from clumpcat.render.selection import GALLERY_SIZE
from clumpcat.tables import read_table, read_tables

__all__ = [
    "DETECTOR_STYLE",
    "plot_completeness_purity",
    "plot_flux_ratio",
    "plot_selection_function",
    "plot_conditions",
    "plot_training_curves",
    "plot_colour_colour",
    "gallery_objids",
    "plot_gallery",
    "make_figures",
    "configure_parser",
    "run",
]

log = logging.getLogger(__name__)

#: Colour and marker of each detector, the same in every figure.
DETECTOR_STYLE: dict[str, dict] = {
    "model": {"color": "#1f5fa6", "marker": "o", "name": "Faster R-CNN"},
    "baseline": {"color": "#d1651b", "marker": "s", "name": "classical baseline"},
}
#: Colour of each clump label.
LABEL_COLOURS: dict[str, str] = {"normal": "#1f5fa6", "odd": "#c0392b"}
_DPI = 110


def _save(fig: Figure, path: str | Path | None) -> Figure:
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=_DPI, bbox_inches="tight")
        log.info("wrote %s", path)
    return fig


def _style(detector: str) -> dict:
    return DETECTOR_STYLE.get(detector, {"color": "0.3", "marker": "^", "name": detector})


def _yerr(frame: pd.DataFrame, col: str) -> np.ndarray:
    value = frame[col].to_numpy(float)
    lo = value - frame[f"{col}_lo"].to_numpy(float)
    hi = frame[f"{col}_hi"].to_numpy(float) - value
    return np.vstack([np.clip(lo, 0, None), np.clip(hi, 0, None)])


def _sweep_subset(sweep: pd.DataFrame, group: str, truth_set: str) -> pd.DataFrame:
    sub = sweep[(sweep["group"] == group) & (sweep["truth_set"] == truth_set)]
    if sub.empty and truth_set != "all":
        sub = sweep[(sweep["group"] == group) & (sweep["truth_set"] == "all")]
    return sub


# --------------------------------------------------------------------------
# Completeness and purity
# --------------------------------------------------------------------------


def plot_completeness_purity(
    sweep: pd.DataFrame,
    path: str | Path | None = None,
    *,
    truth_set: str = "detectable",
    target: tuple[float, float] | None = (0.8, 0.8),
) -> Figure:
    """Completeness against purity as the score threshold rises (Fig. 8).

    Parameters
    ----------
    sweep : pandas.DataFrame
        ``completeness_purity`` table of :func:`clumpcat.evaluation.evaluate.evaluate_run`
        (columns detector, truth_set, group, threshold, completeness[_lo,
        _hi], purity[_lo, _hi]).
    path : str or Path, optional
        PNG to write.
    truth_set : str
        Truth set of the completeness (``'detectable'``, falling back to
        ``'all'`` when absent).
    target : (float, float), optional
        (completeness, purity) target drawn as a shaded corner.

    Returns
    -------
    matplotlib.figure.Figure
        One line per detector (``gid`` = detector name) with x = purity and
        y = completeness, one point per threshold, annotated with it.
    """
    fig = Figure(figsize=(5.6, 5.0))
    ax = fig.add_subplot()
    for detector, part in _sweep_subset(sweep, "all", truth_set).groupby("detector", sort=False):
        part = part.sort_values("threshold")
        ok = part["completeness"].notna() & part["purity"].notna()
        part = part[ok]
        st = _style(detector)
        ax.errorbar(
            part["purity"],
            part["completeness"],
            xerr=_yerr(part, "purity"),
            yerr=_yerr(part, "completeness"),
            color=st["color"],
            marker=st["marker"],
            ms=5,
            lw=1.2,
            capsize=2,
            label=st["name"],
            gid=detector,
        )
        for t, p, c in zip(part["threshold"], part["purity"], part["completeness"], strict=True):
            ax.annotate(
                f"{t:.1f}", (p, c), textcoords="offset points", xytext=(4, 4), fontsize=7, color=st["color"]
            )
    if target is not None:
        ax.axvspan(
            target[1],
            1.02,
            ymin=(target[0] + 0.02) / 1.04,
            color="0.85",
            zorder=0,
            label=f"target (C, P >= {target[0]:.1f}, {target[1]:.1f})",
        )
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("purity")
    ax.set_ylabel(f"completeness ({truth_set} truth)")
    ax.set_title("Completeness vs purity by score threshold")
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_flux_ratio(
    sweep: pd.DataFrame,
    path: str | Path | None = None,
    *,
    threshold: float = 0.5,
    truth_set: str = "detectable",
) -> Figure:
    """Completeness and purity per bin of log u-band flux ratio (Section 4.4.3).

    Returns
    -------
    matplotlib.figure.Figure
        Two axes (completeness, purity); in each, one line per detector
        (``gid`` = detector) with x = bin centre (dex) and y = the fraction
        at ``threshold``. Bins without clumps are not drawn.
    """
    sub = _sweep_subset(sweep, "flux_ratio", truth_set)
    sub = sub[np.isclose(sub["threshold"], threshold)]
    fig = Figure(figsize=(9.5, 4.0))
    axes = fig.subplots(1, 2, sharey=True)
    n_det = len(sub["detector"].unique()) or 1
    for k, (detector, part) in enumerate(sub.groupby("detector", sort=False)):
        st = _style(detector)
        centre = 0.5 * (part["log_flux_ratio_lo"] + part["log_flux_ratio_hi"]).to_numpy(float)
        width = (part["log_flux_ratio_hi"] - part["log_flux_ratio_lo"]).to_numpy(float)
        shift = (k - (n_det - 1) / 2) * 0.04 * np.nanmedian(width) if len(width) else 0.0
        for ax, col in zip(axes, ("completeness", "purity"), strict=True):
            ok = part[col].notna().to_numpy()
            if not ok.any():
                continue
            ax.errorbar(
                centre[ok] + shift,
                part[col].to_numpy(float)[ok],
                yerr=_yerr(part[ok], col),
                xerr=0.5 * width[ok],
                color=st["color"],
                marker=st["marker"],
                ls="-",
                lw=1.2,
                capsize=2,
                label=st["name"],
                gid=detector,
            )
    for ax, col in zip(axes, ("completeness", "purity"), strict=True):
        ax.set_xlabel("log10 u-band clump / host flux ratio")
        ax.set_title(f"{col} at score >= {threshold:.1f}")
        ax.set_ylim(-0.02, 1.05)
        ax.grid(alpha=0.3)
        for ratio in (0.03, 0.08):  # GSFC thresholds of Section 4.4.3
            ax.axvline(np.log10(ratio), color="0.6", ls=":", lw=1)
    axes[0].set_ylabel("fraction")
    if not any(ax.lines or ax.containers for ax in axes[1:]):
        axes[1].text(
            0.5,
            0.5,
            "no measured flux ratio\nfor the detections",
            ha="center",
            va="center",
            transform=axes[1].transAxes,
            color="0.4",
        )
    axes[0].legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def plot_selection_function(
    tables: dict[str, pd.DataFrame],
    path: str | Path | None = None,
) -> Figure:
    """Injection-recovery completeness against flux ratio and host r magnitude.

    Parameters
    ----------
    tables : dict
        ``flux_ratio`` and optionally ``host_mag_r`` tables of
        :func:`clumpcat.evaluation.evaluate.selection_function`.

    Returns
    -------
    matplotlib.figure.Figure
        One axis per table, a line (``gid`` = table key) of completeness at
        the bin centres that hold injected clumps.
    """
    keys = [k for k in ("flux_ratio", "host_mag_r") if k in tables]
    fig = Figure(figsize=(4.8 * max(len(keys), 1), 4.0))
    axes = np.atleast_1d(fig.subplots(1, max(len(keys), 1), sharey=True))
    labels = {
        "flux_ratio": ("log_flux_ratio", "log10 u-band clump / host flux ratio"),
        "host_mag_r": ("host_mag_r", "host r magnitude (AB)"),
    }
    for ax, key in zip(axes, keys, strict=False):
        frame = tables[key]
        stem, xlabel = labels[key]
        frame = frame[frame["n_injected"] > 0]
        centre = 0.5 * (frame[f"{stem}_lo"] + frame[f"{stem}_hi"]).to_numpy(float)
        ax.errorbar(
            centre,
            frame["completeness"],
            yerr=_yerr(frame, "completeness"),
            marker="o",
            color=DETECTOR_STYLE["model"]["color"],
            capsize=2,
            gid=key,
        )
        ax.set_xlabel(xlabel)
        ax.set_ylim(-0.02, 1.05)
        ax.grid(alpha=0.3)
        thr = float(tables[key]["threshold"].iloc[0]) if len(tables[key]) else float("nan")
        ax.set_title(f"recovered at score >= {thr:.1f}")
    axes[0].set_ylabel("completeness of injected clumps")
    return _save(fig, path)


# --------------------------------------------------------------------------
# Completeness and purity per observing condition
# --------------------------------------------------------------------------

#: Axis titles of the condition panels.
_CONDITION_TITLES = {
    "sky_tier": "r-band sky noise / nominal SDSS",
    "seeing_bin": "r-band seeing (PSF FWHM)",
    "psf_shape": "PSF shape (wing excess over a Gaussian)",
}


def plot_conditions(table: pd.DataFrame, path: str | Path | None = None) -> Figure:
    """Completeness and purity per sky-noise tier, seeing bin and PSF shape.

    Parameters
    ----------
    table : pandas.DataFrame
        ``conditions`` table of :func:`clumpcat.evaluation.evaluate.evaluate_run`
        (columns detector, axis, bin, threshold, n_galaxies, completeness[_lo,
        _hi], purity[_lo, _hi]).
    path : str or Path, optional
        PNG to write.

    Returns
    -------
    matplotlib.figure.Figure
        Two rows (completeness, purity) by three columns (sky tier, seeing,
        PSF shape); in each axis one line per detector (``gid`` = detector)
        with x = the bin's position in the order of the table and y = the
        fraction. Tick labels give the bin and its number of galaxies.
    """
    if table.empty:
        raise InputError("the conditions table is empty")
    axes_order = [a for a in ("sky_tier", "seeing_bin", "psf_shape") if a in set(table["axis"])]
    fig = Figure(figsize=(4.2 * len(axes_order), 6.4))
    axes = np.atleast_2d(fig.subplots(2, len(axes_order), sharey=True, squeeze=False))
    detectors = list(dict.fromkeys(table["detector"]))
    for j, axis in enumerate(axes_order):
        part = table[table["axis"] == axis]
        bins = list(dict.fromkeys(part["bin"]))
        counts = part.groupby("bin", sort=False)["n_galaxies"].first()
        for k, detector in enumerate(detectors):
            st = _style(detector)
            rows = part[part["detector"] == detector].set_index("bin").reindex(bins)
            x = np.arange(len(bins)) + (k - (len(detectors) - 1) / 2) * 0.08
            for i, col in enumerate(("completeness", "purity")):
                ok = rows[col].notna().to_numpy()
                if not ok.any():
                    continue
                axes[i, j].errorbar(
                    x[ok],
                    rows[col].to_numpy(float)[ok],
                    yerr=_yerr(rows[ok], col),
                    color=st["color"],
                    marker=st["marker"],
                    ls="-",
                    lw=1.0,
                    capsize=2,
                    label=st["name"],
                    gid=detector,
                )
        for i in range(2):
            ax = axes[i, j]
            ax.set_xticks(np.arange(len(bins)))
            ax.set_xticklabels([f"{b}\n({int(counts[b])} gal)" for b in bins], fontsize=8)
            ax.set_xlim(-0.5, len(bins) - 0.5)
            ax.set_ylim(-0.02, 1.05)
            ax.axhline(0.9, color="0.6", ls=":", lw=1)  # the goal of issue 10
            ax.grid(alpha=0.3)
        axes[0, j].set_title(_CONDITION_TITLES.get(axis, axis), fontsize=10)
    thr = float(table["threshold"].iloc[0])
    axes[0, 0].set_ylabel(f"completeness at score >= {thr:.2f}")
    axes[1, 0].set_ylabel(f"purity at score >= {thr:.2f}")
    axes[0, 0].legend(fontsize=8, loc="lower left")
    return _save(fig, path)


# --------------------------------------------------------------------------
# Training curves
# --------------------------------------------------------------------------

_LOSS_HINT = "loss"
_METRIC_ORDER = ("ap", "ar", "f1", "coco_f1", "completeness", "purity")


def plot_training_curves(history: pd.DataFrame, path: str | Path | None = None) -> Figure:
    """Losses and validation metrics per epoch, with the kept epoch marked.

    Parameters
    ----------
    history : pandas.DataFrame
        The training ``metrics.csv``: ``epoch`` and any of ``loss``,
        ``val_loss``, ``train_loss*``, ``ap``/``val_ap``, ``ar``/``val_ar``,
        ``f1``/``val_f1``, ``val_coco_f1``, ``val_completeness``,
        ``val_purity``.

    Returns
    -------
    matplotlib.figure.Figure
        Left: one line per loss column (``gid`` = column). Right: one line
        per metric (``gid`` = metric name without ``val_``) and a vertical
        line at the epoch of best F1 (``gid`` = ``best_epoch``).

    Raises
    ------
    InputError
        Without an ``epoch`` column or any loss or metric column.
    """
    if "epoch" not in history.columns:
        raise InputError("training metrics need an 'epoch' column")
    history = history.sort_values("epoch")
    epoch = history["epoch"].to_numpy(float)
    losses = [c for c in history.columns if _LOSS_HINT in c and pd.api.types.is_numeric_dtype(history[c])]
    metrics = {}
    for name in _METRIC_ORDER:
        for col in (f"val_{name}", name):
            if col in history.columns and name not in metrics:
                metrics[name] = col
    if not losses and not metrics:
        raise InputError(f"training metrics have no loss or metric columns: {list(history.columns)}")
    fig = Figure(figsize=(10, 4.0))
    ax_loss, ax_met = fig.subplots(1, 2)
    main_losses = [c for c in losses if c in ("loss", "train_loss", "val_loss")] or losses
    for col in losses:
        ax_loss.plot(
            epoch,
            history[col],
            lw=1.6 if col in main_losses else 0.8,
            ls="-" if col in main_losses else "--",
            label=col,
            gid=col,
        )
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("Training loss")
    if losses and (history[losses].to_numpy(float) > 0).all():
        ax_loss.set_yscale("log")
    ax_loss.legend(fontsize=7)
    for name, col in metrics.items():
        ax_met.plot(epoch, history[col], marker=".", label=name, gid=name)
    f1_col = metrics.get("f1")
    if f1_col is not None and history[f1_col].notna().any():
        best = float(epoch[int(np.nanargmax(history[f1_col].to_numpy(float)))])
        ax_met.axvline(best, color="0.4", ls=":", gid="best_epoch", label=f"kept: epoch {best:g}")
    ax_met.set_xlabel("epoch")
    ax_met.set_ylabel("validation metric")
    ax_met.set_ylim(-0.02, 1.02)
    ax_met.set_title("Validation AP, AR, F1")
    ax_met.legend(fontsize=7)
    for ax in (ax_loss, ax_met):
        ax.grid(alpha=0.3)
    return _save(fig, path)


# --------------------------------------------------------------------------
# Colours
# --------------------------------------------------------------------------

_COLOUR_PAIRS = (
    ("clump_mag_corr_g_r", "clump_mag_corr_u_g", "g - r", "u - g"),
    ("clump_mag_corr_r_i", "clump_mag_corr_g_r", "r - i", "g - r"),
)


def plot_colour_colour(
    catalogue: pd.DataFrame,
    path: str | Path | None = None,
    *,
    min_score: float | None = None,
) -> Figure:
    """Colour-colour diagrams of normal and odd clumps.

    Parameters
    ----------
    catalogue : pandas.DataFrame
        The catalogue (columns ``clump_mag_corr_u_g``, ``clump_mag_corr_g_r``,
        ``clump_mag_corr_r_i``, ``clump_label_name``; ``clump_score`` for
        ``min_score``).
    min_score : float, optional
        Keep clumps with ``clump_score >= min_score``.

    Returns
    -------
    matplotlib.figure.Figure
        Two axes (u-g vs g-r, g-r vs r-i), one scatter per label with
        ``gid`` = label; points with a non-finite colour are left out.
    """
    needed = ["clump_label_name", *{c for pair in _COLOUR_PAIRS for c in pair[:2]}]
    missing = [c for c in needed if c not in catalogue.columns]
    if missing:
        raise InputError(f"catalogue lacks column(s) {', '.join(sorted(missing))}")
    cat = catalogue
    if min_score is not None and "clump_score" in cat.columns:
        cat = cat[cat["clump_score"] >= min_score]
    fig = Figure(figsize=(10, 4.5))
    axes = fig.subplots(1, 2)
    for ax, (xcol, ycol, xlabel, ylabel) in zip(axes, _COLOUR_PAIRS, strict=True):
        for label in LABELS:
            part = cat[cat["clump_label_name"].astype(str) == label]
            x, y = part[xcol].to_numpy(float), part[ycol].to_numpy(float)
            ok = np.isfinite(x) & np.isfinite(y)
            ax.scatter(
                x[ok],
                y[ok],
                s=6,
                alpha=0.5,
                color=LABEL_COLOURS[label],
                label=f"{label} ({ok.sum()})",
                gid=label,
                rasterized=True,
            )
        ax.set_xlabel(f"{xlabel} (mag, extinction-corrected)")
        ax.set_ylabel(f"{ylabel} (mag)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, markerscale=2)
    axes[0].set_title("u-g vs g-r")
    axes[1].set_title("g-r vs r-i")
    return _save(fig, path)


# --------------------------------------------------------------------------
# Gallery
# --------------------------------------------------------------------------


def gallery_objids(
    render: pd.DataFrame, truth: pd.DataFrame | None = None, n: int = GALLERY_SIZE
) -> list[str]:
    """The galaxies the gallery shows: the first ``n`` rows with a PNG, those with truth first.

    Deterministic and in the render tables' order (the sample's order), so
    the workflow renders exactly these PNGs by asking the render stage for
    the sample's first :data:`~clumpcat.render.selection.GALLERY_SIZE`
    galaxies (:mod:`clumpcat.render.selection`).

    Raises
    ------
    InputError
        If no row has a PNG.
    """
    objids = render.loc[render["png"].notna(), "objid"].astype(str).tolist()
    if not objids:
        raise InputError("no galaxy of the render tables has a PNG (render with --png all or first:N)")
    if truth is not None and len(truth):
        with_truth = set(truth["objid"].astype(str))
        objids = [o for o in objids if o in with_truth] + [o for o in objids if o not in with_truth]
    return objids[:n]


def plot_gallery(
    render: pd.DataFrame,
    detections: pd.DataFrame,
    truth: pd.DataFrame | None = None,
    path: str | Path | None = None,
    *,
    threshold: float = 0.5,
    n: int = GALLERY_SIZE,
    ncols: int = 4,
    base_dir: str | Path | None = None,
) -> Figure:
    """Rendered galaxies with detections and true clumps overlaid.

    Parameters
    ----------
    render : pandas.DataFrame
        One row per rendered galaxy: ``objid``, ``png`` (400x400 RGB; null
        where none was rendered), ``nx``, ``ny`` (cutout size in cutout pixels).
    detections : pandas.DataFrame
        Detections (cutout frame): objid, x, y, score, label, and boxes
        ``box_x0..box_y1`` when available.
    truth : pandas.DataFrame, optional
        True clumps (cutout frame): objid, x, y, and ``fwhm_r_px`` for the
        match circle.
    threshold : float
        Draw detections with ``score >= threshold``.
    n, ncols : int
        Galaxies shown (see :func:`gallery_objids`) and columns of the grid.
    base_dir : str or Path, optional
        Folder that relative ``png`` paths are relative to.

    Returns
    -------
    matplotlib.figure.Figure
        One axis per galaxy (``gid`` = objid). Detections are boxes (solid,
        coloured by label) with their centre as a ``+`` line of ``gid``
        ``det-<objid>``; true clumps are circles of radius 0.75 FWHM (the
        match radius, Section 4.4.2) drawn as a line of ``gid``
        ``truth-<objid>``. All coordinates in the rendered frame.
    """
    missing = [c for c in ("objid", "png", "nx", "ny") if c not in render.columns]
    if missing:
        raise InputError(f"render table lacks column(s) {', '.join(missing)}")
    render = render.assign(objid=render["objid"].astype(str))
    chosen = gallery_objids(render, truth, n)
    rows = max(1, int(np.ceil(len(chosen) / ncols)))
    cols = min(ncols, max(len(chosen), 1))
    fig = Figure(figsize=(2.6 * cols, 2.75 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    dets = detections.assign(objid=detections["objid"].astype(str))
    dets = dets[dets["score"] >= threshold]
    tru = truth.assign(objid=truth["objid"].astype(str)) if truth is not None else None
    info = render.set_index("objid")
    for ax, objid in zip(axes, chosen, strict=False):
        row = info.loc[objid]
        sx, sy = RENDER_SIZE / float(row["nx"]), RENDER_SIZE / float(row["ny"])
        png = Path(str(row["png"]))
        if not png.is_absolute() and base_dir is not None:
            png = Path(base_dir) / png
        ax.set_gid(objid)
        try:
            image = mpimg.imread(png)
            ax.imshow(image, origin="upper", extent=(-0.5, image.shape[1] - 0.5, image.shape[0] - 0.5, -0.5))
        except (OSError, ValueError, SyntaxError) as exc:
            log.warning("gallery: cannot read %s (%s)", png, exc)
            ax.text(0.5, 0.5, "no image", ha="center", va="center", transform=ax.transAxes)
        d = dets[dets["objid"] == objid]
        # Points: render = (cutout + 0.5) * scale - 0.5; box edges: render = cutout * scale.
        dx = (d["x"].to_numpy(float) + 0.5) * sx - 0.5
        dy = (d["y"].to_numpy(float) + 0.5) * sy - 0.5
        ax.plot(dx, dy, "+", color="yellow", ms=6, mew=1, gid=f"det-{objid}")
        if {"box_x0", "box_y0", "box_x1", "box_y1"} <= set(d.columns):
            for b in d.itertuples(index=False):
                colour = LABEL_COLOURS.get(str(getattr(b, "label", "normal")), "yellow")
                ax.add_patch(
                    Rectangle(
                        (b.box_x0 * sx - 0.5, b.box_y0 * sy - 0.5),
                        (b.box_x1 - b.box_x0) * sx,
                        (b.box_y1 - b.box_y0) * sy,
                        fill=False,
                        ec=colour,
                        lw=1.0,
                    )
                )
        n_truth = 0
        if tru is not None:
            t = tru[tru["objid"] == objid]
            n_truth = len(t)
            tx = (t["x"].to_numpy(float) + 0.5) * sx - 0.5
            ty = (t["y"].to_numpy(float) + 0.5) * sy - 0.5
            ax.plot(tx, ty, "o", mfc="none", mec="lime", ms=3, lw=0, gid=f"truth-{objid}")
            if "fwhm_r_px" in t.columns:
                for x, y, f in zip(tx, ty, t["fwhm_r_px"].to_numpy(float), strict=True):
                    if np.isfinite(f):
                        ax.add_patch(
                            Circle(
                                (x, y),
                                MATCH_FWHM * f * np.sqrt(sx * sy),
                                fill=False,
                                ec="lime",
                                lw=0.8,
                                ls="--",
                            )
                        )
        ax.set_xlim(-0.5, RENDER_SIZE - 0.5)
        ax.set_ylim(RENDER_SIZE - 0.5, -0.5)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{objid}: {len(d)} det, {n_truth} true", fontsize=7)
    for ax in axes[len(chosen) :]:
        ax.set_axis_off()
    fig.suptitle(
        f"Detections with score >= {threshold:.1f} (boxes: blue normal, red odd) and true clumps "
        f"(green circles: 0.75 FWHM match radius)",
        fontsize=8,
    )
    return _save(fig, path)


# --------------------------------------------------------------------------
# All figures
# --------------------------------------------------------------------------


def make_figures(
    out_dir: str | Path,
    *,
    evaluation_dir: str | Path | None = None,
    training_metrics: str | Path | None = None,
    catalogue: pd.DataFrame | None = None,
    render: pd.DataFrame | None = None,
    detections: pd.DataFrame | None = None,
    truth: pd.DataFrame | None = None,
    threshold: float = 0.5,
    gallery_size: int = GALLERY_SIZE,
) -> dict[str, str]:
    """Make every figure whose inputs are given; skip the others.

    Returns
    -------
    dict
        Figure name -> PNG path, also written to ``out_dir/figures.json``
        (and ``out_dir/.done`` is touched, for the workflow).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    made: dict[str, str] = {}

    def _make(name, func, *a, **k):
        path = out_dir / f"{name}.png"
        try:
            func(*a, path=path, **k)
        except InputError as exc:
            log.warning("figure %s skipped: %s", name, exc)
            return
        made[name] = str(path)

    if evaluation_dir is not None:
        ev = Path(evaluation_dir)
        sweep_path = ev / "completeness_purity.parquet"
        if sweep_path.exists():
            sweep = read_table(sweep_path)
            metrics_path = ev / "metrics.json"
            truth_set = "detectable"
            if metrics_path.exists():
                truth_set = json.loads(metrics_path.read_text()).get("headline_truth_set", truth_set)
            _make("completeness_purity", plot_completeness_purity, sweep, truth_set=truth_set)
            _make("flux_ratio", plot_flux_ratio, sweep, threshold=threshold, truth_set=truth_set)
        else:
            log.warning("no %s: completeness/purity figures skipped", sweep_path)
        sel = {
            k: read_table(ev / f"selection_{k}.parquet")
            for k in ("flux_ratio", "host_mag_r")
            if (ev / f"selection_{k}.parquet").exists()
        }
        if sel:
            _make("selection_function", plot_selection_function, sel)
        if (ev / "conditions.parquet").exists():
            _make("conditions", plot_conditions, read_table(ev / "conditions.parquet"))
    if training_metrics is not None:
        _make("training_curves", plot_training_curves, read_table(training_metrics))
    if catalogue is not None:
        _make("colour_colour", plot_colour_colour, catalogue)
    if render is not None and detections is not None:
        _make("gallery", plot_gallery, render, detections, truth, threshold=threshold, n=gallery_size)
    (out_dir / "figures.json").write_text(json.dumps(made, indent=2) + "\n")
    (out_dir / ".done").touch()
    return made


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``clumpcat plots``."""
    parser.add_argument("--out-dir", required=True, help="folder for the PNGs")
    parser.add_argument("--evaluation", help="output folder of 'clumpcat evaluate'")
    parser.add_argument("--training-metrics", help="training metrics.csv (epoch, losses, val_ap, ...)")
    # Each list option also takes @MANIFEST (clumpcat.manifests), as the workflow passes them.
    many = {"nargs": "+", "metavar": "TABLE", "action": ManifestPaths}
    parser.epilog = MANIFEST_EPILOG
    parser.add_argument("--catalogue", **many, help="catalogue Parquet, for the colour-colour diagrams")
    parser.add_argument("--render", **many, help="render table(s) (objid, png, nx, ny), e.g. one per shard")
    parser.add_argument("--clumps", **many, help="candidates (cutout frame) for the gallery")
    parser.add_argument("--truth", **many, help="truth table(s) for the gallery")
    parser.add_argument("--threshold", type=float, default=0.5, help="score threshold of the overlays (0.5)")
    parser.add_argument(
        "--gallery-size",
        type=int,
        default=GALLERY_SIZE,
        help=f"galaxies in the gallery, the first with a PNG ({GALLERY_SIZE})",
    )


def run(args: argparse.Namespace) -> int:
    """Run ``clumpcat plots``."""
    if args.gallery_size < 1:
        raise InputError(f"--gallery-size must be >= 1, got {args.gallery_size}")
    made = make_figures(
        args.out_dir,
        evaluation_dir=args.evaluation,
        training_metrics=args.training_metrics,
        catalogue=read_tables(args.catalogue),
        render=read_tables(args.render),
        detections=read_tables(args.clumps),
        truth=read_tables(args.truth),
        threshold=args.threshold,
        gallery_size=args.gallery_size,
    )
    log.info("wrote %d figure(s) to %s: %s", len(made), args.out_dir, ", ".join(made) or "none")
    return 0
