"""A GPU cloud on one machine, built from cluster.yaml: Ray's own autoscaler (v2, the KubeRay default,
or v1, the `ray up` default) launches "instances" of cluster.yaml's worker node types through Ray's
fake multi-node provider. Each instance is one more raylet on this machine whose GPUs are logical
resources only, so code under test must pick its device from `torch.cuda.is_available()`.

What is kept from cluster.yaml and what is scaled (one factor each, stated here):

- node types: the same names, the same GPU counts and min counts; CPUs divided by `SIZE_SCALE`; at
  most `MAX_NODES_PER_TYPE` of a type and `MAX_WORKERS` in all (each instance costs a raylet and its
  agents on a 2-core machine); a small object store each. Memory is not scaled: the fake provider
  cannot set an instance's `memory` resource (Ray refuses it as a custom resource), so every
  instance advertises this machine's;
- time: cluster.yaml's idle timeout, the Serve autoscaling delays of serve_configs/judge.yaml and
  Ray's own timers that decide when capacity is let go (`RAY_TIMERS`) divided by `TIME_SCALE`;
  `upscaling_speed` is kept.

The head is cluster.yaml's head (no CPU, no GPU: only the GCS, the dashboard and job drivers) started
with `ray start --head --autoscaling-config=...` like `LocalCluster`'s: its own free ports, temp dir
and token, so it runs beside any other Ray on the machine, and `stop()` kills only its own processes
(found by the marker every process of this cluster inherits, fake instances included). Ray's
`AutoscalingCluster` is not used: its start and stop run `ray stop --force`, which kills every Ray
process on the machine, its GCS is fixed on port 6379, and it reads the provider's example.yaml, which
the pip wheel does not ship. The provider is named as an `external` module for the same reason (the
`fake_multinode` type also reads that file for its defaults), and it is Ray's with one change: each
instance gets a temp directory of its own under the cloud's, as a real instance has its own disk
(`carevl.testing.fake_provider` says what goes wrong when they share the head's).
"""
from __future__ import annotations

import json
import math
import os
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID, FAKE_HEAD_NODE_TYPE

from carevl.config import REPO_ROOT
from carevl.planning.nodes import read_cluster_yaml
from carevl.testing.cluster import LocalCluster

T = TypeVar("T")
CLUSTER_YAML = REPO_ROOT / "cluster.yaml"
PROVIDER = "carevl.testing.fake_provider.OwnDiskFakeProvider"   # Ray's fake provider, a temp dir per instance
# The type name and node id the fake provider gives its head (autoscaler v2 matches the head by the id).
HEAD_TYPE, FAKE_HEAD_ID = FAKE_HEAD_NODE_TYPE, FAKE_HEAD_NODE_ID

TIME_SCALE = 60.0           # a minute of the cluster's delays is a second here
SIZE_SCALE = 16.0           # CPUs of an instance type (and of a replica), divided
MAX_NODES_PER_TYPE = 3
MAX_WORKERS = 4
OBJECT_STORE_BYTES = 256 * 2**20   # per instance (Ray's default is 30% of the machine's RAM each)
HEAD_OBJECT_STORE_BYTES = 512 * 2**20

# Ray 2.60 defaults (seconds) that decide how fast capacity is let go; divided by TIME_SCALE in the
# fake cloud's environment. tests/autoscale checks them against Ray's own constants.
RAY_TIMERS = {
    "RAY_SERVE_PROXY_MIN_DRAINING_PERIOD_S": 30.0,                 # a worker node's proxy drains
    "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": 10.0,  # replica load reports
    "RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S": 10.0,   # handle (proxy) load reports
    "RAY_DATA_AUTOSCALING_REQUEST_EXPIRE_TIME_S": 180,             # Ray Data's resource request expires
    "RAY_DATA_LOW_UTIL_REQUEST_RELEASE_DELAY_S": 180.0,            # ... and is released at low use
    "RAY_TRAIN_PREEMPTION_POLL_INTERVAL_S": 5.0,                   # Ray Train looks for draining nodes
}
AUTOSCALER_UPDATE_INTERVAL_S = 1   # the monitor's loop (5 s by default; an integer): Ray's own tests use 1


def scaled_timers() -> dict[str, str]:
    """RAY_TIMERS divided by TIME_SCALE, as environment values (integers stay integers, at least 1)."""
    out = {}
    for name, default in RAY_TIMERS.items():
        value = default / TIME_SCALE
        out[name] = str(max(1, round(value))) if isinstance(default, int) else f"{value:.3g}"
    return out


