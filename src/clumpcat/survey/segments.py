"""``clumpcat segment``: each galaxy's host segment, computed once and stored per shard.

The host galaxy's segment (r band smoothed with a Gaussian of the r-band PSF
FWHM, photutils segmentation, the segment at the galaxy's RA/Dec; Section
4.3.2, :mod:`clumpcat.survey.hostsegment`) is a property of the cutout, like
its PSF. This stage computes it once per galaxy with the configured
threshold (``postprocess.host_nsigma``) and writes one compressed file per
shard, ``segments.npz``; injection, post-processing, photometry and the
baseline read it (their ``--segments`` option), so that a clump kept by the
host mask is measured on the same host.

The file holds, for every galaxy, the boolean host mask (bit-packed, all
masks of the shard in one array), the galaxy's pixel centre, the distance
from it to the segment and the r-band FWHM; the galaxies whose segment could
not be made, with the reason; and the settings used. Arrays are in the
*cutout* frame (0-based FITS pixels, ``[y, x]``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.io.fits.verify import VerifyWarning

from clumpcat.constants import HOST_MASK_NPIXELS
from clumpcat.errors import CutoutError, InputError
from clumpcat.ledger import pending, read_status
from clumpcat.parallel import add_workers_option, ordered_map
from clumpcat.paths import objid_path
from clumpcat.settings import PostprocessSettings
from clumpcat.survey.cutouts import Cutout, read_cutout
from clumpcat.survey.galaxies import read_galaxies

__all__ = [
    "SEGMENT_BAND",
    "HOST_MAX_OFFSET_FWHM",
    "DEFAULT_NSIGMA",
    "GalaxySegment",
    "SegmentSet",
    "read_cutout_checked",
    "galaxy_centre",
    "segment_galaxy",
    "preload_segmentation",
    "segment_shard",
    "write_segments",
    "read_segments",
    "add_segments_option",
    "configure_parser",
    "run",
]

log = logging.getLogger(__name__)

#: The band of the host segment (Section 4.3.2).
SEGMENT_BAND = "r"
#: If the galaxy's centre pixel is not segmented, the nearest segment within
#: this many r-band FWHM is taken as the host (guards against picking a
#: background source on a blank image).
HOST_MAX_OFFSET_FWHM = 5.0
#: The configured default threshold (``postprocess.host_nsigma``).
DEFAULT_NSIGMA: float = PostprocessSettings().host_nsigma
#: Version of the ``segments.npz`` layout.
_FORMAT = 1


@dataclass(frozen=True)
class GalaxySegment:
    """One galaxy's host segment.

    Attributes
    ----------
    objid : str
    mask : ndarray of bool
        True on the host galaxy, cutout frame ``[y, x]``; all False when no
        segment was found.
    centre : tuple of float
        ``(x, y)`` where the host was looked for: the galaxy's RA/Dec, or the
        cutout centre when those fall off the cutout.
    centre_offset_px : float
        Distance from ``centre`` to the segment (0 on it; NaN if none).
    fwhm_px : float
        r-band PSF FWHM in cutout pixels (the smoothing kernel).
    """

    objid: str
    mask: np.ndarray = field(repr=False)
    centre: tuple[float, float]
    centre_offset_px: float
    fwhm_px: float

    @property
    def found(self) -> bool:
        """Whether a host segment was found."""
        return bool(self.mask.any())


class SegmentSet:
    """The host segments of one shard, with the failures and the settings.

    Parameters
    ----------
    segments : dict of str to GalaxySegment
    failures : dict of str to str
        objid -> why its segment could not be made.
    settings : dict
        ``nsigma``, ``npixels``, ``band``, ``max_offset_fwhm``.
    """

    def __init__(self, segments: dict[str, GalaxySegment], failures: dict[str, str], settings: dict):
        self.segments = dict(segments)
        self.failures = dict(failures)
        self.settings = dict(settings)

    def __len__(self) -> int:
        return len(self.segments)

    def __contains__(self, objid: object) -> bool:
        return str(objid) in self.segments

    def get(self, objid: object) -> GalaxySegment:
        """The segment of ``objid``.

        Raises
        ------
        CutoutError
            When its segment failed (the stored reason) or it is not in the
            file: the galaxy's ledger entry says so.
        """
        objid = str(objid)
        if objid in self.segments:
            return self.segments[objid]
        if objid in self.failures:
            raise CutoutError(f"{objid}.fits", f"no host segment: {self.failures[objid]}")
        raise CutoutError(f"{objid}.fits", "no host segment: galaxy not in the segments file")

    def mask_for(self, cutout: Cutout) -> np.ndarray:
        """The host mask of a cutout, checked against its shape."""
        segment = self.get(cutout.objid)
        if segment.mask.shape != tuple(cutout.shape):
            raise CutoutError(
                f"{cutout.objid}.fits",
                f"stored host segment is {segment.mask.shape[1]}x{segment.mask.shape[0]} px, "
                f"the cutout {cutout.shape[1]}x{cutout.shape[0]}: segments of other cutouts?",
            )
        return segment.mask


def read_cutout_checked(path: str | Path, bands: tuple[str, ...] | None = None) -> Cutout:
    """Read a cutout, treating astropy's verification warnings as corruption.

    astropy only warns about a truncated FITS file and returns the HDUs it
    could read; here that becomes a CutoutError, so the ledger says why.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", VerifyWarning)
        try:
            return read_cutout(path, bands=bands)
        except VerifyWarning as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CutoutError(path, f"unreadable or truncated FITS ({first})") from exc


