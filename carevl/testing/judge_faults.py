"""The judge service on a local multi-node cluster under faults: a replica killed under load, and a
bounded stream of malformed or hostile bodies. Used by tests/cluster/test_judge_faults.py and
benchmarks/cluster_faults.py. All traffic goes to 127.0.0.1 and every loop is bounded.
"""
from __future__ import annotations

import asyncio
import base64
import io
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml
from PIL import Image

from carevl.client import AsyncJudgeClient
from carevl.testing.cluster import LocalCluster, free_ports

TOKEN_ENV = "CAREVL_FAULT_JUDGE_TOKEN"
TOKEN = "fault-test-token-7c1e"
LIMITS = {"max_body_bytes": 1_000_000, "max_image_bytes": 200_000, "max_image_pixels": 1_000_000,
          "max_question_chars": 2_000, "max_response_chars": 2_000, "max_batch_items": 4, "max_candidates": 4}
REPLICA = "ServeReplica:judge:JudgeService"


def serve_config(port: int, replicas: int = 2) -> dict:
    return {"proxy_location": "HeadOnly", "http_options": {"host": "127.0.0.1", "port": port},
            "applications": [{"name": "judge", "route_prefix": "/", "import_path": "carevl.serving.app:build_app",
                              "args": {"config": "configs/tiny.yaml", "model": "tiny:vlm_micro",
                                       "default_mode": "verdict", "max_batch_size": 16, "batch_wait_timeout_s": 0.01,
                                       "max_new_tokens": 6, "num_replicas": replicas, "num_cpus": 0.5,
                                       "max_ongoing_requests": 32, "api_token_env": TOKEN_ENV, "limits": LIMITS}}]}


def start_judge(cluster: LocalCluster, folder: Path, replicas: int = 2, timeout_s: float = 300) -> str:
    """`serve deploy` the judge onto `cluster`; returns its base URL once every replica is RUNNING."""
    (port,) = free_ports(1)
    path = folder / "judge_faults.yaml"
    path.write_text(yaml.safe_dump(serve_config(port, replicas)))
    for attempt in range(3):
        # On a busy machine Serve's first proxy can miss its start-up health check, which fails the
        # deploy call; the controller is up by then and a second call goes through.
        done = cluster.cli(["serve", "deploy", str(path), "--address", cluster.dashboard], check=attempt == 2)
        if "Sent deploy request successfully" in done:
            break
        time.sleep(5)
    wait_running(cluster, replicas, timeout_s)
    return f"http://127.0.0.1:{port}"


def running_replicas(cluster: LocalCluster) -> int:
    status = yaml.safe_load(cluster.cli(["serve", "status", "--address", cluster.dashboard], check=False)) or {}
    app = (status.get("applications") or {}).get("judge") or {}
    deployment = (app.get("deployments") or {}).get("JudgeService") or {}
    return int((deployment.get("replica_states") or {}).get("RUNNING", 0))


