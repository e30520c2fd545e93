"""The judge service on a real three-node Ray cluster (`ray start`, token auth): a replica SIGKILLed under
load costs the client no request and Serve brings it back; 1,000 malformed or hostile bodies get the
documented 4xx and never a 5xx; the custom judge metrics reach Ray's metrics endpoint."""
from __future__ import annotations

import asyncio
import re
import time
from collections import Counter

import pytest

from carevl.testing.cluster import LocalCluster
from carevl.testing.judge_faults import (
    REPLICA,
    TOKEN,
    TOKEN_ENV,
    hostile_requests,
    load_with_replica_kill,
    running_replicas,
    send_hostile,
    start_judge,
    wait_running,
)

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def judge(tmp_path_factory, model_cache_env):
    cluster = LocalCluster(workers=2, worker_cpus=1,
                           env_extra={TOKEN_ENV: TOKEN, "RAY_metrics_report_interval_ms": "2000", **model_cache_env})
    with cluster:
        url = start_judge(cluster, tmp_path_factory.mktemp("serve"), replicas=2)
        yield cluster, url


def test_replica_killed_under_load_costs_no_request(judge):
    cluster, url = judge
    before = {p.pid for p in cluster.processes(REPLICA)}
    assert len(before) == 2
    result = asyncio.run(load_with_replica_kill(cluster, url, requests=120, concurrency=6, kill_after=30))
    assert result.killed_pid in before
    assert result.failed == [] and result.ok == result.sent == 120
    restore_s = wait_running(cluster, 2, timeout_s=180, killed_pid=result.killed_pid)
    after = {p.pid for p in cluster.processes(REPLICA)}
    assert len(after) == 2 and result.killed_pid not in after and after - before  # a new replica process
    print(f"replica kill: 120 requests, 0 failed, {result.seconds:.1f}s; 2 replicas RUNNING again "
          f"{restore_s:.1f}s after the load ended")


def test_hostile_bodies_get_the_documented_4xx(judge):
    _, url = judge
    cases = hostile_requests(1000, seed=13)
    results = asyncio.run(send_hostile(url, cases))
    assert len(results) == 1000
    server_errors = [r for r in results if r[2] >= 500]
    assert server_errors == []
    wrong = [r for r in results if (r[1], r[3]) != (r[2], r[4])]
    assert wrong == [], wrong[:5]
    by_category = Counter(r[0] for r in results)
    assert len(by_category) == 11 and min(by_category.values()) >= 90
    print("hostile bodies:", dict(Counter((r[0], r[2]) for r in results)))


def test_judge_metrics_reach_the_metrics_endpoint(judge):
    cluster, url = judge
    assert running_replicas(cluster) == 2
    wanted = {"requests": r'ray_carevl_judge_requests_total\{[^}]*status="(200|422)"',
              "batch": r"ray_carevl_judge_batch_size_bucket\{", "p_a": r"ray_carevl_judge_p_a_bucket\{"}
    found: dict[str, bool] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(found) < len(wanted):
        text = cluster.metrics_text()
        found = {k: True for k, pattern in wanted.items() if re.search(pattern, text)}
        time.sleep(2)
    assert set(found) == set(wanted), f"missing {set(wanted) - set(found)}"
    statuses = set(re.findall(r'ray_carevl_judge_requests_total\{[^}]*status="(\d+)"', cluster.metrics_text()))
    assert {"200", "401", "413", "422", "400"} <= statuses
