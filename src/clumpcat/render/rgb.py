"""Render cutouts as 400x400 RGB PNGs, the images the detector sees.

The shard driver writes a PNG only for the galaxies asked for (``--png``;
see :mod:`clumpcat.render.selection`): detection renders from the cutouts
itself. Every galaxy's cutout is validated and gets its geometry row either way.

SDSS (and the SDSS-like synthetic survey) use the Lupton et al. (2004) colour
composite with the Galaxy Zoo: Clump Scout parameters (App. A.1); HSC uses a
per-band asinh stretch (App. A.2). Either composite is then resized to
``RENDER_SIZE`` x ``RENDER_SIZE`` pixels (App. A.1, A.2).

Coordinates follow the frames and conventions of :mod:`clumpcat.geometry`.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import tempfile
import warnings
from collections.abc import Collection, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.visualization import (
    AsinhStretch,
    LuptonAsinhStretch,
    ManualInterval,
    make_lupton_rgb,
    make_rgb,
)
from PIL import Image

from clumpcat.constants import (
    LUPTON_MINIMUM,
    LUPTON_Q,
    LUPTON_SCALES,
    LUPTON_STRETCH,
    RENDER_SIZE,
    RGB_BANDS,
    SDSS_PIXEL_SCALE,
)
from clumpcat.errors import CutoutError, InputError
from clumpcat.geometry import RenderGeometry
from clumpcat.ledger import LedgerEntry, pending, read_status, write_status
from clumpcat.logs import progress
from clumpcat.paths import objid_path
from clumpcat.render.labels import LABEL_COLUMNS, truth_boxes
from clumpcat.render.selection import PNG_HELP, parse_png, png_objids
from clumpcat.survey.cutouts import Cutout, read_cutout
from clumpcat.survey.galaxies import read_galaxies
from clumpcat.tables import ColumnDoc, read_table, write_table

__all__ = [
    "SURVEY_RENDERERS",
    "HSC_ASINH_SOFTENING",
    "HSC_ASINH_MAXIMUM",
    "RESAMPLE",
    "PNG_COMPRESS_LEVEL",
    "RENDER_COLUMNS",
    "lupton_rgb",
    "asinh_rgb",
    "resize_rgb",
    "render_cutout",
    "write_png",
    "render_shard",
    "geometries",
    "configure_parser",
    "run",
]

log = logging.getLogger(__name__)

#: Survey name -> colour composite (App. A.1: Lupton for SDSS; App. A.2: asinh
#: for HSC). The synthetic survey imitates SDSS.
SURVEY_RENDERERS: dict[str, str] = {"sdss": "lupton", "synthetic": "lupton", "hsc": "asinh"}

#: HSC asinh softening in nanomaggies per SDSS-sized pixel: the flux below
#: which the stretch is linear. App. A.2 names an asinh stretch without its
#: parameters, so we take the Lupton softening of App. A.1, stretch / Q. With
#: :data:`HSC_ASINH_MAXIMUM` this makes the per-band asinh curve identical to
#: the Lupton curve of a grey pixel, so HSC images have the brightness of the
#: SDSS images the detector was trained on.
HSC_ASINH_SOFTENING: float = LUPTON_STRETCH / LUPTON_Q
#: HSC asinh white point in nanomaggies per SDSS-sized pixel: where the Lupton
#: curve of App. A.1 (slope 0.1 / asinh(0.1 Q)) reaches 1, about 9.75.
HSC_ASINH_MAXIMUM: float = HSC_ASINH_SOFTENING * math.sinh(math.asinh(0.1 * LUPTON_Q) / 0.1)

#: Pillow resampling filters allowed for the resize to RENDER_SIZE. Lanczos
#: is the default: cutouts are mostly *up*-sampled (6 x petroR90_r is 76-380
#: SDSS pixels), and Lanczos keeps point-like clumps round and sharp where
#: bilinear leaves a visible pixel grid; when down-sampling Pillow widens the
#: filter, so both directions are antialiased. Pillow samples at pixel
#: centres, matching :class:`RenderGeometry`.
RESAMPLE: dict[str, Image.Resampling] = {
    "lanczos": Image.Resampling.LANCZOS,
    "bilinear": Image.Resampling.BILINEAR,
}

#: zlib level of the PNGs. Sky noise makes rendered images nearly
#: incompressible: level 1 writes ~15% larger files than level 6 in a third of
#: the time, and PNG encoding is the slowest step of rendering.
PNG_COMPRESS_LEVEL = 1

#: Columns of ``render.parquet``: (unit, description).
RENDER_COLUMNS: dict[str, ColumnDoc] = {
    "objid": ("", "Galaxy identifier"),
    "png": ("", "Path of the rendered 400x400 RGB PNG; null where none was asked for (--png)"),
    "nx": ("pix", "Cutout width in cutout pixels"),
    "ny": ("pix", "Cutout height in cutout pixels"),
    "scale_x": ("", "Rendered pixels per cutout pixel along x"),
    "scale_y": ("", "Rendered pixels per cutout pixel along y"),
    "fwhm_r_px": ("pix", "r-band PSF FWHM in cutout pixels"),
    "fwhm_r_render_px": ("pix", "r-band PSF FWHM in rendered pixels (geometric-mean scale)"),
}


# --------------------------------------------------------------------------
# Colour composites
# --------------------------------------------------------------------------


def _scaled_channels(
    images: Mapping[str, np.ndarray],
    bands: tuple[str, str, str],
    scales: Mapping[str, float],
    factor: float = 1.0,
) -> list[np.ndarray]:
    """The three channel images, non-finite pixels set to 0, times their scales."""
    missing = [b for b in bands if b not in images]
    if missing:
        raise ValueError(
            f"RGB composite needs bands {', '.join(bands)}; missing {', '.join(missing)} "
            f"(have {', '.join(images) or 'none'})"
        )
    no_scale = [b for b in bands if b not in scales]
    if no_scale:
        raise ValueError(f"no channel scale for band(s) {', '.join(no_scale)}")
    shapes = {np.shape(images[b]) for b in bands}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"bands {', '.join(bands)} must be 2-D images of one shape, got {sorted(shapes)}")
    out = []
    for band in bands:
        img = np.array(images[band], dtype=np.float64)
        img[~np.isfinite(img)] = 0.0
        img *= float(scales[band]) * factor
        out.append(img)
    return out


def lupton_rgb(
    images: Mapping[str, np.ndarray],
    *,
    q: float = LUPTON_Q,
    stretch: float = LUPTON_STRETCH,
    minimum: float = LUPTON_MINIMUM,
    scales: Mapping[str, float] = LUPTON_SCALES,
    bands: tuple[str, str, str] = RGB_BANDS,
) -> np.ndarray:
    """Lupton et al. (2004) colour composite with the Clump Scout parameters.

    Parameters
    ----------
    images : mapping of str to ndarray
        Band letter to 2-D image in nanomaggies; must hold ``bands``.
    q : float
        Asinh softening parameter Q (App. A.1: 7).
    stretch : float
        Linear stretch (App. A.1: 0.2).
    minimum : float
        Flux mapped to black, in scaled nanomaggies (App. A.1: 0).
    scales : mapping of str to float
        Per-band multipliers applied before the stretch (App. A.1: i 0.7,
        r 1.17, g 1.818).
    bands : tuple of 3 str
        Bands for the red, green and blue channels (App. A.1: i, r, g).

    Returns
    -------
    ndarray, shape (ny, nx, 3), uint8
        In the cutout's pixel grid and numpy row order.

    Raises
    ------
    ValueError
        If a band or a scale is missing or the images differ in shape.

    Notes
    -----
    Computed by astropy's ``make_lupton_rgb`` with
    ``interval=ManualInterval(vmin=minimum)`` and
    ``stretch_object=LuptonAsinhStretch(stretch, Q)`` on the scaled images,
    so it equals astropy's function exactly. Non-finite pixels (masked or
    NaN) are set to 0 nanomaggies before scaling, i.e. rendered as empty sky;
    black pixels where the total intensity is zero are astropy's behaviour.
    """
    red, green, blue = _scaled_channels(images, bands, scales)
    with np.errstate(divide="ignore", invalid="ignore"):
        return make_lupton_rgb(
            red,
            green,
            blue,
            interval=ManualInterval(vmin=minimum, vmax=None),
            stretch_object=LuptonAsinhStretch(stretch=stretch, Q=q),
        )


def asinh_rgb(
    images: Mapping[str, np.ndarray],
    *,
    softening: float = HSC_ASINH_SOFTENING,
    maximum: float = HSC_ASINH_MAXIMUM,
    minimum: float = 0.0,
    scales: Mapping[str, float] = LUPTON_SCALES,
    bands: tuple[str, str, str] = RGB_BANDS,
    flux_scale: float = 1.0,
) -> np.ndarray:
    """Per-band asinh colour composite for HSC (App. A.2).

    Each channel is ``X = asinh((x - minimum) / softening) /
    asinh((maximum - minimum) / softening)`` clipped to [0, 1], with ``x`` the
    band image times its channel scale times ``flux_scale``.

    Parameters
    ----------
    images : mapping of str to ndarray
        Band letter to 2-D image in nanomaggies; must hold ``bands``.
    softening : float
        Flux (nanomaggies per SDSS-sized pixel) below which the stretch is
        linear; default :data:`HSC_ASINH_SOFTENING` = stretch / Q of App. A.1.
    maximum : float
        Flux mapped to full brightness; default :data:`HSC_ASINH_MAXIMUM`.
    minimum : float
        Flux mapped to black.
    scales : mapping of str to float
        Per-band multipliers; default the App. A.1 channel scales, so that
        HSC colours balance like the SDSS training images (the g, r, i
        filters of the two surveys are close).
    bands : tuple of 3 str
        Bands for the red, green and blue channels (App. A.2: i, r, g).
    flux_scale : float
        Extra multiplier for every band; :func:`render_cutout` passes the
        ratio of an SDSS pixel's area to the cutout pixel's area, so the
        stretch acts on surface brightness and a 0.168"/px HSC coadd is as
        bright as SDSS.

    Returns
    -------
    ndarray, shape (ny, nx, 3), uint8

    Raises
    ------
    ValueError
        If a band or scale is missing, the images differ in shape, or
        ``softening``/``maximum`` are not positive.

    Notes
    -----
    Computed by astropy's ``make_rgb`` with ``ManualInterval(minimum,
    maximum)`` and ``AsinhStretch(a=softening / (maximum - minimum))``.
    With the defaults, a grey pixel gets exactly the Lupton curve of
    :func:`lupton_rgb`, while (unlike Lupton) each band is stretched on its
    own, as App. A.2 describes. Non-finite pixels are set to 0 first.
    """
    if not (softening > 0 and maximum > minimum):
        raise ValueError(
            f"asinh stretch needs softening > 0 and maximum > minimum, got "
            f"softening={softening}, minimum={minimum}, maximum={maximum}"
        )
    red, green, blue = _scaled_channels(images, bands, scales, factor=flux_scale)
    a = min(softening / (maximum - minimum), 1.0)
    return make_rgb(
        red,
        green,
        blue,
        interval=ManualInterval(vmin=minimum, vmax=maximum),
        stretch=AsinhStretch(a=a),
    )


def resize_rgb(rgb: np.ndarray, size: int = RENDER_SIZE, resample: str = "lanczos") -> np.ndarray:
    """Resize an RGB uint8 image to ``size`` x ``size`` with Pillow.

    Parameters
    ----------
    rgb : ndarray, shape (ny, nx, 3), uint8
    size : int
        Output side in pixels (App. A.1: 400).
    resample : {'lanczos', 'bilinear'}
        Pillow filter; see :data:`RESAMPLE` for why Lanczos is the default.

    Returns
    -------
    ndarray, shape (size, size, 3), uint8
    """
    if resample not in RESAMPLE:
        raise ValueError(f"'resample' must be one of {sorted(RESAMPLE)}, got {resample!r}")
    image = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), mode="RGB")
    if image.size != (size, size):
        image = image.resize((size, size), resample=RESAMPLE[resample])
    return np.asarray(image)


def render_cutout(
    cutout: Cutout, survey: str, *, size: int = RENDER_SIZE, resample: str = "lanczos"
) -> tuple[np.ndarray, RenderGeometry]:
    """Render a cutout as the detector's RGB image.

    Parameters
    ----------
    cutout : Cutout
        Must hold the g, r and i bands.
    survey : {'sdss', 'synthetic', 'hsc'}
        Lupton composite (App. A.1) for 'sdss' and 'synthetic'; asinh
        composite (App. A.2) for 'hsc', on surface brightness per SDSS pixel.
    size : int
        Side of the rendered image (App. A.1, A.2: 400).
    resample : {'lanczos', 'bilinear'}
        Resize filter.

    Returns
    -------
    rgb : ndarray, shape (size, size, 3), uint8
    geometry : RenderGeometry
        Cutout <-> rendered frame mapping.

    Raises
    ------
    ValueError
        If ``survey`` is unknown (naming the allowed values) or a band is missing.
    """
    method = SURVEY_RENDERERS.get(survey)
    if method is None:
        allowed = ", ".join(repr(s) for s in SURVEY_RENDERERS)
        raise ValueError(f"'survey' must be one of {allowed}, got {survey!r}")
    if method == "lupton":
        rgb = lupton_rgb(cutout.images)
    else:
        area = (SDSS_PIXEL_SCALE / cutout.pixel_scale) ** 2
        rgb = asinh_rgb(cutout.images, flux_scale=area)
    geometry = RenderGeometry.for_shape(rgb.shape[:2], size=size)
    return resize_rgb(rgb, size=size, resample=resample), geometry


def write_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Write an RGB uint8 array as a PNG, atomically (temporary file + rename).

    The PNG carries no metadata or time stamp, so the same array always
    gives the same bytes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), mode="RGB").save(
                handle, format="PNG", compress_level=PNG_COMPRESS_LEVEL
            )
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# --------------------------------------------------------------------------
# Shard driver
# --------------------------------------------------------------------------


def render_shard(
    objids: list[str],
    cutout_dir: str | Path,
    rgb_dir: str | Path | None,
    survey: str,
    *,
    resample: str = "lanczos",
    pngs: Collection[str] | None = None,
) -> tuple[pd.DataFrame, list[LedgerEntry]]:
    """Render a shard's galaxies; a bad cutout never stops the others.

    Parameters
    ----------
    objids : list of str
        Galaxies to render; each reads ``cutout_dir/{objid}.fits`` once.
    cutout_dir, rgb_dir : str or Path
        Cutout folder and PNG folder (``rgb_dir/{objid}.png``); ``rgb_dir``
        may be None when ``pngs`` is empty.
    survey : {'sdss', 'synthetic', 'hsc'}
    resample : {'lanczos', 'bilinear'}
    pngs : collection of str, optional
        The galaxies that get a PNG; None: every galaxy. The others are
        read and validated as the contract asks (so a broken cutout still
        fails here, with its reason) but not composited: their row carries
        the geometry and a null ``png``.

    Returns
    -------
    table : DataFrame
        One row per galaxy whose cutout is sound, columns of
        :data:`RENDER_COLUMNS`: objid, png (null without a PNG), nx, ny,
        scale_x, scale_y, fwhm_r_px, fwhm_r_render_px.
    failures : list of LedgerEntry
        One ``failed`` entry (stage ``render``) per galaxy whose cutout broke
        the contract, the reason naming the file.

    Raises
    ------
    InputError
        If ``survey`` is unknown, or PNGs are asked for without ``rgb_dir``.
    """
    if survey not in SURVEY_RENDERERS:
        allowed = ", ".join(repr(s) for s in SURVEY_RENDERERS)
        raise InputError(f"'survey' must be one of {allowed}, got {survey!r}")
    wanted = None if pngs is None else {str(o) for o in pngs}
    if rgb_dir is None and (wanted is None or wanted & {str(o) for o in objids}):
        raise InputError("PNGs are asked for (--png) but no --rgb-dir is given")
    needed = tuple(sorted(set(RGB_BANDS) | {"r"}))
    rows, failures = [], []
    for objid in progress(objids, desc="render", total=len(objids)):
        path = objid_path(cutout_dir, objid, ".fits")
        try:
            with warnings.catch_warnings(record=True) as caught:
                # FITS verification warnings of a damaged file go to the log,
                # named by file, instead of to stderr without context.
                warnings.simplefilter("always")
                cutout = read_cutout(path, bands=needed)
            for w in caught:
                log.warning("render: %s: %s: %s", path, w.category.__name__, str(w.message).splitlines()[0])
            with_png = wanted is None or str(objid) in wanted
            if with_png:
                rgb, geometry = render_cutout(cutout, survey, resample=resample)
            else:
                # read_cutout has checked what compositing needs (bands, one
                # 2-D shape); the composite itself is skipped.
                geometry = RenderGeometry.for_shape(cutout.shape)
            fwhm = cutout.fwhm_pixels("r")
        except CutoutError as exc:
            log.warning("render: %s", exc)
            failures.append(LedgerEntry(str(objid), "failed", "render", str(exc)))
            continue
        except (ValueError, ArithmeticError) as exc:
            reason = f"{path}: cannot render ({exc})"
            log.warning("render: %s", reason)
            failures.append(LedgerEntry(str(objid), "failed", "render", reason))
            continue
        png = str(write_png(objid_path(rgb_dir, objid, ".png"), rgb)) if with_png else None
        rows.append(
            {
                "objid": str(objid),
                "png": png,
                "nx": geometry.nx,
                "ny": geometry.ny,
                "scale_x": geometry.scale_x,
                "scale_y": geometry.scale_y,
                "fwhm_r_px": fwhm,
                "fwhm_r_render_px": fwhm * geometry.scale,
            }
        )
    table = pd.DataFrame(rows, columns=list(RENDER_COLUMNS))
    table = table.astype({"objid": str, "png": "string", "nx": "int64", "ny": "int64"})
    table = table.astype({c: "float64" for c in ("scale_x", "scale_y", "fwhm_r_px", "fwhm_r_render_px")})
    n_png = int(table["png"].notna().sum())
    log.info("render: %d rendered (%d PNGs), %d failed", len(rows), n_png, len(failures))
    return table, failures


def geometries(table: pd.DataFrame) -> dict[str, RenderGeometry]:
    """``{objid: RenderGeometry}`` from a ``render.parquet`` table."""
    return {
        str(r.objid): RenderGeometry(int(r.nx), int(r.ny), float(r.scale_x), float(r.scale_y))
        for r in table.itertuples(index=False)
    }


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add ``clumpcat render`` options to ``parser``."""
    parser.add_argument("--galaxies", required=True, help="shard galaxy table (Parquet or CSV)")
    parser.add_argument("--cutouts", required=True, help="folder of {objid}.fits cutouts")
    parser.add_argument("--rgb-dir", help="folder for {objid}.png (needed unless --png none)")
    parser.add_argument("--png", type=parse_png, default=None, metavar="{all,none,first:N}", help=PNG_HELP)
    parser.add_argument(
        "--survey",
        default="sdss",
        choices=sorted(SURVEY_RENDERERS),
        help="composite: Lupton (sdss) or asinh (hsc)",
    )
    parser.add_argument(
        "--status-in", help="previous stage's status table (only its 'ok' galaxies are rendered)"
    )
    parser.add_argument("--status-out", required=True, help="this stage's status table")
    parser.add_argument("--out", required=True, help="render table (render.parquet)")
    parser.add_argument("--truth", help="truth table of injected sources; writes label boxes")
    parser.add_argument("--labels-out", help="label boxes in the rendered frame (empty without --truth)")
    parser.add_argument(
        "--labels-detectable-only", action="store_true", help="only truth sources flagged 'detectable'"
    )
    parser.add_argument(
        "--resample", default="lanczos", choices=sorted(RESAMPLE), help="resize filter (default lanczos)"
    )


