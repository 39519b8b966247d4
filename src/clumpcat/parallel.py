"""A shard's independent per-galaxy work spread over worker processes.

The per-galaxy stages (segment, photometry) are loops of numpy and astropy
calls that hold the GIL, so the cores a job is given (the rule's ``threads``)
only help as processes. :func:`ordered_map` runs ``function(state, item)`` for
every item, in this process for one worker and in a process pool otherwise,
and returns the results in the items' order: the output of a shard does not
depend on how many workers made it.
"""

from __future__ import annotations

import argparse
import multiprocessing
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from clumpcat.logs import progress

__all__ = ["ordered_map", "add_workers_option", "shard_job_threads", "MAX_AUTO_THREADS"]

#: Most cores an automatic per-shard job takes: a job's start-up (imports,
#: reading its tables) stays serial, and torch's CPU convolutions scale poorly
#: past a few threads, so more cores serve better as more jobs side by side.
MAX_AUTO_THREADS = 8

S = TypeVar("S")
T = TypeVar("T")
R = TypeVar("R")

# What each pool process runs: set once per process by _install, so the state
# (a shard's segments, its clumps) is handed over once, not with every item.
_WORKER: tuple[Callable[[Any, Any], Any], Any] | None = None


def _install(function: Callable[[S, T], R], state: S) -> None:
    global _WORKER
    _WORKER = (function, state)


def _call(item: Any) -> Any:
    assert _WORKER is not None, "pool process without its state"
    function, state = _WORKER
    return function(state, item)


def _context() -> multiprocessing.context.BaseContext:
    # fork hands the state over without pickling it and starts in milliseconds;
    # where there is no fork (Windows), spawn pickles it once per process.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def ordered_map(
    function: Callable[[S, T], R], state: S, items: Sequence[T], *, workers: int = 1, desc: str = ""
) -> list[R]:
    """``[function(state, item) for item in items]``, on ``workers`` processes.

    Parameters
    ----------
    function : callable
        A module-level function of ``(state, item)`` (picklable where the
        pool spawns). It should catch what one item may raise and return it
        as a result: an exception it lets through stops the whole map.
    state
        What every call shares (settings, a shard's tables), given to each
        worker process once.
    items : sequence
        One call per item.
    workers : int
        Processes; 1 (or a single item) runs in this process, without a pool.
    desc : str
        Label of the progress bar.

    Returns
    -------
    list
        The results, in the order of ``items``.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    items = list(items)
    workers = min(workers, len(items))
    if workers <= 1:
        return [function(state, item) for item in progress(items, desc=desc)]
    # Small chunks keep the workers evenly loaded (galaxies differ in size and
    # clump count); a few per worker keep the hand-over cost low.
    chunksize = max(1, len(items) // (workers * 8))
    with _context().Pool(workers, initializer=_install, initargs=(function, state)) as pool:
        return list(progress(pool.imap(_call, items, chunksize=chunksize), desc=desc, total=len(items)))


def shard_job_threads(setting: int | None, cores: int | None, shards: int, cluster: int) -> int:
    """Cores of one per-shard job (segment, detect, photometry, inject, baseline).

    Parameters
    ----------
    setting : int or None
        The configured value (``shard_threads``, ``detect.threads``); None
        (``null``) chooses automatically.
    cores : int or None
        The cores of a local run (``snakemake --cores``); None on a cluster,
        where every job gets an allocation of its own.
    shards : int
        Shards of the job's sample: how many such jobs can run at once.
    cluster : int
        What an automatic job asks for on a cluster.

    Returns
    -------
    int
        ``setting`` when given; locally, ``cores // shards`` between 1 and
        :data:`MAX_AUTO_THREADS`: a sample of one shard on 2 cores gets both,
        one of 4 shards gets 1 per job, so that the jobs run side by side
        instead of each leaving a core idle while it starts; on a cluster,
        ``cluster``.
    """
    if setting is not None:
        if setting < 1:
            raise ValueError(f"threads must be >= 1 or null, got {setting}")
        return int(setting)
    if not cores:
        return cluster
    return max(1, min(MAX_AUTO_THREADS, cores // max(shards, 1)))


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def add_workers_option(parser: argparse.ArgumentParser) -> None:
    """The ``--workers`` option of a per-galaxy stage (the rule passes its ``threads``)."""
    parser.add_argument(
        "--workers",
        type=_positive,
        default=1,
        help="processes measuring the shard's galaxies, one per core the job may use (default 1); "
        "the output does not depend on it",
    )