def galaxy_centre(cutout: Cutout, ra: float, dec: float) -> tuple[float, float] | None:
    """Pixel position (cutout frame) of the galaxy, or None if unknown or off the cutout."""
    if not (np.isfinite(ra) and np.isfinite(dec)):
        return None
    try:
        px, py = cutout.wcs.world_to_pixel_values(ra, dec)
    except Exception:  # a WCS that cannot invert: use the image centre
        return None
    ny, nx = cutout.shape
    if not (np.isfinite(px) and np.isfinite(py) and -0.5 <= px < nx - 0.5 and -0.5 <= py < ny - 0.5):
        return None
    return float(px), float(py)


def preload_segmentation() -> None:
    """Import photutils' segmentation now, for :func:`segment_galaxy` in worker processes.

    Called before a pool of workers forks, so that they inherit the import
    (about a second) instead of each paying for it again.
    """
    import clumpcat.survey.hostsegment  # noqa: F401


def segment_galaxy(
    cutout: Cutout,
    ra: float = float("nan"),
    dec: float = float("nan"),
    *,
    nsigma: float = DEFAULT_NSIGMA,
    npixels: int = HOST_MASK_NPIXELS,
) -> GalaxySegment:
    """The host segment of one cutout (Section 4.3.2), looked for at the galaxy's RA/Dec.

    Parameters
    ----------
    cutout : Cutout
        Must hold the r band.
    ra, dec : float
        Galaxy centre (deg, ICRS); NaN or off the cutout: the cutout centre.
    nsigma : float
        Threshold in background RMS of the smoothed r image (``postprocess.host_nsigma``).
    npixels : int
        Smallest segment (released code: 10 pixels).

    Returns
    -------
    GalaxySegment

    Raises
    ------
    CutoutError
        If the cutout has no r band.
    """
    # Imported here: photutils' segmentation (and scipy.signal with it) costs a
    # second of start-up, which the stages that only read stored segments skip.
    from clumpcat.survey.hostsegment import segment_host

    if SEGMENT_BAND not in cutout.images:
        raise CutoutError(f"{cutout.objid}.fits", f"missing band(s) {SEGMENT_BAND.upper()}")
    fwhm = float(cutout.fwhm_pixels(SEGMENT_BAND))
    ny, nx = cutout.shape
    centre = galaxy_centre(cutout, ra, dec) or ((nx - 1) / 2.0, (ny - 1) / 2.0)
    host = segment_host(
        cutout.images[SEGMENT_BAND],
        fwhm,
        nsigma=nsigma,
        npixels=npixels,
        centre=centre,
        max_offset_px=HOST_MAX_OFFSET_FWHM * fwhm,
    )
    if not host.found:
        log.warning("%s: no host-galaxy segment found in the %s band", cutout.objid, SEGMENT_BAND)
    return GalaxySegment(str(cutout.objid), host.mask, centre, host.centre_offset_px, fwhm)


