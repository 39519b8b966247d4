"""What the SDSS and HSC fetchers share: outcomes, galaxy sizes, reruns.

Every galaxy of a shard ends in exactly one of three places:

- ``ok`` — its cutout exists and passes :func:`clumpcat.survey.cutouts.read_cutout`
  (fetched now or in an earlier run);
- ``failed`` — a permanent reason (no coverage, on a frame edge, no PSF, a
  corrupt archive file, a 4xx answer), written to the status table;
- ``undone`` — a transient network failure (refused connection, timeouts, 429
  or 5xx after every retry), grouped by host; a later run may succeed.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from clumpcat.constants import CUTOUT_WIDTH_PETRO_R90
from clumpcat.errors import CutoutError
from clumpcat.ledger import LedgerEntry
from clumpcat.logs import progress
from clumpcat.paths import objid_path
from clumpcat.survey.cutouts import read_cutout
from clumpcat.survey.fetch.http import RemoteError, TransferError

__all__ = [
    "STAGE",
    "FetchResult",
    "GalaxyFailure",
    "cutout_width_arcsec",
    "existing_cutouts",
    "run_tasks",
    "INFO_COLUMNS",
    "truncation_checked",
]

log = logging.getLogger(__name__)

_WARNINGS_LOCK = threading.Lock()

#: Stage name written to the status table.
STAGE = "fetch"

#: Units and descriptions of the per-galaxy fetch information table.
INFO_COLUMNS = {
    "objid": ("", "Galaxy identifier"),
    "survey": ("", "sdss or hsc"),
    "source": ("", "Frames (SDSS run-camcol-field) or HSC rerun the cutout was cut from"),
    "side_px": ("pix", "Cutout side in pixels"),
    "outside_fraction": ("", "Fraction of cutout pixels outside the survey image (NaN-padded)"),
    "edge": ("", "True when the cutout reaches past the image edge and is NaN-padded"),
    "reused": ("", "True when a valid cutout from an earlier run was kept"),
    "masked_fraction": (
        "",
        "HSC: largest share of a band's pixels in the bad-pixel mask planes (NaN: no mask)",
    ),
}


class GalaxyFailure(Exception):
    """A galaxy cannot be fetched, for a reason that a rerun will not change."""


@dataclass
class FetchResult:
    """Outcome of fetching one shard.

    Attributes
    ----------
    objids : list of str
        Every galaxy of the shard, in order.
    failures : list of LedgerEntry
        Galaxies that failed for good, with the reason.
    undone : dict of str to list of str
        Host -> galaxies left undone by transient network failures.
    undone_reasons : dict of str to str
        Host -> the last network error seen for it.
    info : list of dict
        One record per galaxy with a cutout (see ``INFO_COLUMNS``).
    """

    objids: list[str]
    failures: list[LedgerEntry] = field(default_factory=list)
    undone: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    undone_reasons: dict[str, str] = field(default_factory=dict)
    info: list[dict] = field(default_factory=list)

    def fail(self, objid: str, reason: str) -> None:
        """Record a permanent failure."""
        self.failures.append(LedgerEntry(str(objid), "failed", STAGE, reason))

    def record_error(self, objids: list[str], exc: Exception) -> None:
        """Record galaxies lost to ``exc``: undone if transient, failed otherwise."""
        if isinstance(exc, RemoteError) and exc.transient:
            self.undone[exc.host].extend(str(o) for o in objids)
            self.undone_reasons[exc.host] = exc.reason
            return
        reason = str(exc)
        for objid in objids:
            self.fail(objid, reason)

    @property
    def n_undone(self) -> int:
        """Number of galaxies left undone by the network."""
        return sum(len(v) for v in self.undone.values())

    def undone_message(self, limit: int = 20) -> str:
        """One message naming each unreachable host and the galaxies left undone."""
        parts = []
        order = {o: i for i, o in enumerate(self.objids)}
        for host, objids in self.undone.items():
            objids = sorted(objids, key=lambda o: order.get(o, len(order)))
            shown = ", ".join(objids[:limit]) + (
                f" and {len(objids) - limit} more" if len(objids) > limit else ""
            )
            parts.append(
                f"{host} could not be reached ({self.undone_reasons.get(host, 'network error')}); "
                f"{len(objids)} galaxies left undone: {shown}"
            )
        return "; ".join(parts)

    def ledger_entries(self, record_undone: bool) -> list[LedgerEntry]:
        """Failures, plus the undone galaxies as failures when ``record_undone``."""
        entries = list(self.failures)
        if record_undone:
            for host, objids in self.undone.items():
                reason = f"{host}: network error, {self.undone_reasons.get(host, '')} (rerun to retry)"
                entries.extend(LedgerEntry(o, "failed", STAGE, reason) for o in objids)
        return entries

    def info_frame(self) -> pd.DataFrame:
        """The info records as a DataFrame with ``INFO_COLUMNS``."""
        return pd.DataFrame(self.info, columns=list(INFO_COLUMNS))


def cutout_width_arcsec(galaxies: pd.DataFrame, default_arcsec: float | None = None) -> np.ndarray:
    """Cutout width per galaxy: ``CUTOUT_WIDTH_PETRO_R90`` x ``petro_r90_r`` (App. A.1).

    Returns NaN where ``petro_r90_r`` is missing or not positive and no
    default is given.
    """
    if "petro_r90_r" in galaxies.columns:
        r90 = pd.to_numeric(galaxies["petro_r90_r"], errors="coerce").to_numpy(dtype=float)
    else:
        r90 = np.full(len(galaxies), np.nan)
    width = CUTOUT_WIDTH_PETRO_R90 * r90
    width[~(width > 0)] = np.nan
    if default_arcsec is not None:
        width = np.where(np.isfinite(width), width, default_arcsec)
    return width


def existing_cutouts(folder, objids, bands: tuple[str, ...]) -> set[str]:
    """Galaxies whose cutout already exists and passes the contract check."""
    done = set()
    for objid in objids:
        path = objid_path(folder, objid, ".fits")
        if not path.exists():
            continue
        try:
            read_cutout(path, bands)
        except CutoutError as exc:
            log.warning("%s: existing cutout is invalid (%s); fetching it again", path, exc.reason)
            continue
        done.add(str(objid))
    return done


def run_tasks(tasks, worker, max_parallel: int, desc: str):
    """Run ``worker(task)`` over tasks on a bounded thread pool, with a progress bar.

    Yields ``(task, result, exception)`` as tasks finish.
    """
    with ThreadPoolExecutor(max_workers=max(1, max_parallel)) as pool:
        futures = {pool.submit(worker, task): task for task in tasks}
        for future in progress(as_completed(futures), desc=desc, total=len(futures)):
            task = futures[future]
            exc = future.exception()
            yield task, (None if exc else future.result()), exc


@contextmanager
def truncation_checked(name: str):
    """Turn astropy's "file may have been truncated" warning into :class:`TransferError`.

    astropy reads a short FITS file with a warning and padded data; a
    download must instead be fetched again. Readers in different threads
    take turns, since :func:`warnings.catch_warnings` changes process-wide state.
    """
    # catch_warnings swaps process-wide state: one reader at a time.
    with _WARNINGS_LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for warning in caught:
        if "truncat" in str(warning.message).lower():
            raise TransferError(f"{name}: truncated FITS ({warning.message})")
    for warning in caught:
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
