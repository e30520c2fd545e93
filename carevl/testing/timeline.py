"""A scaling timeline of an autoscaling cluster: every second, the instances up by node type, the
launches pending, the resource demand the autoscaler sees, the live actors per pool (a Ray Data pool
by the class it maps with, a Ray Train worker group, ...), the actors still waiting to start or
restarting, and the Serve replicas per deployment;
events (a submission, a preemption, the load stopping) marked by the caller. Saved as JSON and drawn as
one PNG: nodes and replicas over time, events as vertical lines.
"""
from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the file-only backend

MAP_UDF = re.compile(r"MapBatches\((\w+)\)")


def pool_of(class_name: str) -> tuple[str, str]:
    """("replicas", deployment) for a Serve replica, else ("actors", pool): a Ray Data pool actor is
    named by the class it maps with (class "MapWorker(MapBatches(Captioner))" -> "Captioner"), any
    other actor by its class."""
    if class_name.startswith("ServeReplica:"):
        return "replicas", class_name.rsplit(":", 1)[-1]
    found = MAP_UDF.search(class_name)
    return "actors", found.group(1) if found else class_name


def holds_gpu(resources: dict[str, float]) -> bool:
    """Whether an actor's resources include GPUs, directly or in a placement group bundle ("GPU_group_...")."""
    return any(v and (k == "GPU" or k.startswith("GPU_group_")) for k, v in resources.items())


def demand_of(status) -> list[dict[str, Any]]:
    """The autoscaler's pending demand: task/actor bundles, placement-group bundles and explicit
    resource requests, each as {"kind", "bundle", "count"}."""
    summary = status.resource_demands
    out = []
    for kind, demands in (("task_actor", summary.ray_task_actor_demand),
                          ("placement_group", summary.placement_group_demand),
                          ("request", summary.cluster_constraint_demand)):
        for demand in demands:
            out += [{"kind": kind, "bundle": dict(b.bundle), "count": b.count} for b in demand.bundles_by_count]
    return out


@dataclass
class Timeline:
    """Samples `cloud` (a `carevl.testing.fake_cloud.FakeCloud`) every `every_s` in a thread."""

    cloud: Any
    every_s: float = 1.0
    samples: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    errors: int = 0
    gpu_pools: set[str] = field(default_factory=set)

    def __post_init__(self):
        self._t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="scaling-timeline", daemon=True)

    def now(self) -> float:
        return round(time.monotonic() - self._t0, 2)

    def mark(self, label: str) -> float:
        """Mark an event now; returns its time."""
        t = self.now()
        self.events.append({"t": t, "event": label})
        return t

    def sample(self) -> dict[str, Any]:
        from ray.util.state import list_actors

        status = self.cloud.status()
        pending = Counter({r.ray_node_type_name: r.count for r in status.pending_launches})
        pending.update(n.ray_node_type_name for n in status.pending_nodes)
        groups: dict[str, Counter] = {"actors": Counter(), "replicas": Counter(), "waiting": Counter()}
        for actor in list_actors(address=self.cloud.dashboard, filters=[("state", "!=", "DEAD")], detail=True,
                                 limit=10_000, timeout=20, raise_on_missing_output=False):
            kind, name = pool_of(actor.class_name or "")
            groups[kind if actor.state == "ALIVE" else "waiting"][name] += 1
            if kind == "actors" and holds_gpu(actor.required_resources or {}):
                self.gpu_pools.add(name)
        return {"t": self.now(), "nodes": dict(self.cloud.nodes_by_type(status)), "pending": dict(pending),
                "demand": demand_of(status), **{k: dict(v) for k, v in groups.items()}}

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.samples.append(self.sample())
            except Exception:  # noqa: BLE001 - a busy dashboard or GCS: this second is missing, not the run
                self.errors += 1
            self._stop.wait(max(0.0, self.every_s - (time.monotonic() - started)))

    def start(self) -> "Timeline":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def __enter__(self) -> "Timeline":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ reading it back

    def event(self, label: str) -> float:
        return next(e["t"] for e in self.events if e["event"] == label)

    def first(self, predicate: Callable[[dict], bool], after: float = 0.0) -> float | None:
        """Time of the first sample at or after `after` for which `predicate` holds (None: never)."""
        return next((s["t"] for s in self.samples if s["t"] >= after and predicate(s)), None)

    def release_s(self, busy: Callable[[dict], bool], up: Callable[[dict], bool], after: float = 0.0) -> float | None:
        """Seconds from the last sample at or after `after` in which the work was `busy` (e.g. a GPU
        pool actor alive or starting) to the first later sample with nothing `up` (e.g. no GPU
        instance): how long capacity outlived its work, to one sample's precision."""
        last_busy = max((s["t"] for s in self.samples if s["t"] >= after and busy(s)), default=after)
        gone = self.first(lambda s: not up(s), after=last_busy)
        return None if gone is None else round(gone - last_busy, 1)

    def peak(self, key: str) -> dict[str, int]:
        """Largest count seen of each node type ("nodes") or pool ("actors", "replicas")."""
        top: Counter = Counter()
        for s in self.samples:
            for name, n in s[key].items():
                top[name] = max(top[name], n)
        return dict(top)

    def to_dict(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"every_s": self.every_s, "events": self.events, "samples": self.samples, "sample_errors": self.errors,
                "peak_nodes": self.peak("nodes"), "peak_actors": self.peak("actors"),
                "peak_replicas": self.peak("replicas"), "gpu_pools": sorted(self.gpu_pools), **(extra or {})}

    def save(self, folder: Path, name: str, extra: dict[str, Any] | None = None) -> tuple[Path, Path]:
        """Write `name`.json and `name`.png into `folder`; returns both paths."""
        folder.mkdir(parents=True, exist_ok=True)
        data, chart = folder / f"{name}.json", folder / f"{name}.png"
        data.write_text(json.dumps(self.to_dict(extra), indent=1, default=str))
        plot(self.to_dict(), chart, title=name)
        return data, chart