def _settings(nsigma: float, npixels: int) -> dict:
    return {
        "nsigma": float(nsigma),
        "npixels": int(npixels),
        "band": SEGMENT_BAND,
        "max_offset_fwhm": HOST_MAX_OFFSET_FWHM,
        "centre": "galaxy ra, dec",
    }


def segment_shard(
    galaxies: pd.DataFrame,
    cutout_dir: str | Path,
    *,
    status: pd.DataFrame | None = None,
    nsigma: float = DEFAULT_NSIGMA,
    npixels: int = HOST_MASK_NPIXELS,
    workers: int = 1,
) -> SegmentSet:
    """Segment every galaxy of a shard; a bad cutout is recorded, never fatal.

    Parameters
    ----------
    galaxies : pandas.DataFrame
        The shard's galaxy table (``objid``, ``ra``, ``dec``).
    cutout_dir : str or Path
        Folder of ``{objid}.fits``.
    status : pandas.DataFrame, optional
        A previous stage's status; only its ``ok`` galaxies are segmented.
    nsigma, npixels
        As in :func:`segment_galaxy`.
    workers : int
        Processes segmenting the galaxies (:func:`clumpcat.parallel.ordered_map`);
        the result does not depend on it.

    Returns
    -------
    SegmentSet
        One segment per galaxy that could be read; the others in
        ``failures`` with the reason (a galaxy failed upstream is in neither).
    """
    if not (np.isfinite(nsigma) and nsigma >= 0):
        raise InputError(f"host nsigma must be >= 0, got {nsigma!r}")
    preload_segmentation()

    objids = galaxies["objid"].astype(str).tolist()
    todo = pending(objids, status)
    frame = galaxies.assign(objid=galaxies["objid"].astype(str)).set_index("objid")
    coords = {o: (float(frame.at[o, "ra"]), float(frame.at[o, "dec"])) for o in todo}
    job = _SegmentJob(str(cutout_dir), coords, nsigma, npixels)
    segments, failures = {}, {}
    for objid, segment, reason in ordered_map(_segment_one, job, todo, workers=workers, desc="segment"):
        if segment is not None:
            segments[objid] = segment
        else:
            failures[objid] = reason
    return SegmentSet(segments, failures, _settings(nsigma, npixels))


@dataclass(frozen=True)
class _SegmentJob:
    """What every galaxy of a shard's segmentation shares."""

    cutout_dir: str
    coords: dict[str, tuple[float, float]]
    nsigma: float
    npixels: int


def _segment_one(job: _SegmentJob, objid: str) -> tuple[str, GalaxySegment | None, str]:
    """One galaxy's segment, or the reason it has none (never raises)."""
    try:
        cutout = read_cutout_checked(objid_path(job.cutout_dir, objid, ".fits"), bands=(SEGMENT_BAND,))
        ra, dec = job.coords[objid]
        return objid, segment_galaxy(cutout, ra, dec, nsigma=job.nsigma, npixels=job.npixels), ""
    except CutoutError as exc:
        log.warning("%s: %s", objid, exc)
        return objid, None, exc.reason
    except Exception as exc:  # a bad galaxy must never stop the shard
        log.warning("%s: segmentation failed", objid, exc_info=True)
        text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        return objid, None, f"{type(exc).__name__}: {text}"


