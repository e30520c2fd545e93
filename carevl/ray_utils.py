"""Joining or starting Ray, from the config only."""
from __future__ import annotations

import os

import ray

from carevl.config import CarevlConfig


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
