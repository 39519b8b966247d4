"""The galaxy ledger: every input galaxy with its status (DESIGN.md).

Each stage writes ledger rows for the galaxies it could not process; the
catalogue stage merges them into ``ledger.parquet`` with one row per input
galaxy and status ``ok``, ``no_clumps`` or ``failed`` (with stage and reason).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd

from clumpcat.errors import one_line
from clumpcat.tables import ColumnDoc

__all__ = [
    "LedgerEntry",
    "LEDGER_COLUMNS",
    "STATUSES",
    "ledger_frame",
    "write_status",
    "read_status",
    "ok_objids",
    "pending",
]

STATUSES = ("ok", "no_clumps", "failed")

LEDGER_COLUMNS: dict[str, ColumnDoc] = {
    "objid": ("", "Galaxy identifier"),
    "status": ("", "ok, no_clumps or failed"),
    "stage": ("", "Pipeline stage that failed (empty unless failed)"),
    "reason": ("", "Why the galaxy failed (empty unless failed)"),
}


@dataclass(frozen=True)
class LedgerEntry:
    """One galaxy's outcome at one stage."""

    objid: str
    status: str
    stage: str = ""
    reason: str = ""

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"ledger status must be one of {STATUSES}, got {self.status!r}")
        # A reason quoting a library error may span lines; a ledger cell must not.
        object.__setattr__(self, "reason", one_line(self.reason, 500) if self.reason else "")


def ledger_frame(entries: list[LedgerEntry]) -> pd.DataFrame:
    """DataFrame of ledger entries with the ledger's columns, even when empty."""
    return pd.DataFrame([asdict(e) for e in entries], columns=list(LEDGER_COLUMNS)).astype(str)


def write_status(path, objids, entries: list[LedgerEntry], upstream: pd.DataFrame | None = None):
    """Write a stage's per-shard status table: one row per galaxy of the shard.

    Parameters
    ----------
    path : str or Path
        ``shards/{shard}/status-{stage}.parquet``.
    objids : iterable of str
        Every galaxy of the shard, in order.
    entries : list of LedgerEntry
        This stage's failures (galaxies not listed are ``ok``).
    upstream : DataFrame, optional
        The previous stage's status table; its failures are carried over
        unchanged, so the first failing stage and its reason survive.

    Returns
    -------
    pandas.DataFrame
        The table written.
    """
    from clumpcat.tables import write_table

    failed = {e.objid: e for e in entries}
    if upstream is not None:
        for row in upstream.itertuples(index=False):
            if row.status == "failed":
                failed[row.objid] = LedgerEntry(row.objid, "failed", row.stage, row.reason)
    rows = [failed.get(str(o), LedgerEntry(str(o), "ok")) for o in objids]
    frame = ledger_frame(rows)
    write_table(frame, path, LEDGER_COLUMNS)
    return frame


def ok_objids(status: pd.DataFrame) -> list[str]:
    """Galaxies of a status table that no stage has failed so far."""
    return status.loc[status["status"] == "ok", "objid"].astype(str).tolist()


def read_status(path) -> pd.DataFrame | None:
    """The previous stage's status table with string objids, or None without a path."""
    if not path:
        return None
    from clumpcat.tables import read_table

    status = read_table(path)
    return status.assign(objid=status["objid"].astype(str))


def pending(objids, status: pd.DataFrame | None) -> list[str]:
    """The galaxies of ``objids`` (in order) that no earlier stage has failed."""
    objids = [str(o) for o in objids]
    if status is None:
        return objids
    ok = set(ok_objids(status))
    return [o for o in objids if o in ok]