def scaled_node_type(node: dict) -> dict[str, Any]:
    """One cluster.yaml worker type as a fake instance type: its GPUs and min count kept."""
    resources = node.get("resources", {})
    scaled: dict[str, Any] = {"CPU": max(1, math.ceil(resources.get("CPU", 0) / SIZE_SCALE)),
                              "object_store_memory": OBJECT_STORE_BYTES}
    if resources.get("GPU"):
        scaled["GPU"] = int(resources["GPU"])
    high = min(int(node.get("max_workers", 0)), MAX_NODES_PER_TYPE)
    return {"resources": scaled, "node_config": {}, "min_workers": min(int(node.get("min_workers", 0)), high),
            "max_workers": high}


def fake_node_types(cluster: dict) -> dict[str, dict]:
    """The worker types of a cluster launcher config, by the same names, scaled for this machine."""
    head = cluster["head_node_type"]
    return {name: scaled_node_type(node) for name, node in cluster["available_node_types"].items() if name != head}


def autoscaling_config(cluster: dict, gcs_address: str, autoscaler_v2: bool, instance_temp_root: str) -> dict[str, Any]:
    """The autoscaler's config of the fake cloud: cluster.yaml's node types, idle timeout and
    upscaling speed (scaled as stated above), and the fake provider in place of the cloud's, which
    gives each instance a temp directory under `instance_temp_root` (`carevl.testing.fake_provider`)."""
    head = cluster["available_node_types"][cluster["head_node_type"]]
    provider = {"type": "external", "module": PROVIDER, "gcs_address": gcs_address, "use_node_id_as_ip": True,
                "disable_node_updaters": True, "disable_launch_config_check": True,
                "instance_temp_root": instance_temp_root}
    if autoscaler_v2:
        provider.update(launch_multiple=True, head_node_id=FAKE_HEAD_ID)
    types = fake_node_types(cluster)
    return {
        "cluster_name": f"{cluster['cluster_name']}-fake",
        "max_workers": min(int(cluster["max_workers"]), MAX_WORKERS),
        "upscaling_speed": cluster["upscaling_speed"],
        "idle_timeout_minutes": cluster["idle_timeout_minutes"] / TIME_SCALE,
        "provider": provider,
        "head_node_type": HEAD_TYPE,
        "available_node_types": {
            HEAD_TYPE: {"resources": {k: v for k, v in head.get("resources", {}).items() if v},
                        "node_config": {}, "max_workers": 0},
            **types},
        "auth": {}, "docker": {}, "file_mounts": {}, "cluster_synced_files": [],
        "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
        **{k: [] for k in ("initialization_commands", "setup_commands", "head_setup_commands",
                           "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands")},
    }


BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"   # where `ray up` leaves the autoscaler's config on the head
HEAD_GCS = "127.0.0.1:6379"


def publish_command(cluster: dict, config_path: Path, gcs_address: str) -> str:
    """cluster.yaml's head start command that publishes the autoscaler's node types, with this
    cloud's config file and GCS in place of the head's bootstrap config and port 6379."""
    found = [c for c in cluster["head_start_ray_commands"] if "publish_node_types" in c]
    if len(found) != 1 or BOOTSTRAP_CONFIG not in found[0] or HEAD_GCS not in found[0]:
        raise ValueError(f"cluster.yaml: expected one head command publishing {BOOTSTRAP_CONFIG} to {HEAD_GCS}")
    return found[0].replace(BOOTSTRAP_CONFIG, str(config_path)).replace(HEAD_GCS, gcs_address)


def new_token(path: Path) -> Path:
    """A fresh Ray auth token at `path` (owner-only), for a cluster that must not share ~/.ray's."""
    from ray._private.authentication.authentication_token_generator import generate_new_authentication_token

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(generate_new_authentication_token())
    return path


def transient_errors() -> tuple[type[BaseException], ...]:
    """What a busy GCS or dashboard answers now and then (a timed-out RPC or state query): ask again."""
    from ray.exceptions import RpcError
    from ray.util.state.exception import RayStateApiException

    return ConnectionError, TimeoutError, RuntimeError, RpcError, RayStateApiException


def tolerant(probe: Callable[[], T]) -> Callable[[], T | None]:
    """`probe`, answering None instead of raising a transient error."""
    def call() -> T | None:
        try:
            return probe()
        except transient_errors():
            return None
    return call


