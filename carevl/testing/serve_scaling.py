"""The judge service on a `FakeCloud` under a bounded load ramp: replicas 1 -> N with GPU instances
added, one replica's instance preempted at the peak, then the load drops and replicas and instances go
back to the minimum. Every request is timed and its outcome kept, so failures and latency can be read
inside each transition.

The service is serve_configs/judge.yaml itself with what the machine cannot run swapped out (the tiny
judge on transformers in verdict mode, CPUs per replica divided by SIZE_SCALE) and its Serve
autoscaling delays divided by TIME_SCALE; every other setting, `num_gpus` and the autoscaling targets
included, is the file's (`tier_serve_config`).
"""
from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from carevl.client import AsyncJudgeClient
from carevl.config import REPO_ROOT
from carevl.testing.cluster import free_ports
from carevl.testing.fake_cloud import SIZE_SCALE, TIME_SCALE, FakeCloud, wait_until
from carevl.testing.judge_faults import _image_url
from carevl.testing.scaling_scenarios import ScenarioRun, wait_no_gpu_nodes
from carevl.testing.timeline import Timeline, pool_of

JUDGE_YAML = REPO_ROOT / "serve_configs" / "judge.yaml"
DELAY_KEYS = ("upscale_delay_s", "downscale_delay_s", "downscale_to_zero_delay_s", "look_back_period_s")
TIER_TOKEN = "autoscale-tier-judge-token"
DEPLOYMENT = "JudgeService"


def judge_app(judge_yaml: Path = JUDGE_YAML) -> tuple[dict, dict]:
    """(the serve config, its one application) of a judge serve config file."""
    doc = yaml.safe_load(judge_yaml.read_text())
    [app] = doc["applications"]
    return doc, app


def scaled_autoscaling(config: dict[str, Any]) -> dict[str, Any]:
    """An `autoscaling_config` with its delays and look-back divided by TIME_SCALE, the rest as it is."""
    return {k: v / TIME_SCALE if k in DELAY_KEYS else v for k, v in config.items()}


def tier_serve_config(port: int, judge_yaml: Path = JUDGE_YAML) -> dict[str, Any]:
    """serve_configs/judge.yaml for the fake cloud (see the module docstring for what changes)."""
    doc, app = judge_app(judge_yaml)
    args = app["args"]
    tier_args = {**args, "config": "configs/tiny.yaml", "model": "tiny:vlm_micro", "backend": "transformers",
                 "default_mode": "verdict", "num_cpus": args["num_cpus"] / SIZE_SCALE,
                 "autoscaling_config": scaled_autoscaling(args["autoscaling_config"])}
    return {**doc, "http_options": {**doc["http_options"], "host": "127.0.0.1", "port": port},
            "applications": [{**app, "args": tier_args}]}


def tier_env(judge_yaml: Path = JUDGE_YAML) -> dict[str, str]:
    """What every node needs for the service: the bearer token in the variable the file names."""
    return {judge_app(judge_yaml)[1]["args"]["api_token_env"]: TIER_TOKEN}


def replica_nodes(cloud: FakeCloud) -> list[str]:
    """Node ids of the judge's live replicas."""
    from ray.util.state import list_actors

    return [a.node_id for a in list_actors(address=cloud.dashboard, filters=[("state", "=", "ALIVE")], detail=True,
                                           limit=10_000, raise_on_missing_output=False)
            if pool_of(a.class_name or "") == ("replicas", DEPLOYMENT) and a.node_id]


def deploy(cloud: FakeCloud, folder: Path) -> str:
    """`serve deploy` the tier's judge; returns its base URL once one replica is up (on a GPU instance
    the autoscaler launched for it)."""
    (port,) = free_ports(1)
    path = folder / "judge_autoscale.yaml"
    path.write_text(yaml.safe_dump(tier_serve_config(port)))
    for attempt in range(3):  # Serve's first proxy can miss its start-up health check on a busy machine
        done = cloud.cli(["serve", "deploy", str(path), "--address", cloud.dashboard], check=attempt == 2)
        if "Sent deploy request successfully" in done:
            break
        time.sleep(5)
    wait_until(lambda: replica_nodes(cloud), "running judge replica", 600, every_s=1)
    return f"http://127.0.0.1:{port}"


