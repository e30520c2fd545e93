"""Curation on a real three-node Ray cluster (`ray start` head + two workers, token auth), submitted with
`ray job submit`: a worker raylet SIGKILLed, an expert actor SIGKILLed, and the driver SIGKILLed then
re-submitted each end with exactly one row per pair; the curation metrics reach Ray's metrics endpoint.
The default suite runs the three faults struck in one run (one job's start-up, a few minutes) and the
metrics test; `make test-cluster` adds each fault on its own. Timing table: benchmarks/cluster_faults.py."""
from __future__ import annotations

import re

import pytest

from carevl.testing.cluster import LocalCluster
from carevl.testing.curation_faults import FAULT_ITEMS, LIVE_GAUGE, SCENARIOS, clean_run, write_items

QUARANTINED_INVALID_JSON = re.compile(r'ray_carevl_curation_quarantined_rows_total\{[^}]*reason="invalid_json"')

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster(model_cache_env):
    with LocalCluster(workers=2, worker_cpus=1,
                      env_extra={"RAY_metrics_report_interval_ms": "2000", **model_cache_env}) as c:
        with c.watching_metrics(LIVE_GAUGE):
            yield c


@pytest.mark.parametrize("fault", ["raylet", "actor", "driver"])
def test_exactly_one_row_per_pair_after_the_fault(cluster, fault, tmp_path):
    items, expected = write_items(tmp_path, items=FAULT_ITEMS, seed=21)
    run = SCENARIOS[fault](cluster, items, tmp_path / "run", expected)
    print(f"{run.fault}: struck after {run.units_at_fault}/{run.units_total} units, {run.attempts} submission(s), "
          f"{run.rows_expected} rows expected, {run.rows_lost} lost, {run.rows_duplicated} duplicated, {run.seconds}s")
    assert 0 < run.units_at_fault < run.units_total  # the fault struck mid-run
    assert (run.rows_lost, run.rows_duplicated) == (0, 0)
    assert run.quarantined == 1  # the malformed line, once
    if fault == "driver":
        assert run.attempts == 2  # the killed submission, then the one that resumed


@pytest.mark.cluster_ci
def test_three_faults_in_one_run_leave_exactly_one_row_per_pair(cluster, tmp_path):
    items, expected = write_items(tmp_path, items=FAULT_ITEMS, seed=21)
    run = SCENARIOS["all"](cluster, items, tmp_path / "run", expected)
    print(f"{run.fault}: struck after {run.units_at_each_fault} of {run.units_total} units, {run.attempts} "
          f"submission(s), {run.rows_expected} rows expected, {run.rows_lost} lost, "
          f"{run.rows_duplicated} duplicated, {run.seconds}s")
    raylet, actor, driver = run.units_at_each_fault
    assert 0 < raylet < actor < driver < run.units_total  # each fault struck mid-run, after more work
    assert (run.rows_lost, run.rows_duplicated) == (0, 0)
    assert run.quarantined == 1
    assert run.attempts == 2


@pytest.mark.cluster_ci
def test_curation_metrics_reach_the_metrics_endpoint(cluster, tmp_path):
    text = cluster.metrics_text()  # counters stay after the drivers that counted have exited
    # Run on its own, no sample caught, or the malformed line was counted on a node or in a process the
    # fault tests killed (its count goes with it, and the finished unit is not redone): one clean job,
    # long enough to sample, that quarantines the line and exits normally.
    if not cluster.live_metrics or not QUARANTINED_INVALID_JSON.search(text):
        items, expected = write_items(tmp_path, items=FAULT_ITEMS, seed=5)
        clean_run(cluster, items, tmp_path / "run", expected)
        text = cluster.metrics_text()
    pairs = re.findall(r'ray_carevl_curation_pairs_total\{[^}]*confidence="(high|low)"[^}]*\} ([0-9.]+)', text)
    assert pairs and sum(float(v) for _, v in pairs) > 0
    assert QUARANTINED_INVALID_JSON.search(text)
    # the pairs/s gauge is a live value of a running driver: sampled while the jobs ran
    rates = [float(v) for t in cluster.live_metrics for v in re.findall(LIVE_GAUGE + r"\{[^}]*\} ([0-9.e+-]+)", t)]
    assert rates and max(rates) > 0
