"""torch.distributed set-up for `torchrun`: the model code is written for one device; this module
only decides the process's place (rank, world, device) and wraps the model in DDP."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Place:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup() -> Place:
    """Join the process group that `torchrun` describes in the environment (WORLD_SIZE > 1), else a
    single process. CUDA processes use NCCL on their LOCAL_RANK's device, CPU processes gloo."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Place(rank, world, local, device)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, place: Place, find_unused: bool = False) -> nn.Module:
    """DDP around ``model`` when there are several processes (gradients averaged over them);
    ``find_unused`` when some steps leave parameters out of the graph (alternating objectives, stages)."""
    if place.world == 1:
        return model
    ids = [place.local_rank] if place.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused)


def all_true(flag: bool, place: Place) -> bool:
    """True when ``flag`` is true on every process (so all skip or all take a step)."""
    if place.world == 1:
        return flag
    t = torch.tensor([0.0 if flag else 1.0], device=place.device)
    dist.all_reduce(t)
    return bool(t.item() == 0)


def any_true(flag: bool, place: Place) -> bool:
    """True when ``flag`` is true on some process (so all stop together)."""
    return not all_true(not flag, place)


def barrier(place: Place) -> None:
    if place.world > 1:
        dist.barrier()