def _series(samples: list[dict], key: str, name: str) -> list[int]:
    return [s[key].get(name, 0) for s in samples]


def plot(timeline: dict[str, Any], path: Path, title: str, dpi: int = 110) -> None:
    """Top: instances by node type (dashed: launches pending). Bottom: live actors of the GPU pools and
    Serve replicas (dashed: waiting to start or restarting). Events are vertical lines on both,
    labelled at the top."""
    samples = timeline["samples"]
    t = [s["t"] for s in samples]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True)
    for i, name in enumerate(sorted(timeline["peak_nodes"] | {k: 0 for s in samples for k in s["pending"]})):
        colour = f"C{i}"
        top.step(t, _series(samples, "nodes", name), where="post", color=colour, label=name)
        if any(_series(samples, "pending", name)):
            top.step(t, _series(samples, "pending", name), where="post", color=colour, linestyle="--",
                     alpha=0.6, label=f"{name} (launching)")
    seen = {name for s in samples for name in (*s["actors"], *s["waiting"])}
    pools = [("actors", p) for p in sorted(timeline["gpu_pools"]) if p in seen]
    pools += [("replicas", d) for d in sorted(timeline["peak_replicas"])]
    for i, (key, name) in enumerate(pools):
        colour = f"C{i + 4}"
        bottom.step(t, _series(samples, key, name), where="post", color=colour,
                    label=f"{name} replicas" if key == "replicas" else f"{name} actors")
        if any(_series(samples, "waiting", name)):
            bottom.step(t, _series(samples, "waiting", name), where="post", color=colour, linestyle="--",
                        alpha=0.6, label=f"{name} (waiting)")
    for axis, label in ((top, "instances"), (bottom, "actors / replicas")):
        axis.set_ylabel(label)
        axis.yaxis.get_major_locator().set_params(integer=True)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(loc="upper right", fontsize=7)
        for e in timeline["events"]:
            axis.axvline(e["t"], color="grey", linestyle=":", linewidth=1)
    for e in timeline["events"]:
        top.annotate(e["event"], (e["t"], 1.0), xycoords=("data", "axes fraction"), rotation=90, fontsize=7,
                     va="top", ha="right", color="dimgrey")
    bottom.set_xlabel("seconds")
    top.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