def write_segments(path: str | Path, segments: SegmentSet) -> Path:
    """Write a shard's segments as one compressed ``.npz`` (atomically).

    Every mask is flattened and bit-packed into one array (``bits``), at
    ``offset`` bits with ``shape``; a 300x300 mask takes ~11 kB before
    compression and far less after.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    items = list(segments.segments.values())
    sizes = np.array([s.mask.size for s in items], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64) if items else sizes
    flat = np.concatenate([s.mask.ravel() for s in items]) if items else np.zeros(0, bool)
    failed = sorted(segments.failures)
    arrays = {
        "format": np.array(_FORMAT),
        "settings": np.array(json.dumps(segments.settings, sort_keys=True)),
        "objid": np.array([s.objid for s in items], dtype=str),
        "shape": np.array([s.mask.shape for s in items], dtype=np.int64).reshape(-1, 2),
        "offset": offsets,
        "bits": np.packbits(flat),
        "centre": np.array([s.centre for s in items], dtype=np.float64).reshape(-1, 2),
        "centre_offset_px": np.array([s.centre_offset_px for s in items], dtype=np.float64),
        "fwhm_px": np.array([s.fwhm_px for s in items], dtype=np.float64),
        "failed_objid": np.array(failed, dtype=str),
        "failed_reason": np.array([segments.failures[o] for o in failed], dtype=str),
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    tmp.replace(path)
    return path


def read_segments(path: str | Path) -> SegmentSet:
    """Read a shard's ``segments.npz``.

    Raises
    ------
    InputError
        If the file is missing or not a segments file of this version.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"segments file {path} does not exist (run `clumpcat segment`)")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable segments file ({exc})") from exc
    if int(arrays.get("format", -1)) != _FORMAT:
        raise InputError(f"{path}: segments file format {arrays.get('format')}, expected {_FORMAT}")
    flat = np.unpackbits(arrays["bits"]).astype(bool)
    segments = {}
    for k, objid in enumerate(arrays["objid"].tolist()):
        ny, nx = (int(v) for v in arrays["shape"][k])
        start = int(arrays["offset"][k])
        segments[objid] = GalaxySegment(
            objid,
            flat[start : start + ny * nx].reshape(ny, nx),
            (float(arrays["centre"][k, 0]), float(arrays["centre"][k, 1])),
            float(arrays["centre_offset_px"][k]),
            float(arrays["fwhm_px"][k]),
        )
    failures = dict(zip(arrays["failed_objid"].tolist(), arrays["failed_reason"].tolist(), strict=True))
    return SegmentSet(segments, failures, json.loads(str(arrays["settings"])))


# --------------------------------------------------------------------------- CLI


def add_segments_option(parser: argparse.ArgumentParser) -> None:
    """The ``--segments`` option of the stages that read the stored segments."""
    parser.add_argument(
        "--segments",
        help="the shard's segments.npz from `clumpcat segment` (default: segment each cutout here, "
        f"at the galaxy's RA/Dec with host nsigma {DEFAULT_NSIGMA})",
    )


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``clumpcat segment`` options to ``parser``."""
    parser.add_argument("--galaxies", required=True, help="shard galaxy table (Parquet or CSV)")
    parser.add_argument("--cutouts", required=True, help="folder of {objid}.fits cutouts")
    parser.add_argument("--status-in", help="a previous stage's status table; only its ok galaxies run")
    parser.add_argument("--out", required=True, help="segments.npz to write")
    parser.add_argument(
        "--host-nsigma",
        type=float,
        default=DEFAULT_NSIGMA,
        help="threshold in background RMS of the smoothed r image (config postprocess.host_nsigma; "
        "default %(default)s, Section 4.3.2 used 0.5)",
    )
    add_workers_option(parser)


def run(args: argparse.Namespace) -> int:
    """Run ``clumpcat segment`` on one shard."""
    galaxies = read_galaxies(args.galaxies)
    if not Path(args.cutouts).is_dir():
        raise InputError(f"--cutouts {args.cutouts}: no such folder")
    segments = segment_shard(
        galaxies,
        args.cutouts,
        status=read_status(args.status_in),
        nsigma=args.host_nsigma,
        workers=args.workers,
    )
    write_segments(args.out, segments)
    n_found = sum(s.found for s in segments.segments.values())
    log.info(
        "segment: %d galaxy(ies) segmented (%d with a host), %d failed; wrote %s",
        len(segments),
        n_found,
        len(segments.failures),
        args.out,
    )
    return 0