def _empty_labels() -> pd.DataFrame:

    dtypes = {"label_id": "int64", "objid": "str", "label": "str"}
    return pd.DataFrame({c: pd.Series(dtype=dtypes.get(c, "float64")) for c in LABEL_COLUMNS})


def run(args: argparse.Namespace) -> int:
    """Run ``clumpcat render`` on one shard; returns the exit status."""

    if args.truth and not args.labels_out:
        raise InputError("--truth needs --labels-out (where the label boxes go)")
    galaxies = read_galaxies(args.galaxies)
    shard = galaxies["objid"].tolist()
    upstream = read_status(args.status_in)
    todo = pending(shard, upstream)
    truth = read_table(args.truth) if args.truth else None
    pngs = png_objids([str(o) for o in shard], args.png)
    table, failures = render_shard(
        todo, args.cutouts, args.rgb_dir, args.survey, resample=args.resample, pngs=pngs
    )
    write_table(table, args.out, RENDER_COLUMNS, {"survey": args.survey, "render_size": str(RENDER_SIZE)})
    write_status(args.status_out, shard, failures, upstream=upstream)
    if truth is not None:
        fwhm = dict(zip(table["objid"], table["fwhm_r_px"], strict=True))
        boxes = truth_boxes(
            truth, geometries(table), detectable_only=args.labels_detectable_only, fwhm_r_px=fwhm
        )
        write_table(boxes, args.labels_out, LABEL_COLUMNS)
        log.info("render: %d label boxes for %d galaxies", len(boxes), boxes["objid"].nunique())
    elif args.labels_out:
        # No truth for this sample (the user's own galaxies): an empty label
        # table keeps the workflow's outputs the same for every sample.
        write_table(_empty_labels(), args.labels_out, LABEL_COLUMNS)
    return 0
