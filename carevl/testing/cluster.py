"""A real multi-node Ray cluster on one machine: `ray start --head`, then `ray start --address` for each
worker node, each node with its own ports, temp dir and resources; token authentication on.

Every process the cluster starts carries a marker in its environment, so `stop()` (and the fault
helpers) find and kill exactly this cluster's processes by pid, never another Ray on the machine.
The nodes run the code of this repository checkout (its root is their PYTHONPATH, the working
directory of the CLI calls, and what `ray job submit` uploads). Used by the fault tests in tests/ and
by benchmarks/cluster_faults.py.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import httpx
import psutil

from carevl.config import REPO_ROOT

MARKER_ENV = "CAREVL_TEST_CLUSTER"


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@dataclass
class Node:
    name: str
    temp_dir: str
    metrics_port: int
    node_manager_port: int
    resources: dict


@dataclass
class LocalCluster:
    """Head (no CPUs: only the GCS, dashboard and drivers) plus `workers` nodes of `worker_cpus` each."""

    workers: int = 2
    worker_cpus: float = 1.0
    head_cpus: float = 0.0
    env_extra: dict = field(default_factory=dict)
    marker: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    nodes: list[Node] = field(default_factory=list)
    live_metrics: list[str] = field(default_factory=list)  # see sample_metrics
    root: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="cvc", dir="/tmp"))

    def __post_init__(self):
        self.gcs_port, self.dashboard_port, self.client_port = free_ports(3)
        self.env = {**os.environ, MARKER_ENV: self.marker, "RAY_AUTH_MODE": "token", "HF_HUB_OFFLINE": "1",
                    "RAY_DEDUP_LOGS": "0", "PYTHONPATH": str(REPO_ROOT), **self.env_extra}
        self.env.pop("RAY_ADDRESS", None)
        self.env["RAY_TMPDIR"] = self.root

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _node_ports(self) -> list[str]:
        manager, objects, agent, agent_grpc, runtime_env, metrics = free_ports(6)
        lo = 20000 + (manager % 200) * 200  # a private range of worker ports per node
        self._last = (manager, metrics)
        return [f"--node-manager-port={manager}", f"--object-manager-port={objects}",
                f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
                f"--runtime-env-agent-port={runtime_env}", f"--metrics-export-port={metrics}",
                f"--min-worker-port={lo}", f"--max-worker-port={lo + 199}"]

    def _ray_start(self, args: list[str], name: str, resources: dict, attempts: int = 3) -> None:
        """`ray start` one node. `ray start` gives a raylet 30 s to register, which a machine busy with
        other work can miss: the half-started node is then killed and started again on fresh ports."""
        for attempt in range(attempts):
            temp_dir = os.path.join(self.root, f"{name}.{attempt}")
            os.makedirs(temp_dir, exist_ok=True)
            cmd = ["ray", "start", *args, *self._node_ports(), f"--temp-dir={temp_dir}", "--disable-usage-stats"]
            done = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=300)
            if done.returncode == 0:
                manager, metrics = self._last
                self.nodes.append(Node(name, temp_dir, metrics, manager, resources))
                return
            for proc in self.processes(temp_dir):
                proc.kill()
        raise RuntimeError(f"{' '.join(cmd)} failed {attempts} times:\n{done.stdout}\n{done.stderr[-3000:]}")

    def start(self) -> "LocalCluster":
        try:
            self._ray_start(["--head", f"--port={self.gcs_port}", f"--num-cpus={self.head_cpus:g}", "--num-gpus=0",
                             f"--dashboard-port={self.dashboard_port}", "--dashboard-host=127.0.0.1",
                             "--include-dashboard=true", f"--ray-client-server-port={self.client_port}"],
                            "head", {"CPU": self.head_cpus})
            for i in range(self.workers):
                self.add_worker(f"worker{i}")
            self.wait_for_nodes(1 + self.workers)
        except BaseException:
            self.stop()
            raise
        return self

    def add_worker(self, name: str) -> Node:
        self._ray_start([f"--address={self.address}", f"--num-cpus={self.worker_cpus:g}", "--num-gpus=0"],
                        name, {"CPU": self.worker_cpus})
        return self.nodes[-1]

    def processes(self, name_part: str | None = None) -> list[psutil.Process]:
        """This cluster's processes (optionally those whose command line contains `name_part`)."""
        found = []
        for proc in psutil.process_iter(["pid", "cmdline"]):
            try:
                if proc.pid == os.getpid() or proc.environ().get(MARKER_ENV) != self.marker:
                    continue
                if name_part is None or name_part in " ".join(proc.info["cmdline"] or []):
                    found.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return found

    def raylet(self, node: Node) -> psutil.Process:
        [proc] = [p for p in self.processes("raylet") if f"--node_manager_port={node.node_manager_port}"
                  in " ".join(p.cmdline())]
        return proc

    def node_of(self, pid: int) -> Node | None:
        """The node whose raylet started process `pid` (a worker process descends from its raylet)."""
        try:
            lines = [" ".join(p.cmdline()) for p in psutil.Process(pid).parents()]
        except psutil.Error:
            return None
        return next((n for n in self.nodes for line in lines
                     if f"--node_manager_port={n.node_manager_port}" in line), None)

    def kill_pid(self, pid: int) -> None:
        """SIGKILL `pid`, after checking that it is one of this cluster's processes."""
        proc = psutil.Process(pid)
        if proc.environ().get(MARKER_ENV) != self.marker:
            raise RuntimeError(f"pid {pid} is not a process of this cluster")
        proc.kill()

    def kill_node(self, node: Node) -> int:
        """SIGKILL the raylet of `node` (its workers then die with it); returns the raylet's pid."""
        raylet = self.raylet(node)
        raylet.send_signal(signal.SIGKILL)
        return raylet.pid

    def state(self, resource: str, *filters: str, detail: bool = False) -> list[dict]:
        """Rows of `ray list <resource>` (Ray's state API through the dashboard), e.g. filters
        ("state=ALIVE",); RuntimeError when the dashboard does not answer."""
        cmd = ["ray", "list", resource, "--address", self.dashboard, "--format", "json", "--limit", "1000"]
        for f in filters:
            cmd += ["--filter", f]
        try:
            done = subprocess.run(cmd + (["--detail"] if detail else []), env=self.env, cwd=REPO_ROOT,
                                  capture_output=True, text=True, timeout=120)
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)} -> {done.returncode}\n{done.stderr[-3000:]}")
            return [] if done.stdout.startswith("No resource") else json.loads(done.stdout)
        except (subprocess.TimeoutExpired, ValueError) as exc:
            raise RuntimeError(f"{' '.join(cmd)}: {exc}") from exc

    def alive_nodes(self) -> int:
        return sum(1 for n in self.state("nodes") if n.get("state") == "ALIVE")

    def actor_pids(self, name_part: str) -> list[int]:
        """Pids of the ALIVE actors whose class or repr contains `name_part` (the actors of a Ray Data
        pool are `_MapWorker`s shown as e.g. "MapWorker(MapBatches(ExpertScorer))")."""
        return [int(a["pid"]) for a in self.state("actors", "state=ALIVE", detail=True)
                if a.get("pid") and name_part in f"{a.get('class_name')} {a.get('repr_name')}"]

    def driver_pid(self, submission_id: str) -> int | None:
        """Pid of the driver process of a `ray job submit` job, once it has connected to the cluster."""
        for job in self.state("jobs", detail=True):
            if job.get("submission_id") == submission_id:
                pid = (job.get("driver_info") or {}).get("pid")
                return int(pid) if pid else None
        return None

    def wait_for_nodes(self, n: int, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if self.alive_nodes() >= n:
                    return
            except RuntimeError:
                pass
            time.sleep(1)
        raise TimeoutError(f"{n} nodes not alive after {timeout_s}s")

    def cli(self, cmd: list[str], timeout_s: float = 300, check: bool = True) -> str:
        done = subprocess.run(cmd, env=self.env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout_s)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} -> {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done.stdout + done.stderr

    def metrics_text(self) -> str:
        """The Prometheus text of every node's metrics agent, concatenated."""
        texts = []
        for node in self.nodes:
            try:
                texts.append(httpx.get(f"http://127.0.0.1:{node.metrics_port}/metrics", timeout=10).text)
            except httpx.HTTPError:
                continue
        return "\n".join(texts)

    def sample_metrics(self, wanted: str) -> None:
        """Keep the metrics text (the last three) when it holds a sample of `wanted`. A gauge is a live
        value: Ray's agent drops it a few report intervals after the process that set it exits, so a
        driver's gauge can only be seen while its job runs."""
        text = self.metrics_text()
        if f"{wanted}{{" in text:
            self.live_metrics = [*self.live_metrics[-2:], text]

    @contextmanager
    def watching_metrics(self, wanted: str, every_s: float = 1.0) -> Iterator[None]:
        """Sample the metrics for `wanted` every `every_s` in a background thread while the block runs,
        so a driver's live gauge is caught however briefly the job writes (polling between job-status
        calls, which take seconds on a busy machine, can miss a short job)."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(every_s):
                try:
                    self.sample_metrics(wanted)
                except Exception:  # a node going away mid-read: the next round reads the others
                    continue

        thread = threading.Thread(target=loop, name="metrics-sampler", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=30)

    def stop(self) -> None:
        # Rounds until none is left: a dying raylet or agent may still start a child for a moment.
        for _ in range(10):
            procs = self.processes()
            if not procs:
                break
            for proc in procs:
                try:
                    proc.kill()
                except psutil.NoSuchProcess:
                    pass
            psutil.wait_procs(procs, timeout=10)
            time.sleep(1)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
