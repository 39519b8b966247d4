"""Logging set-up shared by every subcommand.

Messages go through :mod:`logging`; ``--log FILE`` adds a file handler so a
Snakemake rule's ``log:`` file receives the full record. Progress bars come
from tqdm on stderr and are disabled when stderr is not a terminal unless
``CLUMPCAT_PROGRESS=1``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from tqdm.auto import tqdm

__all__ = ["setup_logging", "progress"]

T = TypeVar("T")

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(log_file: str | Path | None = None, verbose: bool = False) -> None:
    """Send clumpcat's log records to stderr and, optionally, to a file."""
    level = logging.DEBUG if verbose else logging.INFO
    root = logging.getLogger("clumpcat")
    root.setLevel(level)
    root.handlers.clear()
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(logging.Formatter(_FORMAT))
    root.addHandler(stream)
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file, mode="a")
        handler.setFormatter(logging.Formatter(_FORMAT))
        root.addHandler(handler)


def progress(items: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    """Wrap an iterable in a tqdm progress bar (quiet when not interactive)."""
    forced = os.environ.get("CLUMPCAT_PROGRESS")
    disable = (not sys.stderr.isatty()) if forced is None else forced == "0"
    return iter(tqdm(items, desc=desc, total=total, disable=disable, mininterval=2.0))
