"""Training images and boxes, and the cutouts read for inference.

The detector is trained on the central ``CROP_SIZE`` x ``CROP_SIZE`` square of
each 400-px rendered image, where the clumps lie (paper Section 4.2, Fig. 2),
with random horizontal and vertical flips. Boxes are XYXY in continuous pixel
edge coordinates of the crop (torchvision's convention).

Inference reads the cutouts themselves (:class:`CutoutImages`): no PNG is
written or decoded between the cutout and the model.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torchvision import tv_tensors
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as tvf

from clumpcat.constants import CROP_SIZE, LABEL_IDS, RENDER_SIZE, RGB_BANDS
from clumpcat.errors import CutoutError, InputError
from clumpcat.geometry import RenderGeometry
from clumpcat.paths import objid_path
from clumpcat.render.rgb import SURVEY_RENDERERS, render_cutout
from clumpcat.render.torch_rgb import flux_scale_of, stack_bands
from clumpcat.survey.cutouts import read_cutout
from clumpcat.tables import read_table

__all__ = [
    "TrainingTable",
    "load_training_table",
    "split_strata",
    "split_strata",
    "stratified_split",
    "subset_images",
    "CropDataset",
    "CutoutImages",
    "collate",
    "collate_items",
]

log = logging.getLogger(__name__)

_RENDER_COLUMNS = ("objid", "png")
#: Memory for decoded training images per process (CropDataset): the default
#: survey's 960 rendered images take ~460 MB; a large label set beyond this is
#: decoded from its PNGs every epoch, as before.
DECODED_CACHE_BYTES = 2 * 1024**3
_LABEL_COLUMNS = ("objid", "box_x0", "box_y0", "box_x1", "box_y1", "label")


@dataclass
class TrainingTable:
    """Rendered images and their label boxes (rendered frame).

    Attributes
    ----------
    images : pandas.DataFrame
        One row per image: ``objid``, ``png`` and, where known,
        ``fwhm_r_render_px`` (r-band PSF FWHM in rendered pixels).
    boxes : pandas.DataFrame
        One row per label box: ``objid``, ``box_x0, box_y0, box_x1, box_y1``
        (XYXY, rendered frame), ``label`` (``normal``/``odd``).
    """

    images: pd.DataFrame
    boxes: pd.DataFrame

    def boxes_of(self, objid: str) -> pd.DataFrame:
        """Label boxes of one image."""
        return self._groups.get(objid, self.boxes.iloc[:0])

    def __post_init__(self):
        self._groups = {k: g for k, g in self.boxes.groupby("objid", sort=False)}


def _concat(paths: Sequence[str | Path], needed: Sequence[str], what: str) -> pd.DataFrame:
    frames = []
    for path in paths:
        frame = read_table(path)
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            raise InputError(f"{path}: {what} lacks column(s) {', '.join(missing)}")
        frames.append(frame)
    if not frames:
        raise InputError(f"no {what} given")
    out = pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True)
    out["objid"] = out["objid"].astype(str)
    return out


def load_training_table(
    render_paths: Sequence[str | Path], label_paths: Sequence[str | Path]
) -> TrainingTable:
    """Read the render tables and label tables of a training set.

    Parameters
    ----------
    render_paths : sequence of path
        ``render.parquet`` tables (``objid``, ``png``, ...).
    label_paths : sequence of path
        ``labels.parquet`` tables or Clump Scout style label tables already
        converted to the same columns (rendered frame, XYXY).

    Returns
    -------
    TrainingTable

    Raises
    ------
    InputError
        If a table lacks a column, or labels name images that were not rendered.
    """
    images = _concat(render_paths, _RENDER_COLUMNS, "render table")
    no_png = images.loc[images["png"].isna(), "objid"].tolist()
    if no_png:
        raise InputError(
            f"render tables: {len(no_png)} galaxies have no PNG (e.g. {', '.join(no_png[:5])}); training "
            "reads PNGs: render them with `clumpcat render --png all` (workflow: render.png: all)"
        )
    boxes = _concat(label_paths, _LABEL_COLUMNS, "label table")
    unknown = sorted(set(boxes["objid"]) - set(images["objid"]))
    if unknown:
        log.warning(
            "%d labelled galaxies were not rendered (failed upstream?) and are left out: %s",
            len(unknown),
            ", ".join(unknown[:5]),
        )
        boxes = boxes[boxes["objid"].isin(images["objid"])]
    bad = ~boxes["label"].astype(str).isin(list(LABEL_IDS))
    if bad.any():
        raise InputError(
            f"label tables: labels must be 'normal' or 'odd', got {sorted(set(boxes.loc[bad, 'label']))}"
        )
    return TrainingTable(images.reset_index(drop=True), boxes.reset_index(drop=True))


def split_strata(strata: Sequence[np.ndarray], fractions: Sequence[float], seed: int) -> dict[str, list]:
    """Shuffle each stratum and cut it into train/val/test by ``fractions``.

    Parameters
    ----------
    strata : sequence of ndarray
        The members of each stratum (e.g. by odd/normal ratio, Section 4.2, or
        by class for the App. B classifier).
    fractions : (float, float, float)
        Train, validation and test shares; validation and test are rounded
        per stratum and the training set takes the rest.
    seed : int
        Seed of the shuffles.

    Returns
    -------
    dict
        ``train``, ``val`` and ``test`` lists of members.
    """
    rng = np.random.default_rng(seed)
    split: dict[str, list] = {"train": [], "val": [], "test": []}
    for members in strata:
        members = np.asarray(members, dtype=object)[rng.permutation(len(members))]
        n_val = int(round(fractions[1] * len(members)))
        n_test = int(round(fractions[2] * len(members)))
        split["val"] += members[:n_val].tolist()
        split["test"] += members[n_val : n_val + n_test].tolist()
        split["train"] += members[n_val + n_test :].tolist()
    return split


def stratified_split(
    table: TrainingTable, fractions: tuple[float, float, float] = (0.7, 0.2, 0.1), seed: int = 0
) -> dict[str, list[str]]:
    """Split images into train/val/test, stratified by their odd/normal mix.

    Paper App. C: random 70/20/10 splits "stratified based on the ratio of odd
    to normal clumps in each galaxy". Images are grouped by the fraction of
    odd boxes (no boxes; 0; (0, 0.5); >= 0.5) and each group is split with
    the same fractions.

    Returns
    -------
    dict
        ``{"train": [...], "val": [...], "test": [...]}`` objids.
    """
    if not np.isclose(sum(fractions), 1.0) or min(fractions) < 0:
        raise InputError(f"split fractions must be >= 0 and sum to 1, got {fractions}")
    counts = table.boxes.groupby("objid")["label"].agg(n="size", odd=lambda s: float((s == "odd").mean()))
    objids = table.images["objid"].tolist()
    n_boxes = counts["n"].reindex(objids).fillna(0).to_numpy()
    odd = counts["odd"].reindex(objids).fillna(0).to_numpy()
    stratum = np.where(n_boxes == 0, 0, np.where(odd == 0, 1, np.where(odd < 0.5, 2, 3)))
    everyone = np.array(objids, dtype=object)
    split = split_strata([everyone[stratum == s] for s in np.unique(stratum)], fractions, seed)
    # Small strata round to zero: keep at least one validation and, where asked
    # for, one test image whenever there are enough images.
    for name, fraction in (("val", fractions[1]), ("test", fractions[2])):
        if fraction > 0 and not split[name] and len(split["train"]) > 1:
            split[name].append(split["train"].pop())
    return split


def subset_images(table: TrainingTable, n: int, seed: int = 0) -> TrainingTable:
    """A seeded random subset of ``n`` images and their boxes (App. C run-groups).

    Raises
    ------
    InputError
        If ``n`` exceeds the number of images.
    """
    if n > len(table.images):
        raise InputError(f"asked for {n} training images, but only {len(table.images)} are rendered")
    rng = np.random.default_rng((seed, n))
    keep = table.images.iloc[np.sort(rng.choice(len(table.images), size=n, replace=False))]
    boxes = table.boxes[table.boxes["objid"].isin(keep["objid"])]
    return TrainingTable(keep.reset_index(drop=True), boxes.reset_index(drop=True))


class CropDataset(torch.utils.data.Dataset):
    """Central crops of rendered images with their boxes, for torchvision detectors.

    Parameters
    ----------
    table : TrainingTable
        Images and boxes.
    objids : sequence of str
        The images of this dataset (e.g. the training split).
    augment : bool
        Random horizontal and vertical flips (paper Section 4.2).
    seed : int
        Seed of the flips; with :meth:`set_epoch` every epoch differs and a
        resumed run repeats the same flips.
    crop : int
        Side of the central crop (Section 4.2: half the 400-px image).
    jitter : int
        Largest shift in pixels of the crop window away from the centre, drawn
        per item (and per epoch when ``augment``). Without it the network
        learns that a bright source exactly at the image centre is the
        galaxy's nucleus from the zero padding at the crop's edges, a cue that
        is gone on the whole 400-px image seen at inference (measured: nuclei
        then come out as odd clumps). Validation uses a fixed shift per image.
    cache_bytes : int
        Keep decoded images in memory up to this many bytes, so each PNG is
        decoded once per process rather than once per epoch (a 400-px PNG of
        a noisy sky takes ~8 ms; 960 images are ~460 MB). Images past the
        limit are decoded every time. 0 disables the cache.

    Notes
    -----
    Item ``i`` is ``(image, target)``: a 3xHxW float tensor in [0, 1] and a
    dict with ``boxes`` (XYXY, pixels of the crop, float32), ``labels``
    (int64: 1 normal, 2 odd), ``image_id`` and ``objid``. Boxes are clipped
    to the crop; boxes whose centre lies outside are dropped.
    """

    def __init__(
        self,
        table: TrainingTable,
        objids: Sequence[str],
        *,
        augment: bool = False,
        seed: int = 0,
        crop: int = CROP_SIZE,
        jitter: int = 0,
        cache_bytes: int = DECODED_CACHE_BYTES,
    ):
        self.table = table
        self.objids = list(objids)
        self.augment = augment
        self.seed = seed
        self.crop = crop
        self.jitter = int(jitter)
        self.epoch = 0
        self._png = dict(zip(table.images["objid"], table.images["png"], strict=True))
        self._decoded: dict[str, torch.Tensor] = {}
        self._cache_left = int(cache_bytes)

    def set_epoch(self, epoch: int) -> None:
        """Change the flips drawn for every item (call once per epoch)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.objids)

    def load(
        self, objid: str, shift: tuple[int, int] = (0, 0)
    ) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        """The crop (3xHxW uint8 tensor), its boxes (XYXY, crop pixels) and label ids.

        ``shift`` moves the crop window by (dx, dy) pixels from the centre,
        clipped to stay inside the image.
        """
        rgb = self._decoded.get(objid)
        if rgb is None:
            path = self._png[objid]
            try:
                rgb = decode_image(str(path), mode=ImageReadMode.RGB)
            except (OSError, RuntimeError) as exc:
                raise InputError(f"{path}: cannot read rendered image of {objid} ({exc})") from exc
            if rgb.numel() <= self._cache_left:
                self._decoded[objid] = rgb
                self._cache_left -= rgb.numel()
        size_y, size_x = rgb.shape[-2:]
        ox = int(np.clip((size_x - self.crop) // 2 + shift[0], 0, size_x - self.crop))
        oy = int(np.clip((size_y - self.crop) // 2 + shift[1], 0, size_y - self.crop))
        rgb = rgb[:, oy : oy + self.crop, ox : ox + self.crop]
        rows = self.table.boxes_of(objid)
        boxes = rows[["box_x0", "box_y0", "box_x1", "box_y1"]].to_numpy(dtype=np.float32)
        boxes = boxes - np.array([ox, oy, ox, oy], dtype=np.float32)
        labels = rows["label"].map(LABEL_IDS).to_numpy(dtype=np.int64)
        if len(boxes):
            # A box belongs to the crop when its centre does (the clump is in
            # it), then is clipped to the crop: unlike torchvision's
            # SanitizeBoundingBoxes, which keeps boxes by their clipped area.
            cx = 0.5 * (boxes[:, 0] + boxes[:, 2])
            cy = 0.5 * (boxes[:, 1] + boxes[:, 3])
            inside = (cx >= 0) & (cx < self.crop) & (cy >= 0) & (cy < self.crop)
            boxes = np.clip(boxes[inside], 0, self.crop)
            labels = labels[inside]
        return rgb, boxes.reshape(-1, 4), labels

    def __getitem__(self, index: int):
        objid = self.objids[index]
        rng = np.random.default_rng((self.seed, self.epoch if self.augment else 0, index))
        shift = (
            tuple(int(v) for v in rng.integers(-self.jitter, self.jitter + 1, size=2))
            if self.jitter
            else (0, 0)
        )
        rgb, boxes, labels = self.load(objid, shift)
        image = tv_tensors.Image(rgb)
        boxes = tv_tensors.BoundingBoxes(
            torch.from_numpy(boxes), format="XYXY", canvas_size=(self.crop, self.crop)
        )
        if self.augment:
            # Box-aware flips (Section 4.2): torchvision moves image and boxes together.
            if rng.random() < 0.5:
                image, boxes = tvf.horizontal_flip(image), tvf.horizontal_flip(boxes)
            if rng.random() < 0.5:
                image, boxes = tvf.vertical_flip(image), tvf.vertical_flip(boxes)
        target = {
            "boxes": boxes.as_subclass(torch.Tensor).float().reshape(-1, 4),
            "labels": torch.from_numpy(labels),
            "image_id": index,
            "objid": objid,
        }
        return image.as_subclass(torch.Tensor).float().div_(255.0), target


def collate(batch):
    """Keep images and targets as lists (torchvision detection convention)."""
    return tuple(zip(*batch, strict=True))


class CutoutImages(torch.utils.data.Dataset):
    """The cutouts of a shard, read for inference (no PNG in between).

    Parameters
    ----------
    objids : sequence of str
        Galaxies; item ``i`` reads ``cutout_dir/{objids[i]}.fits``.
    cutout_dir : str or Path
        Folder of the cutouts.
    survey : {'sdss', 'synthetic', 'hsc'}
        Chooses the composite (:data:`clumpcat.render.rgb.SURVEY_RENDERERS`).
    render_here : bool
        True: the item's image is rendered here, in the worker, by
        :func:`clumpcat.render.rgb.render_cutout` (numpy and Pillow, the
        fastest on a CPU) as a (3, size, size) float tensor in [0, 1].
        False: the item holds the unscaled (3, ny, nx) float32 i, r, g stack,
        to be rendered on the device by
        :func:`clumpcat.render.torch_rgb.render_tensor` (on a GPU).
    size : int
        Side of the rendered image.
    resample : {'lanczos', 'bilinear'}
        Resize filter.
    with_wcs : bool
        Put the cutout's WCS in the item. Unpickling an astropy WCS costs
        milliseconds, which the one main process of a GPU job cannot afford
        per galaxy: with workers, leave it out (None) and let
        :func:`clumpcat.detection.inference.detect_shard` map the boxes to
        the sky in a process pool.

    Notes
    -----
    Item ``i`` is a dict: ``objid``; ``image`` (tensor as above, or None when
    the cutout broke the contract); ``error`` (the reason, naming the file,
    or ""); ``geometry`` (:class:`~clumpcat.geometry.RenderGeometry`);
    ``flux_scale`` (for the asinh composite); ``fwhm_r_px``; ``wcs`` (or None).
    """

    def __init__(
        self,
        objids: Sequence[str],
        cutout_dir: str | Path,
        survey: str,
        *,
        render_here: bool = True,
        size: int = RENDER_SIZE,
        resample: str = "lanczos",
        with_wcs: bool = True,
    ):
        if survey not in SURVEY_RENDERERS:
            allowed = ", ".join(repr(s) for s in SURVEY_RENDERERS)
            raise InputError(f"'survey' must be one of {allowed}, got {survey!r}")
        self.objids = [str(o) for o in objids]
        self.cutout_dir = Path(cutout_dir)
        self.survey = survey
        self.render_here = render_here
        self.size = size
        self.resample = resample
        self.with_wcs = with_wcs
        self.bands = tuple(sorted(set(RGB_BANDS) | {"r"}))

    def __len__(self) -> int:
        return len(self.objids)

    def __getitem__(self, index: int) -> dict:
        objid = self.objids[index]
        path = objid_path(self.cutout_dir, objid, ".fits")
        item = {"objid": objid, "image": None, "error": "", "geometry": None}
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                cutout = read_cutout(path, bands=self.bands)
            for w in caught:
                log.warning("detect: %s: %s: %s", path, w.category.__name__, str(w.message).splitlines()[0])
            if self.render_here:
                rgb, geometry = render_cutout(cutout, self.survey, size=self.size, resample=self.resample)
                image = torch.from_numpy(rgb.transpose(2, 0, 1).copy()).float().div_(255.0)
            else:
                image = torch.from_numpy(stack_bands(cutout.images))
                geometry = RenderGeometry.for_shape(cutout.shape, size=self.size)
            item.update(
                image=image,
                geometry=geometry,
                flux_scale=flux_scale_of(self.survey, cutout.pixel_scale),
                fwhm_r_px=cutout.fwhm_pixels("r"),
                wcs=cutout.wcs if self.with_wcs else None,
            )
        except CutoutError as exc:
            item["error"] = str(exc)
        except (ValueError, ArithmeticError) as exc:
            item["error"] = f"{path}: cannot render ({exc})"
        return item


def collate_items(batch: list[dict]) -> list[dict]:
    """Keep inference items as a list of dicts (images differ in size before rendering)."""
    return list(batch)
