"""Where training runs: the device, the precision and the data-parallel group (torchrun).

Shared by every stage that trains or evaluates (`train`, `distill`, `prune --method oto`), so it sits below
`distill` and `prune`, beside `models` and `data`.

- `--device auto|cpu|cuda|cuda:N|mps`: `auto` takes CUDA, then MPS, then the CPU. A device this machine lacks is
  one line (`DeviceError`), never a CUDA traceback.
- `--precision fp32|bf16|fp16`: autocast around the forward and the loss; fp16 adds a gradient scaler (bf16 has
  fp32's range and needs none). Channels-last memory format is used on CUDA, where cuDNN's convolutions are
  faster in it; on the CPU it is left off (oneDNN converts to its own blocked layout either way).
- torchrun: `WORLD_SIZE`, `RANK` and `LOCAL_RANK` in the environment start a process group (NCCL on CUDA, gloo
  on the CPU), each rank on `cuda:LOCAL_RANK` when the device is CUDA. `--batch-size` is the global batch: each
  rank trains on its slice, DistributedDataParallel averages the gradients, so one process and N processes take
  the same steps. Batch norms are synchronised across ranks for that, by `GlobalBatchNorm` below on every backend:
  torch's `SyncBatchNorm` refuses CPU tensors ("expected input tensor to be on GPU"), so the gloo runs the tests
  make could not check it, and one code path is the one tested.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import nn

from .errors import EdgekitError

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class DeviceError(EdgekitError):
    """A device or precision this machine cannot give."""


def resolve_device(spec: str) -> torch.device:
    """`auto`, `cpu`, `cuda`, `cuda:N` or `mps` -> a device this machine has (a `DeviceError` otherwise)."""
    spec = str(spec).strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", 0)
        return torch.device("mps") if torch.backends.mps.is_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if not torch.backends.mps.is_available():
            raise DeviceError("--device mps: this machine has no Apple GPU (MPS); use --device cpu or auto")
        return torch.device("mps")
    head, _, index = spec.partition(":")
    if head == "cuda" and (not index or index.isdigit()):
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {spec}: no CUDA device is available here; use --device cpu or auto")
        n = torch.cuda.device_count()
        if index and int(index) >= n:
            raise DeviceError(f"--device {spec}: this machine has {n} CUDA device(s), cuda:0 to cuda:{n - 1}")
        return torch.device("cuda", int(index or 0))
    raise DeviceError(f"--device {spec!r} is not a device; choose {', '.join(DEVICES)}")


def check_precision(precision: str, device: torch.device) -> str:
    if precision not in PRECISIONS:
        raise DeviceError(f"--precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise DeviceError(f"--precision bf16: {torch.cuda.get_device_name(device)} has no bf16; use fp16 or fp32")
    return precision


@dataclass(frozen=True)
class Runtime:
    """One process's place in a (possibly one-process) training run."""

    device: torch.device = torch.device("cpu")
    precision: str = "fp32"
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the one process that prints and writes."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def channels_last(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=_DTYPES[self.precision])

    def scaler(self) -> torch.amp.GradScaler:
        """A gradient scaler, enabled for fp16 only (a no-op otherwise)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    def to(self, x: torch.Tensor) -> torch.Tensor:
        """A batch onto the device (asynchronously from pinned memory), channels-last where that is faster."""
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def place(self, model: nn.Module) -> nn.Module:
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # documented; not in the stub
        return model

    def mean(self, value: float) -> float:
        """The mean of `value` over the ranks."""
        if not self.distributed:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64, device=self._comm_device)
        dist.all_reduce(t)
        return float(t) / self.world

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """`values` summed over the ranks (a copy; the input is left alone)."""
        if not self.distributed:
            return values.clone()
        t = values.to(self._comm_device).clone()
        dist.all_reduce(t)
        return t.to(values.device)

    def agree(self, flag: bool) -> bool:
        """Rank 0's `flag`, on every rank."""
        if not self.distributed:
            return flag
        t = torch.tensor([int(flag)], device=self._comm_device)
        dist.broadcast(t, src=0)
        return bool(t.item())

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    @property
    def _comm_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")


def to_cpu(model: nn.Module) -> nn.Module:
    """A trained model back on the CPU in the default layout (plans are applied, MACs counted and files written
    there)."""
    model.to("cpu")
    model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    return model


def runtime(device: str = "auto", precision: str = "fp32") -> Runtime:
    """This process's `Runtime`: under torchrun, joins (or starts) the process group first."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        dev = resolve_device(device)
        return Runtime(dev, check_precision(precision, dev))
    local = int(os.environ.get("LOCAL_RANK", "0") or 0)
    dev = resolve_device(device)
    if dev.type == "cuda":
        if device.strip().lower() in ("auto", "cuda"):
            dev = torch.device("cuda", local)  # one GPU per process, as torchrun starts them
        torch.cuda.set_device(dev)
    elif dev.type == "mps":
        raise DeviceError("--device mps: MPS has no multi-process backend; run without torchrun, or on CUDA")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Runtime(dev, check_precision(precision, dev), dist.get_rank(), dist.get_world_size())


def launched_rank() -> int:
    """This process's rank as torchrun set it (0 outside torchrun), before any process group exists."""
    return int(os.environ.get("RANK", "0") or 0)


def shutdown() -> None:
    """Leave the process group, if this process joined one (torchrun's processes end cleanly)."""
    if dist.is_initialized():
        dist.destroy_process_group()


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics are those of the global batch (all ranks), on any backend.

    The per-channel sum, sum of squares and count are all-reduced with autograd
    (`torch.distributed.nn.functional.all_reduce`), so the gradients are those of one batch norm over the whole
    batch. Its state dict is a BatchNorm's; `synchronized` swaps the class of existing modules in and out."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        xf = x.float()  # statistics in fp32 under autocast too
        n = torch.tensor([x.numel() / x.shape[1]], dtype=torch.float32, device=x.device)
        stats = torch.cat([xf.sum(dims), (xf * xf).sum(dims), n])
        stats = dist_fn.all_reduce(stats)
        c = x.shape[1]
        count = stats[-1]
        mean = stats[:c] / count
        var = (stats[c : 2 * c] / count - mean * mean).clamp_min(0)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                tracked = self.num_batches_tracked
                assert tracked is not None  # track_running_stats
                tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * count / (count - 1), alpha=m)
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


@contextlib.contextmanager
def synchronized(model: nn.Module, rt: Runtime):
    """Inside: the model's batch norms compute global-batch statistics across the ranks (a no-op for one process).
    The modules are the same objects (their class is swapped), so parameters, buffers and optimizers stay valid."""
    if not rt.distributed:
        yield model
        return
    swapped = []
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not isinstance(m, (nn.SyncBatchNorm, GlobalBatchNorm)):
            swapped.append((m, m.__class__))
            m.__class__ = GlobalBatchNorm
    try:
        yield model
    finally:
        for m, cls in swapped:
            m.__class__ = cls
