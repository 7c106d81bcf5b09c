"""Two processes on the CPU (gloo) for the metrics' DDP tests: the test process is rank 0 and one
spawned process is rank 1 (a spawned process spends seconds importing torch and torchmetrics, so
only one is started)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_on_two_ranks(share: Callable[..., Any], args: tuple[Any, ...], saved: Path) -> tuple[Any, Any]:
    """``share(rank, world_size, *args)`` inside a gloo process group of two: here as rank 0
    and in a spawned process as rank 1 (whose result travels through the file ``saved``); both
    results, rank 0's first. ``share`` must be a module-level function, so that the spawned
    process can import it."""
    port = free_port()
    other = mp.get_context("spawn").Process(target=_rank, args=(share, 1, port, args, saved), daemon=True)
    other.start()
    try:
        rank0 = _rank(share, 0, port, args)
    finally:
        other.join(timeout=60)
        if other.is_alive():
            other.kill()
            other.join()
    assert other.exitcode == 0
    return rank0, torch.load(saved)


def _rank(share: Callable[..., Any], rank: int, port: int, args: tuple[Any, ...], save_to: Path | None = None) -> Any:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=60))
    try:
        got = share(rank, 2, *args)
        if save_to is not None:
            torch.save(got, save_to)
        return got
    finally:
        dist.destroy_process_group()
