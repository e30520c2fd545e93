"""Joining or starting Ray, from the config only."""
from __future__ import annotations

import os
import signal
import threading
from typing import Any, Callable, TypeVar

import ray

from carevl.config import CarevlConfig

T = TypeVar("T")


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