def wait_running(cluster: LocalCluster, replicas: int, timeout_s: float, killed_pid: int | None = None) -> float:
    """Seconds until `replicas` replicas are RUNNING (TimeoutError after `timeout_s`). After a replica
    was killed (`killed_pid`), also until that many replica processes other than it are up: Serve
    counts the dead replica as RUNNING until its health check or the actor's death reaches the
    controller, so its status alone can report 2 while only 1 is left."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        live = {p.pid for p in cluster.processes(REPLICA)} - {killed_pid}
        if running_replicas(cluster) >= replicas and (killed_pid is None or len(live) >= replicas):
            return time.monotonic() - start
        time.sleep(1)
    raise TimeoutError(f"{replicas} judge replicas not RUNNING after {timeout_s}s")


def _image_url(seed: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 24), ((seed * 37) % 256, (seed * 91) % 256, 90)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@dataclass
class LoadResult:
    sent: int = 0
    ok: int = 0
    failed: list = field(default_factory=list)
    killed_pid: int | None = None
    seconds: float = 0.0


async def load_with_replica_kill(cluster: LocalCluster, base_url: str, requests: int, concurrency: int,
                                 kill_after: int | None) -> LoadResult:
    """`requests` judge calls from `concurrency` callers with the client's retries; after `kill_after`
    answers one replica process is SIGKILLed."""
    result = LoadResult()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    start = time.monotonic()

    async def caller(client: AsyncJudgeClient) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            result.sent += 1
            try:
                r = await client.judge(f"Which answer describes image {i}?", f"a square number {i}", "a circle",
                                       image=_image_url(i), mode="verdict", swap_check=i % 3 == 0)
                if r.p_a is None or not 0.0 <= r.p_a <= 1.0:
                    raise ValueError(f"p_a out of range: {r.p_a!r}")
                result.ok += 1
            except Exception as exc:  # noqa: BLE001 - every failure is counted and reported
                result.failed.append(f"{i}: {type(exc).__name__}: {exc}")
            if kill_after is not None and result.killed_pid is None and result.ok >= kill_after:
                [victim, *_] = cluster.processes(REPLICA)
                result.killed_pid = victim.pid
                victim.kill()

    async with AsyncJudgeClient(base_url, token=TOKEN, timeout_s=60, retries=6, backoff_s=0.25) as client:
        await asyncio.gather(*(caller(client) for _ in range(concurrency)))
    result.seconds = time.monotonic() - start
    return result


def bomb_png(side: int = 8000) -> str:
    """A decompression bomb: a 1-bit PNG of side x side pixels that compresses to a few kilobytes."""
    buffer = io.BytesIO()
    Image.new("1", (side, side), 0).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _random_json(rng: random.Random, depth: int = 0):
    kind = rng.choice(["dict", "list", "str", "int", "float", "bool", "null"] if depth < 3 else ["str", "int", "null"])
    if kind == "dict":
        return {rng.choice(["question", "x", "mode", "responses", "image", "🙂"]): _random_json(rng, depth + 1)
                for _ in range(rng.randint(0, 4))}
    if kind == "list":
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {"str": lambda: "".join(rng.choice("ab\u0000\"{}<>\\\n") for _ in range(rng.randint(0, 20))),
            "int": lambda: rng.randint(-2**63, 2**63), "float": lambda: rng.uniform(-1e308, 1e308),
            "bool": lambda: rng.random() < 0.5, "null": lambda: None}[kind]()


def hostile_requests(n: int, seed: int = 0) -> list[tuple[str, dict, bytes, int, str]]:
    """`n` (category, headers, body, expected status, expected error code) cases, cycling categories."""
    rng = random.Random(seed)
    auth = {"authorization": f"Bearer {TOKEN}", "content-type": "application/json"}
    good = {"question": "What is shown?", "response_a": "a cat", "response_b": "a dog"}
    bomb = bomb_png()

    def body(**fields) -> bytes:
        return json.dumps({**good, **fields}).encode()

    makers = [
        ("random_json", lambda: (auth, json.dumps(_random_json(rng)).encode(), 422, "invalid_request")),
        ("broken_json", lambda: (auth, json.dumps(good).encode()[:rng.randint(1, 40)], 422, "invalid_request")),
        ("wrong_types", lambda: (auth, body(**rng.choice([{"question": 7}, {"response_a": ["a"]}, {"mode": "loud"},
                                                          {"swap_check": {"x": 1}}, {"image": 12}])),
                                 422, "invalid_request")),
        ("missing_field", lambda: (auth, json.dumps({"question": "q", "response_a": "a"}).encode(), 422, "invalid_request")),
        ("huge_string", lambda: (auth, body(question="x" * rng.randint(2_001, 50_000)), 422, "invalid_request")),
        ("huge_body", lambda: (auth, body(response_b="y" * 1_200_000), 413, "body_too_large")),
        ("bad_base64_image", lambda: (auth, body(image="data:image/png;base64,@@not*base64@@"), 400, "image_undecodable")),
        ("not_an_image", lambda: (auth, body(image=base64.b64encode(rng.randbytes(300)).decode()), 400, "image_undecodable")),
        ("decompression_bomb", lambda: (auth, body(image=bomb), 413, "image_too_many_pixels")),
        ("control_token", lambda: (auth, body(**{rng.choice(["question", "response_a", "response_b"]): "see <image> here"}),
                                   422, "reserved_token")),
        ("no_token", lambda: ({"content-type": "application/json"}, body(), 401, "unauthorized")),
    ]
    cases = []
    for i in range(n):
        category, make = makers[i % len(makers)]
        headers, payload, status, error = make()
        cases.append((category, headers, payload, status, error))
    return cases


async def send_hostile(base_url: str, cases, concurrency: int = 8) -> list[tuple[str, int, int, str, str]]:
    """(category, expected status, got status, expected error, got error) per case."""
    results = []
    queue: asyncio.Queue = asyncio.Queue()
    for case in cases:
        queue.put_nowait(case)

    async def worker(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            category, headers, payload, status, error = queue.get_nowait()
            response = await http.post("/v1/judge", content=payload, headers=headers)
            try:
                got_error = response.json().get("error", "")
            except ValueError:
                got_error = response.text[:80]
            results.append((category, status, response.status_code, error, got_error))

    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
    return results
