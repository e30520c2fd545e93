"""Ray plumbing shared by every job: joining or starting Ray (from the config only), sizing actor pools
from model resources, actor threads, and running a driver so that a signal stops it at once."""
from __future__ import annotations

import logging
import math
import os
import signal
import threading
from typing import Any, Callable, TypeVar

import ray
import torch

from carevl.config import CarevlConfig, ModelSpec, Resources
from carevl.planning.nodes import launchable_node_types

T = TypeVar("T")
log = logging.getLogger(__name__)


def init_ray(config: CarevlConfig) -> None:
    """Join the cluster named in config or RAY_ADDRESS (set by `ray job submit`), else start Ray in-process.

    Token authentication stays on: a driver started by `ray job submit` inherits the job's credentials.
    """
    if ray.is_initialized():
        return
    address = config.ray.address or os.environ.get("RAY_ADDRESS")
    kwargs: dict = {"log_to_driver": config.ray.log_to_driver}
    if address:
        ray.init(address=address, **kwargs)
        return
    # address="local" always starts a fresh in-process instance, never attaching by accident to some
    # other cluster that `ray start` left running on this machine.
    kwargs["include_dashboard"] = False
    if config.ray.num_cpus is not None:
        kwargs["num_cpus"] = config.ray.num_cpus
    ray.init(address="local", **kwargs)


def interruptible(fn: Callable[[], T], poll_s: float = 0.5) -> T:
    """Run `fn` in a worker thread so that Ctrl-C / SIGTERM stop the job at once.

    Python runs signal handlers in the main thread only, and a main thread blocked without a timeout
    (inside Ray Data's result queue) wakes for a signal only if the kernel delivered it to that thread.
    Here the main thread only waits with a timeout, so a pending SIGINT or SIGTERM is acted on within
    `poll_s` whichever thread received it; the job then exits through the normal exit hooks (Ray stops
    what this process started) and a re-run of the same command resumes.
    """
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the main thread below
            result["error"] = exc

    previous_term = signal.signal(signal.SIGTERM, _raise_interrupt) if _in_main_thread() else None
    worker = threading.Thread(target=target, name="job-driver", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(poll_s)
    except KeyboardInterrupt:
        print("interrupted: finished work units are kept; re-run the same command to resume", flush=True)
        raise SystemExit(130) from None
    finally:
        if previous_term is not None:
            signal.signal(signal.SIGTERM, previous_term)
    if "error" in result:
        raise result["error"]
    return result["value"]


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


# ------------------------------------------------------------------------------------ actor pools

def group_resources(specs: list[ModelSpec]) -> Resources:
    """One pool for co-located models: GPU shares add up (each model holds its own slice of memory); the
    process runs the models one after another, so it needs the CPUs of its hungriest member."""
    first = specs[0].resources
    return first.model_copy(update={
        "num_gpus": sum(s.resources.num_gpus for s in specs),
        "num_cpus": max(s.resources.num_cpus for s in specs),
        "batch_size": min(s.resources.batch_size for s in specs),
    })


def actor_threads(resources: Resources) -> int:
    """Torch threads of an actor: the CPUs its pool reserves, rounded up."""
    return max(1, math.ceil(resources.num_cpus))


def use_threads(num_threads: int | None) -> None:
    """Ray caps a fractional-CPU actor at one thread; use what the pool reserved (`actor_threads`)."""
    if num_threads:
        torch.set_num_threads(num_threads)


def pool_args(resources: Resources, backend: str = "transformers", batch_format: str = "pyarrow") -> dict[str, Any]:
    """map_batches arguments of an actor pool from config resources."""
    lo, hi = resources.concurrency
    args: dict[str, Any] = dict(batch_size=resources.batch_size, batch_format=batch_format, num_cpus=resources.num_cpus,
                                compute=ray.data.ActorPoolStrategy(min_size=lo, max_size=hi))
    # vLLM with tensor parallelism places its own GPU workers; the driving actor then holds no GPU itself.
    gpus = 0.0 if backend == "vllm" and resources.tensor_parallel_size > 1 else resources.num_gpus
    if gpus:
        args["num_gpus"] = gpus
    if resources.accelerator_type:
        args["accelerator_type"] = resources.accelerator_type
    return args


def check_fits(pools: list[dict[str, Any]], task_num_cpus: float, job: str = "curation") -> None:
    """Say so when the actor pools' minimum sizes plus one light task cannot run at once on the cluster
    as it is now: the streaming pipeline waits for resources. On a cluster whose autoscaler published
    the node types it may launch (`carevl.planning.nodes.publish_node_types`) that is the normal start
    from zero workers (logged as such); elsewhere it is a warning."""
    need_cpu = task_num_cpus + sum(p["num_cpus"] * p["compute"].min_size for p in pools)
    need_gpu = sum(p.get("num_gpus", 0) * p["compute"].min_size for p in pools)
    have = ray.cluster_resources()
    if need_cpu <= have.get("CPU", 0) + 1e-9 and need_gpu <= have.get("GPU", 0) + 1e-9:
        return
    shortfall = (f"{job} needs at least {need_cpu:.2f} CPU / {need_gpu:.2f} GPU at once (actor pools at their "
                 f"minimum size plus one task); the cluster has {have.get('CPU', 0):.2f} CPU / "
                 f"{have.get('GPU', 0):.2f} GPU now")
    types = sorted(t.name for t in launchable_node_types())
    if types:
        log.info("%s; waiting for the autoscaler to add nodes (types it may launch: %s)", shortfall, ", ".join(types))
    else:
        log.warning("%s; it will wait for more nodes. Lower models.<name>.resources or add nodes.", shortfall)
