"""Placement and cost planning: will a preset fit the cluster, how long will it take, what will it cost.

    shapes     a model's dimensions and parameter count (its config.json, or `hub_models.yaml`)
    memory     weights, KV cache, activations and training state in bytes (pure arithmetic)
    nodes      node types: a cluster launcher YAML (+ `instances.yaml`), the running Ray cluster, this machine
    placement  per stage: tensor-parallel degree, node fit, replicas per node, co-location; the job-start check
    workload   tokens per stage from item and pair counts (with curation's unique-response saving)
    cost       roofline throughput, device-hours, wall-clock hours and cost
    report     plan.json / plan.md / gpu_hours.png, and estimate against a measured run

`check_placement(config, stage)` is the one call every job makes before it loads a model.
"""
from carevl.planning.placement import PlacementError, check_placement

__all__ = ["PlacementError", "check_placement"]
