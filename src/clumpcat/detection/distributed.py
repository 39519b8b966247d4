"""Distributed data-parallel set-up (paper 4.2 trained with DDP).

On GPUs, ``torchrun --nproc_per_node=N -m clumpcat train ...`` sets ``RANK``,
``LOCAL_RANK`` and ``WORLD_SIZE``. On a CPU, :func:`run_cpu_processes` spawns
the processes itself and sets the same variables, because the two threads of
a laptop-sized job train faster as two single-threaded replicas than as one
process (torchvision's detection heads run partly single-threaded). Without
them everything here is a no-op and training runs in one process.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from clumpcat import errors
from clumpcat.errors import ClumpcatError, InputError

__all__ = [
    "DistributedContext",
    "init_distributed",
    "barrier",
    "gather_to_main",
    "shutdown",
    "cpu_process_count",
    "run_cpu_processes",
    "under_launcher",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in a (possibly single-process) run."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        """True when more than one process trains."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on the process that validates, logs and writes checkpoints."""
        return self.rank == 0


def _pick_device(requested: str, local_rank: int) -> torch.device:
    """This process's device: its own GPU under torchrun, else the CPU.

    Raises
    ------
    InputError
        For a device other than auto/cpu/cuda, or cuda on a machine where
        torch sees no CUDA device; the message says what to do.
    """
    if requested not in ("auto", "cpu", "cuda"):
        raise InputError(f"--device must be 'auto', 'cpu' or 'cuda', got {requested!r}")
    if requested == "cuda" and not torch.cuda.is_available():
        raise InputError(
            "--device cuda: torch finds no CUDA device on this machine "
            f"(torch {torch.__version__}, built for CUDA {torch.version.cuda or 'none'}); "
            "use --device cpu or auto (training.device in config.yaml), or run on a GPU node"
        )
    if requested == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    if local_rank >= torch.cuda.device_count():
        raise InputError(
            f"process {local_rank} of torchrun has no GPU of its own: {torch.cuda.device_count()} visible; "
            "start at most that many processes (training.gpus)"
        )
    return torch.device("cuda", local_rank)


def init_distributed(device: str = "auto") -> DistributedContext:
    """Join the process group started by torchrun, if any.

    Parameters
    ----------
    device : {'auto', 'cpu', 'cuda'}
        ``auto`` takes this process's GPU when CUDA is available.

    Returns
    -------
    DistributedContext
        NCCL on GPUs, Gloo on CPUs.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _pick_device(device, local)
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        log.info("process %d of %d on %s (%s)", rank, world, dev, dist.get_backend())
    return DistributedContext(rank=rank, local_rank=local, world_size=world, device=dev)


def barrier(ctx: DistributedContext) -> None:
    """Wait for every process (no-op in a single process)."""
    if ctx.enabled:
        dist.barrier()


def shutdown(ctx: DistributedContext) -> None:
    """Leave the process group."""
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def gather_to_main(obj: Any, ctx: DistributedContext) -> list[Any] | None:
    """Every process's ``obj``, as a list on the main process (None elsewhere)."""
    if not ctx.enabled:
        return [obj]
    out: list[Any] | None = [None] * ctx.world_size if ctx.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def under_launcher() -> bool:
    """True inside a process started by torchrun or :func:`run_cpu_processes`."""
    return "WORLD_SIZE" in os.environ


def cpu_process_count(batch_size: int, threads: int | None, requested: int | None = None) -> int:
    """How many data-parallel processes train on a CPU.

    Parameters
    ----------
    batch_size : int
        Images per optimiser step, split evenly between the processes.
    threads : int, optional
        CPU threads of the job (default: torch's count).
    requested : int, optional
        ``training.cpu_processes``; None chooses the largest divisor of the
        batch that leaves each process at least 2 images (batch norm) and
        at least one thread.

    Raises
    ------
    InputError
        For a requested count that does not divide the batch.
    """
    if requested is not None:
        if requested < 1 or batch_size % requested:
            raise InputError(
                f"training.cpu_processes={requested} must be a positive divisor of training.batch_size="
                f"{batch_size} (each process takes an equal part of the batch)"
            )
        return requested
    available = threads or torch.get_num_threads()
    fitting = [p for p in range(1, min(available, batch_size // 2) + 1) if batch_size % p == 0]
    return max(fitting, default=1)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _join_and_run(
    rank: int, world: int, port: int, log_file: str | None, level: int, target: Callable, kwargs: dict
) -> None:
    """Body of one spawned process: join the group's environment, set up logging, run."""
    from clumpcat.logs import setup_logging

    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    # The replicas' messages would repeat rank 0's: they log warnings only.
    setup_logging(log_file, verbose=level <= logging.DEBUG)
    if rank:
        logging.getLogger("clumpcat").setLevel(logging.WARNING)
    target(**kwargs)


def _child_error(traceback_text: str) -> ClumpcatError:
    """The error to raise for a spawned process's traceback.

    Its last line reads ``clumpcat.errors.InputError: what went wrong``; a
    clumpcat error keeps its class (an InputError stays one for the CLI and
    for callers that catch it), anything else becomes a ClumpcatError.
    """
    last = [line for line in traceback_text.splitlines() if line.strip()][-1]
    named = re.match(r"^([\w.]+): (.+)$", last)
    if not named:
        return ClumpcatError(f"training process failed: {last}")
    qualified, message = named.groups()
    module, _, name = qualified.rpartition(".")
    kind = getattr(errors, name, None) if module == errors.__name__ else None
    if isinstance(kind, type) and issubclass(kind, ClumpcatError) and kind is not errors.CutoutError:
        return kind(f"training process failed: {message}")
    return ClumpcatError(f"training process failed: {message}")


def run_cpu_processes(target: Callable[..., Any], processes: int, kwargs: dict[str, Any]) -> None:
    """Run ``target(**kwargs)`` in ``processes`` spawned processes forming one Gloo group.

    Each process sees ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``
    and ``MASTER_PORT`` as under torchrun, so :func:`init_distributed` joins
    them. The log records go where this process's go (stderr and its
    ``--log`` file).

    Raises
    ------
    ClumpcatError
        With the failing process's own message when one fails; a clumpcat
        error raised there keeps its class (InputError stays InputError).
    """
    root = logging.getLogger("clumpcat")
    log_file = next((h.baseFilename for h in root.handlers if isinstance(h, logging.FileHandler)), None)
    port = _free_port()
    try:
        mp.start_processes(
            _join_and_run,
            args=(processes, port, log_file, root.getEffectiveLevel(), target, kwargs),
            nprocs=processes,
            start_method="spawn",
        )
    except mp.ProcessRaisedException as exc:
        raise _child_error(str(exc)) from None
    except mp.ProcessExitedException as exc:
        raise ClumpcatError(
            f"training process {exc.error_index} of {processes} died (exit code {exc.exit_code}); "
            "out of memory? set training.cpu_processes: 1 to train in one process"
        ) from None