@dataclass
class Load:
    """Closed-loop callers against the judge: `concurrency` of them send one request each at a time
    (with the client's retry policy) until `stop()`; `set(n)` changes how many are active. Each
    request is kept as (start, end, ok, error) on the timeline's clock."""

    base_url: str
    timeline: Timeline
    most: int
    records: list[tuple[float, float, bool, str]] = field(default_factory=list)
    concurrency: int = 0

    def __post_init__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="judge-load", daemon=True)

    def set(self, concurrency: int, label: str | None = None) -> float:
        self.concurrency = min(concurrency, self.most)
        return self.timeline.mark(label or f"load {self.concurrency}")

    async def _caller(self, client: AsyncJudgeClient, index: int) -> None:
        while not self._stop.is_set():
            if index >= self.concurrency:
                await asyncio.sleep(0.1)
                continue
            start = self.timeline.now()
            try:
                result = await client.judge(f"Which answer describes image {index}?", f"a square number {index}",
                                            "a circle", image=_image_url(index), mode="verdict")
                if result.p_a is None or not 0.0 <= result.p_a <= 1.0:
                    raise ValueError(f"p_a out of range: {result.p_a!r}")
                self.records.append((start, self.timeline.now(), True, ""))
            except Exception as exc:  # noqa: BLE001 - every failure is counted and reported
                self.records.append((start, self.timeline.now(), False, f"{type(exc).__name__}: {exc}"[:300]))

    async def _run(self) -> None:
        async with AsyncJudgeClient(self.base_url, token=TIER_TOKEN, timeout_s=120, retries=6, backoff_s=0.25,
                                    max_connections=self.most) as client:
            await asyncio.gather(*(self._caller(client, i) for i in range(self.most)))

    def start(self) -> "Load":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=300)

    def window(self, start: float, end: float) -> dict[str, Any]:
        """Requests that started in [start, end): how many, how many failed, p50/p99 latency (s)."""
        inside = [r for r in self.records if start <= r[0] < end]
        latency = [r[1] - r[0] for r in inside if r[2]]
        return {"from_s": round(start, 1), "to_s": round(end, 1), "requests": len(inside),
                "failed": sum(1 for r in inside if not r[2]),
                "p50_s": round(float(np.percentile(latency, 50)), 3) if latency else None,
                "p99_s": round(float(np.percentile(latency, 99)), 3) if latency else None}


@dataclass
class Ramp:
    """The load ramp: callers per step (each held `step_s`), the peak held until `replicas` replicas
    run; `trickle` callers while the service scales back down."""

    steps: tuple[int, ...] = (8, 48, 96, 140)
    step_s: float = 10.0
    replicas: int = 3
    trickle: int = 2


def serve_under_ramp(cloud: FakeCloud, timeline: Timeline, folder: Path, ramp: Ramp = Ramp(),
                     notice_s: float = 2.0) -> ScenarioRun:
    """(d) See the module docstring. Windows: scale-up from the first step until `ramp.replicas`
    replicas run; preemption from the notice until that many run again; scale-down from the drop to
    the trickle until one replica and one GPU instance are left."""
    run = ScenarioRun("serve_under_ramp")
    timeline.mark("deploy")
    base_url = deploy(cloud, folder)
    load = Load(base_url, timeline, most=max(ramp.steps)).start()
    try:
        up_from = load.set(ramp.steps[0])
        for n in ramp.steps[1:]:
            time.sleep(ramp.step_s)
            load.set(n)
        wait_until(lambda: len(replica_nodes(cloud)) >= ramp.replicas, f"{ramp.replicas} replicas", 600, every_s=1)
        up_to = timeline.mark(f"{ramp.replicas} replicas")
        before = set(wait_until(lambda: replica_nodes(cloud), "replica nodes", 120))
        notice = timeline.mark("preemption notice")
        victim = sorted(before)[0]   # the first instance launched: its replica has served longest
        killed = cloud.preempt(victim, notice_s=notice_s)
        timeline.mark("instance lost")
        wait_until(lambda: len(set(replica_nodes(cloud)) - before) >= 1 and len(replica_nodes(cloud)) >= ramp.replicas,
                   "replacement replica", 600, every_s=1)
        back = timeline.mark("replacement replica up")
        down_from = load.set(ramp.trickle, "load drops")
        wait_until(lambda: len(replica_nodes(cloud)) == 1 and len(cloud.gpu_nodes()) == 1,
                   "one replica on one GPU instance", 600, every_s=1)
        down_to = timeline.mark("back to the minimum")
        time.sleep(2)
    finally:
        load.stop()
    timeline.mark("load stops")
    cloud.cli(["serve", "shutdown", "-y", "--address", cloud.dashboard])
    deleted = timeline.mark("service deleted")
    wait_no_gpu_nodes(cloud)
    released = timeline.mark("no GPU instance")
    windows = {"scale_up": load.window(up_from, up_to), "preemption": load.window(notice, back),
               "scale_down": load.window(down_from, down_to)}
    run.figures = {"requests": len(load.records), "failed": sum(1 for r in load.records if not r[2]),
                   **{f"{k}_{m}": w[m] for k, w in windows.items() for m in ("requests", "failed", "p50_s", "p99_s")},
                   "peak_replicas": timeline.peak("replicas").get(DEPLOYMENT, 0),
                   "peak_gpu_instances": max((sum(n for t, n in s["nodes"].items() if t in cloud.gpu_types())
                                              for s in timeline.samples), default=0),
                   "scale_up_s": round(up_to - up_from, 1), "preemption_to_replacement_s": round(back - notice, 1),
                   "scale_down_s": round(down_to - down_from, 1),
                   "deleted_to_zero_gpu_nodes_s": round(released - deleted, 1)}
    run.details = {"windows": windows, "preempted_node": victim, "raylet_killed_at_deadline": killed is not None,
                   "errors": sorted({r[3] for r in load.records if not r[2]})[:20],
                   "serve_config": tier_serve_config(0)["applications"][0]["args"]}
    return run
