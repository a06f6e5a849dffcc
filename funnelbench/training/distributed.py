"""The one place that calls ``torch.distributed``: :class:`Ranks` is the run's processes under
``torchrun`` (rank, world size, device; the process group it may have started) and every
collective the trainer needs. With one process (``WORLD_SIZE`` unset) each is a no-op.

Under ``torchrun --nproc_per_node N`` the model is wrapped in ``DistributedDataParallel`` (NCCL
on CUDA, gloo on CPU); ``batch_size`` is the global batch, each rank takes a consecutive slice
of every global batch, and MixUp / CutMix mix the gathered global batch, so N processes take the
same steps as one. The exception: a PS-ViT stem's BatchNorm is synchronised over the ranks on
CUDA (SyncBatchNorm) but sees only a rank's slice on CPU."""

from __future__ import annotations

import os
from contextlib import contextmanager

import torch
import torch.distributed as dist

from ..env import resolve_device


class Ranks:
    """This process's place among the run's processes, and the collectives over them."""

    def __init__(self, rank: int, world: int, device: torch.device, owns_group: bool = False):
        self.rank, self.world, self.device = rank, world, device
        self.owns_group = owns_group  # whether closing ends the process group

    @classmethod
    def from_env(cls, device_name: str) -> "Ranks":
        """From torchrun's environment; one process when ``WORLD_SIZE`` is unset."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        device = resolve_device(device_name)
        if world <= 1:
            return cls(0, 1, device)
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        owns = not dist.is_initialized()
        if owns:
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), device, owns)

    @contextmanager
    def rank_zero_first(self):
        """Rank 0 runs the block first (it builds a cache), the others after it."""
        if self.world > 1 and self.rank != 0:
            dist.barrier()
        yield
        if self.world > 1 and self.rank == 0:
            dist.barrier()

    def wrap(self, model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
        """(the model on this rank's device, what the training steps call: the model itself or
        its ``DistributedDataParallel`` wrapper)."""
        if self.world > 1 and self.device.type == "cuda":
            # BatchNorm (PS-ViT's stem) over the global batch; SyncBatchNorm needs a GPU, so gloo
            # ranks on CPU keep per-rank statistics.
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = model.to(self.device)
        if self.world == 1:
            return model, model
        from torch.nn.parallel import DistributedDataParallel

        return model, DistributedDataParallel(
            model, device_ids=[self.device.index] if self.device.type == "cuda" else None
        )

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            t = t.clone()
            dist.all_reduce(t)
        return t

    def all_min(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            t = t.clone()
            dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return t

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """Every rank's ``x``, concatenated in rank order (the global batch)."""
        if self.world == 1:
            return x
        xs = [torch.empty_like(x) for _ in range(self.world)]
        dist.all_gather(xs, x)
        return torch.cat(xs)

    def own_slice(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's consecutive slice of a global batch."""
        if self.world == 1:
            return x
        n = x.shape[0] // self.world
        return x[self.rank * n : (self.rank + 1) * n]

    def broadcast_code(self, code: int) -> int:
        """Rank 0's ``code`` on every rank."""
        if self.world > 1:
            flag = torch.tensor([code], dtype=torch.int64, device=self.device)
            dist.broadcast(flag, 0)
            code = int(flag.item())
        return code

    def close(self) -> None:
        """End the process group if this run started it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


__all__ = ["Ranks"]
