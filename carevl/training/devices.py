"""Which device a Ray Train worker computes on, and which process-group backend joins the workers.

Ray hands a worker a GPU *resource*; whether the process can use CUDA is a separate fact. A node may
advertise GPUs it does not have (the fake nodes of an autoscaler test, a CPU image on a GPU node type),
so both choices here come from `torch.cuda.is_available()` on the worker itself, never from
`use_gpu` or the resource alone:

- the device: the worker's GPU when CUDA is there, else the CPU (and accelerate is told so: Ray
  Train sets `ACCELERATE_TORCH_DEVICE` from the resource);
- the backend: NCCL when every worker sees CUDA, else gloo. Ray Train picks it on the driver from
  `use_gpu`, which a driver on a CPU-only head cannot check; `WorkerDeviceTorchConfig` asks the
  workers instead.
"""
from __future__ import annotations

import dataclasses
import os

import ray.train.torch
import torch
from ray.train.torch import TorchConfig
from ray.train.torch.config import _TorchBackend  # the backend TorchConfig names; subclassed below


def cuda_usable() -> bool:
    """True when this process can run CUDA kernels (not merely holds a Ray GPU resource)."""
    return torch.cuda.is_available()


def claim_worker_device() -> torch.device:
    """The device this training worker computes on: its Ray-assigned GPU when CUDA is usable, else
    the CPU. On CPU it also points accelerate at the CPU (Ray Train set `ACCELERATE_TORCH_DEVICE` to
    the GPU the resource names, which would not exist). Call before TRL's config is built."""
    if cuda_usable():
        return ray.train.torch.get_device()
    os.environ["ACCELERATE_TORCH_DEVICE"] = "cpu"
    return torch.device("cpu")


def process_group_backend(workers_with_cuda: list[bool]) -> str:
    """NCCL when every worker can use CUDA, else gloo (NCCL needs a GPU on every rank)."""
    return "nccl" if workers_with_cuda and all(workers_with_cuda) else "gloo"


class _WorkerDeviceBackend(_TorchBackend):
    def on_start(self, worker_group, backend_config: TorchConfig):
        backend = process_group_backend(worker_group.execute(cuda_usable))
        super().on_start(worker_group, dataclasses.replace(backend_config, backend=backend))


@dataclasses.dataclass
class WorkerDeviceTorchConfig(TorchConfig):
    """Ray Train's TorchConfig whose process-group backend follows what the workers really have
    (`process_group_backend`), decided when the worker group starts (again after every restart)."""

    @property
    def backend_cls(self):
        return _WorkerDeviceBackend
