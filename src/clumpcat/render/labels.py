"""Label boxes in the rendered frame: from truth tables or Clump Scout labels.

Every box here is XYXY in the *rendered* frame (the 400x400 PNG), in edge
coordinates (pixel ``i`` spans ``[i, i + 1]``; see :mod:`clumpcat.render.rgb`),
with the class name ``label`` ('normal' or 'odd') and its id ``label_id``
(1 or 2, torchvision's convention with 0 as background).

Clump Scout label boxes are squares of side ``LABEL_BOX_FWHM`` = 2.5 times the
r-band PSF FWHM of the image (DESIGN.md); :func:`truth_boxes` draws the same
boxes around injected sources so that synthetic and real labels look alike.
Training crops the central square of half the side (Section 4.2); the
crop and its boxes are made by :class:`clumpcat.detection.data.CropDataset`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from clumpcat.constants import LABEL_BOX_FWHM, LABEL_IDS, LABELS
from clumpcat.errors import InputError
from clumpcat.geometry import RenderGeometry, boxes_around
from clumpcat.tables import ColumnDoc, read_table

__all__ = [
    "LABEL_COLUMNS",
    "BOX_COLUMNS",
    "truth_boxes",
    "read_clump_scout_labels",
    "validate_clump_scout_labels",
]

log = logging.getLogger(__name__)

#: Box corner columns, XYXY.
BOX_COLUMNS: tuple[str, ...] = ("box_x0", "box_y0", "box_x1", "box_y1")

#: Columns of a label-box table: (unit, description).
LABEL_COLUMNS: dict[str, ColumnDoc] = {
    "objid": ("", "Galaxy identifier"),
    "box_x0": ("pix", "Box left edge, rendered frame (edge coordinates, 0-based)"),
    "box_y0": ("pix", "Box top edge (smaller row), rendered frame"),
    "box_x1": ("pix", "Box right edge, rendered frame"),
    "box_y1": ("pix", "Box bottom edge (larger row), rendered frame"),
    "label": ("", "Class: normal or odd"),
    "label_id": ("", "Class id: 1 normal, 2 odd (0 is background)"),
}

_LABEL_BY_ID = {v: k for k, v in LABEL_IDS.items()}


def _rows(mask: np.ndarray, limit: int = 10) -> str:
    rows = np.flatnonzero(mask)
    shown = ", ".join(str(r) for r in rows[:limit])
    more = f" and {len(rows) - limit} more" if len(rows) > limit else ""
    return f"row(s) {shown}{more}"


def _empty() -> pd.DataFrame:
    return _frame([], np.zeros((0, 4)), [])


def _frame(objids, boxes: np.ndarray, labels) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "objid": pd.Series(list(objids), dtype=str),
            **{c: pd.Series(boxes[:, i], dtype="float64") for i, c in enumerate(BOX_COLUMNS)},
            "label": pd.Series(list(labels), dtype=str),
        }
    )
    frame["label_id"] = frame["label"].map(LABEL_IDS).astype("int64")
    return frame


def truth_boxes(
    truth: pd.DataFrame,
    geometry_by_objid: Mapping[str, RenderGeometry],
    *,
    detectable_only: bool = False,
    fwhm_r_px: Mapping[str, float] | None = None,
    box_fwhm: float = LABEL_BOX_FWHM,
) -> pd.DataFrame:
    """Clump Scout-style label boxes around truth sources, in the rendered frame.

    Parameters
    ----------
    truth : DataFrame
        One row per injected source with ``objid``, ``x``, ``y`` (cutout
        pixel centre, 0-based), ``label`` ('normal' or 'odd'), and
        ``fwhm_r_px`` (r-band PSF FWHM in cutout pixels) unless
        ``fwhm_r_px`` is given; ``detectable`` (bool) if
        ``detectable_only``.
    geometry_by_objid : mapping of str to RenderGeometry
        Rendered galaxies; sources of galaxies not in it (not rendered,
        e.g. failed) are left out.
    detectable_only : bool
        Keep only sources with ``detectable`` true.
    fwhm_r_px : mapping of str to float, optional
        Per-galaxy r-band FWHM in cutout pixels, used where ``truth`` has no
        ``fwhm_r_px`` column (or a NaN in it).
    box_fwhm : float
        Box side in units of the FWHM (DESIGN.md: 2.5).

    Returns
    -------
    DataFrame
        Columns ``objid``, ``box_x0``, ``box_y0``, ``box_x1``, ``box_y1``
        (rendered frame, edge coordinates), ``label``, ``label_id``; one row
        per kept source, in truth order. Each box is centred on the source's
        rendered position and its side is ``box_fwhm x FWHM x scale`` along
        each axis.

    Raises
    ------
    InputError
        Naming the rows: a missing column, a label other than 'normal' or
        'odd', a non-finite position, or a missing or non-positive FWHM.
    """
    required = ["objid", "x", "y", "label"] + (["detectable"] if detectable_only else [])
    if fwhm_r_px is None:
        required.append("fwhm_r_px")
    missing = [c for c in required if c not in truth.columns]
    if missing:
        raise InputError(f"truth table: missing column(s) {', '.join(missing)}")
    frame = truth.reset_index(drop=True)
    objid = frame["objid"].astype(str)
    keep = objid.isin(list(geometry_by_objid)).to_numpy()
    if detectable_only:
        keep = keep & frame["detectable"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    dropped = sorted(set(objid[~objid.isin(list(geometry_by_objid))]))
    if dropped:
        log.info("truth boxes: %d galaxies not rendered, their sources skipped", len(dropped))
    if not keep.any():
        return _empty()

    x = pd.to_numeric(frame["x"], errors="coerce").to_numpy(dtype=float)
    y = pd.to_numeric(frame["y"], errors="coerce").to_numpy(dtype=float)
    fwhm = (
        pd.to_numeric(frame["fwhm_r_px"], errors="coerce").to_numpy(dtype=float)
        if "fwhm_r_px" in frame.columns
        else np.full(len(frame), np.nan)
    )
    if fwhm_r_px is not None:
        fallback = objid.map(lambda o: fwhm_r_px.get(o, np.nan)).to_numpy(dtype=float)
        fwhm = np.where(np.isfinite(fwhm), fwhm, fallback)
    label = frame["label"].astype(str)
    problems = []
    bad_label = keep & ~label.isin(LABELS).to_numpy()
    if bad_label.any():
        problems.append(f"label not in {', '.join(LABELS)} in {_rows(bad_label)}")
    bad_pos = keep & ~(np.isfinite(x) & np.isfinite(y))
    if bad_pos.any():
        problems.append(f"non-finite x or y in {_rows(bad_pos)}")
    with np.errstate(invalid="ignore"):
        bad_fwhm = keep & ~(np.isfinite(fwhm) & (fwhm > 0))
    if bad_fwhm.any():
        problems.append(f"missing or non-positive fwhm_r_px in {_rows(bad_fwhm)}")
    if problems:
        raise InputError("truth table: " + "; ".join(problems))

    objid, label = objid[keep].tolist(), label[keep].tolist()
    x, y, fwhm = x[keep], y[keep], fwhm[keep]
    geoms = [geometry_by_objid[o] for o in objid]
    sx = np.array([g.scale_x for g in geoms])
    sy = np.array([g.scale_y for g in geoms])
    xr = (x + 0.5) * sx - 0.5
    yr = (y + 0.5) * sy - 0.5
    boxes = boxes_around(xr, yr, box_fwhm * fwhm * sx, box_fwhm * fwhm * sy)
    return _frame(objid, boxes, label)


def validate_clump_scout_labels(frame: pd.DataFrame, source: str = "label table") -> pd.DataFrame:
    """Check a Clump Scout style label table and convert it to label boxes.

    Parameters
    ----------
    frame : DataFrame
        Columns (case-insensitive) ``objid`` or ``image_id``; ``x1``, ``x2``,
        ``y1``, ``y2`` (box corners in rendered pixels, edge coordinates);
        ``label`` (1 normal, 2 odd; the names are accepted too).
    source : str
        Name used in error messages.

    Returns
    -------
    DataFrame
        Columns of :data:`LABEL_COLUMNS`.

    Raises
    ------
    InputError
        In one message, naming 0-based rows: a missing column; an empty id;
        non-finite corners; ``x2 <= x1`` or ``y2 <= y1``; a label not in
        {1, 2}.
    """
    cols = {str(c).strip().lower().replace(" ", "_"): c for c in frame.columns}
    id_col = next((cols[c] for c in ("objid", "image_id", "imageid") if c in cols), None)
    missing = [] if id_col is not None else ["objid (or image_id)"]
    missing += [c for c in ("x1", "x2", "y1", "y2", "label") if c not in cols]
    if missing:
        raise InputError(
            f"{source}: missing column(s) {', '.join(missing)}; a Clump Scout label table needs "
            "objid (or image_id), x1, x2, y1, y2, label"
        )
    table = frame.reset_index(drop=True)
    ids = table[id_col]
    objid = ids.astype(str).str.strip()
    coords = {
        c: pd.to_numeric(table[cols[c]], errors="coerce").to_numpy(dtype=float)
        for c in ("x1", "x2", "y1", "y2")
    }
    raw = table[cols["label"]]
    names = raw.astype(str).str.strip().str.lower()
    numeric = pd.to_numeric(raw, errors="coerce")
    label_id = np.where(names.isin(LABELS), names.map(LABEL_IDS), numeric).astype(float)

    problems = []
    bad_id = (ids.isna() | (objid == "")).to_numpy()
    if bad_id.any():
        problems.append(f"empty {id_col} in {_rows(bad_id)}")
    finite = np.logical_and.reduce([np.isfinite(v) for v in coords.values()])
    if (~finite).any():
        problems.append(f"non-finite x1, x2, y1 or y2 in {_rows(~finite)}")
    with np.errstate(invalid="ignore"):
        empty = finite & ((coords["x2"] <= coords["x1"]) | (coords["y2"] <= coords["y1"]))
    if empty.any():
        problems.append(f"x2 <= x1 or y2 <= y1 in {_rows(empty)}")
    bad_label = ~np.isin(label_id, list(_LABEL_BY_ID))
    if bad_label.any():
        problems.append(f"label not in {{1, 2}} (1 normal, 2 odd) in {_rows(bad_label)}")
    if problems:
        raise InputError(f"{source}: " + "; ".join(problems))
    boxes = np.stack([coords["x1"], coords["y1"], coords["x2"], coords["y2"]], axis=1)
    return _frame(objid, boxes, [_LABEL_BY_ID[int(i)] for i in label_id])


def read_clump_scout_labels(path: str | Path) -> pd.DataFrame:
    """Read a Clump Scout style label table (Parquet or CSV) as label boxes.

    See :func:`validate_clump_scout_labels` for the columns and the checks.

    Returns
    -------
    DataFrame
        ``objid``, ``box_x0``, ``box_y0``, ``box_x1``, ``box_y1`` (rendered
        frame), ``label``, ``label_id``.

    Raises
    ------
    InputError
        If the file cannot be read or breaks a check, naming file and rows.
    """
    return validate_clump_scout_labels(read_table(path), source=str(path))
