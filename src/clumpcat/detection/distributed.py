"""Distributed data-parallel set-up for ``torchrun`` (paper 4.2 trained with DDP).

``torchrun --nproc_per_node=N -m clumpcat train ...`` sets ``RANK``,
``LOCAL_RANK`` and ``WORLD_SIZE``; without them everything here is a no-op
and training runs in one process.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from clumpcat.errors import InputError

__all__ = ["DistributedContext", "init_distributed", "barrier", "shutdown"]

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