def wait_until(probe: Callable[[], T], what: str, timeout_s: float, every_s: float = 0.5) -> T:
    """Poll `probe` until it returns something truthy (returned); TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout_s
    probe = tolerant(probe)
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {timeout_s:.0f}s")
        time.sleep(every_s)


@dataclass
class FakeCloud(LocalCluster):
    """An autoscaling cluster from cluster.yaml with no worker at the start (`workers` stays 0).

    `client_env()` is what a process outside the cluster needs in its environment to talk to it
    (token authentication on); the `ray` CLIs this class calls get it already, and `start()` puts it
    into this process (Ray reads it once per process: one token per process).
    """

    autoscaler: str = "v2"
    cluster_yaml: Path = CLUSTER_YAML
    token_path: Path | None = None
    workers: int = 0
    config: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.autoscaler not in ("v1", "v2"):
            raise ValueError(f"autoscaler must be v1 or v2, not {self.autoscaler!r}")
        super().__post_init__()
        self.token_path = Path(self.token_path or Path(self.root) / "auth_token")
        self.cluster = cluster = read_cluster_yaml(self.cluster_yaml)
        self.head_resources = cluster["available_node_types"][cluster["head_node_type"]].get("resources", {})
        self.config = autoscaling_config(cluster, self.address, self.autoscaler == "v2",
                                         os.path.join(self.root, "instances"))
        self.env.update(self.client_env(), RAY_FAKE_CLUSTER="1", **scaled_timers(),
                        AUTOSCALER_UPDATE_INTERVAL_S=str(AUTOSCALER_UPDATE_INTERVAL_S),
                        RAY_enable_autoscaler_v2="1" if self.autoscaler == "v2" else "0")
        if self.autoscaler == "v2":
            self.env["RAY_CLOUD_INSTANCE_ID"] = FAKE_HEAD_ID   # fake instances override it with their own

    def client_env(self) -> dict[str, str]:
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_path)}

    def authenticate_this_process(self) -> None:
        """Token authentication on in this process, with this cloud's token, for the GCS and state API
        calls below (Ray caches the mode and the token when it is imported)."""
        from ray._private.authentication_test_utils import reset_auth_token_state

        os.environ.update(self.client_env())
        reset_auth_token_state()

    def start(self) -> "FakeCloud":
        try:
            if not self.token_path.is_file():
                new_token(self.token_path)
            self.authenticate_this_process()
            config_path = Path(self.root) / "autoscaling.json"
            config_path.write_text(json.dumps(self.config, indent=1))
            res = self.head_resources
            self._ray_start(["--head", f"--port={self.gcs_port}", f"--num-cpus={res.get('CPU', 0):g}",
                             f"--num-gpus={res.get('GPU', 0):g}", f"--object-store-memory={HEAD_OBJECT_STORE_BYTES}",
                             f"--dashboard-port={self.dashboard_port}", "--dashboard-host=127.0.0.1",
                             "--include-dashboard=true", f"--ray-client-server-port={self.client_port}",
                             f"--autoscaling-config={config_path}"], "head", dict(res))
            self.wait_for_nodes(1)
            # cluster.yaml's own head command that tells jobs the node types the autoscaler may launch,
            # pointed at this head's config and GCS.
            self.cli(["bash", "-c", publish_command(self.cluster, config_path, self.address)])
        except BaseException:
            self.stop()
            raise
        return self

    # ------------------------------------------------------------------ what the autoscaler sees

    def status(self):
        """The autoscaler's view (`ray.autoscaler.v2.sdk.ClusterStatus`; node states come from the
        GCS under v1 too)."""
        from ray.autoscaler.v2.sdk import get_cluster_status

        return get_cluster_status(self.address, timeout=30)

    def worker_nodes(self, status=None) -> list:
        """Live (running, idle or draining) instances, the head left out."""
        status = status or self.status()
        return [n for n in status.active_nodes + status.idle_nodes if n.ray_node_type_name in self.types()]

    def nodes_by_type(self, status=None) -> Counter:
        return Counter(n.ray_node_type_name for n in self.worker_nodes(status))

    def gpu_nodes(self, status=None) -> list:
        return [n for n in self.worker_nodes(status) if n.ray_node_type_name in self.gpu_types()]

    def types(self) -> dict[str, dict]:
        """The worker instance types (scaled), by cluster.yaml's names."""
        return {k: v for k, v in self.config["available_node_types"].items() if k != HEAD_TYPE}

    def gpu_types(self) -> set[str]:
        return {name for name, t in self.types().items() if t["resources"].get("GPU")}

    # ------------------------------------------------------------------ spot preemption

    def preempt(self, node_id: str, notice_s: float = 2.0, reason: str = "spot instance reclaimed") -> int | None:
        """What a cloud does to a spot instance: a preemption notice (the node drained with reason
        PREEMPTION and a deadline `notice_s` ahead, as a 2-minute warning is), then the instance is
        gone at the deadline (its raylet SIGKILLed, its workers die with it). Returns the raylet's pid,
        None when the node had already stopped by the deadline."""
        from ray._raylet import GcsClient
        from ray.core.generated import autoscaler_pb2

        deadline_ms = int((time.time() + notice_s) * 1000)
        accepted, why = GcsClient(address=self.address).drain_node(
            node_id, autoscaler_pb2.DrainNodeReason.Value("DRAIN_NODE_REASON_PREEMPTION"), reason, deadline_ms)
        if not accepted:
            raise RuntimeError(f"drain of node {node_id} refused: {why}")
        time.sleep(notice_s)
        for raylet in self.processes(f"--node_id={node_id}"):
            if "raylet" in raylet.name():
                raylet.send_signal(signal.SIGKILL)
                return raylet.pid
        return None
