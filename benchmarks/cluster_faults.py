"""Faults on a real multi-node Ray cluster on this machine (head + worker nodes started with `ray start`,
token auth on), measured against a clean run in the same cluster.

    python benchmarks/cluster_faults.py [--items 24] [--runs 2] [--workers 2] [--judge-requests 300]
                                        [--hostile 1000] [--output runs/bench/cluster_faults]

Curation: one clean run, then `--runs` runs per fault (worker raylet SIGKILL, expert actor SIGKILL,
driver SIGKILL + `ray job submit` again), each reporting submissions, rows lost, rows duplicated and
the seconds it took beyond the clean run. Judge service: a replica SIGKILLed under a bounded load
(failed requests, seconds until Serve runs both replicas again) and `--hostile` malformed bodies (5xx
count, answers other than the documented 4xx). Writes table.md and results.json to --output.
Everything runs at low priority (nice 10); all traffic stays on 127.0.0.1.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

from carevl.config import load_config
from carevl.kit.tiny import EXPERT_ROLES, build_tiny_models
from carevl.testing.cluster import LocalCluster
from carevl.testing.curation_faults import FAULT_ITEMS, SCENARIOS, clean_run, write_items
from carevl.testing.judge_faults import (
    TOKEN,
    TOKEN_ENV,
    hostile_requests,
    load_with_replica_kill,
    send_hostile,
    start_judge,
    wait_running,
)


def curation_table(cluster: LocalCluster, items: int, runs: int, scratch: Path) -> list[dict]:
    """Run i of the baseline and run i of every fault curate the same items (seed 200 + i), so extra
    seconds compare like with like."""
    rows = []
    clean = []
    for i in range(max(1, runs)):
        folder = scratch / f"clean{i}"
        folder.mkdir()
        path, expected = write_items(folder, items, seed=200 + i)
        clean.append(clean_run(cluster, path, folder / "run", expected))
    base = statistics.mean(r.seconds for r in clean)
    rows.append({"fault": "none (baseline)", "runs": len(clean), "submissions": sum(r.attempts for r in clean),
                 "rows_expected": sum(r.rows_expected for r in clean), "rows_lost": sum(r.rows_lost for r in clean),
                 "rows_duplicated": sum(r.rows_duplicated for r in clean), "seconds_mean": round(base, 1),
                 "extra_seconds_mean": 0.0})
    for name, scenario in SCENARIOS.items():
        results = []
        for i in range(runs):
            folder = scratch / f"{name}{i}"
            folder.mkdir()
            path, expected = write_items(folder, items, seed=200 + i)
            results.append(scenario(cluster, path, folder / "run", expected))
            print(f"  {results[-1].as_row()}", flush=True)
        mean = statistics.mean(r.seconds for r in results)
        rows.append({"fault": results[0].fault, "runs": runs, "submissions": sum(r.attempts for r in results),
                     "rows_expected": sum(r.rows_expected for r in results),
                     "rows_lost": sum(r.rows_lost for r in results),
                     "rows_duplicated": sum(r.rows_duplicated for r in results),
                     "seconds_mean": round(mean, 1), "extra_seconds_mean": round(mean - base, 1),
                     "units_at_fault": [f"{r.units_at_fault}/{r.units_total}" for r in results]})
    return rows


def judge_table(cluster: LocalCluster, requests: int, hostile: int, scratch: Path) -> dict:
    url = start_judge(cluster, scratch, replicas=2)
    load = asyncio.run(load_with_replica_kill(cluster, url, requests=requests, concurrency=8,
                                              kill_after=requests // 4))
    restore = wait_running(cluster, 2, timeout_s=300, killed_pid=load.killed_pid)
    results = asyncio.run(send_hostile(url, hostile_requests(hostile, seed=1)))
    return {"replica_kill": {"requests": load.sent, "ok": load.ok, "failed": len(load.failed),
                             "load_seconds": round(load.seconds, 1), "replicas_back_after_s": round(restore, 1),
                             "failures": load.failed[:5]},
            "hostile": {"bodies": len(results), "5xx": sum(1 for r in results if r[2] >= 500),
                        "not_documented_4xx": sum(1 for r in results if (r[1], r[3]) != (r[2], r[4])),
                        "by_category_status": {f"{c} -> {s}": n for (c, s), n in
                                               sorted(Counter((r[0], r[2]) for r in results).items())}}}


def render(curation: list[dict], judge: dict | None) -> str:
    lines = ["| fault | runs | struck after units | submissions | rows expected | rows lost | rows duplicated "
             "| seconds (mean) | extra seconds (mean) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in curation:
        lines.append(f"| {r['fault']} | {r['runs']} | {', '.join(r.get('units_at_fault', ['-']))} "
                     f"| {r['submissions']} | {r['rows_expected']} | {r['rows_lost']} "
                     f"| {r['rows_duplicated']} | {r['seconds_mean']} | {r['extra_seconds_mean']} |")
    if judge:
        k, h = judge["replica_kill"], judge["hostile"]
        lines += ["", "| judge fault | requests | failed | seconds | replicas back after |", "|---|---|---|---|---|",
                  f"| replica SIGKILL under load | {k['requests']} | {k['failed']} | {k['load_seconds']} "
                  f"| {k['replicas_back_after_s']} s |", "",
                  f"Hostile bodies: {h['bodies']} sent, {h['5xx']} answered 5xx, "
                  f"{h['not_documented_4xx']} answered other than the documented 4xx."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=FAULT_ITEMS)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--judge-requests", type=int, default=300)
    parser.add_argument("--hostile", type=int, default=1000)
    parser.add_argument("--skip-judge", action="store_true")
    parser.add_argument("--output", default="runs/bench/cluster_faults")
    args = parser.parse_args()
    os.nice(10)
    cache = load_config().paths.model_cache_dir()
    build_tiny_models(cache, ["vlm_micro", *EXPERT_ROLES])
    env = {"CAREVL_MODEL_CACHE": str(cache), "RAY_metrics_report_interval_ms": "2000", TOKEN_ENV: TOKEN}
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="cvf") as scratch, \
            LocalCluster(workers=args.workers, worker_cpus=1, env_extra=env) as cluster:
        curation = curation_table(cluster, args.items, args.runs, Path(scratch))
        judge = None if args.skip_judge else judge_table(cluster, args.judge_requests, args.hostile, Path(scratch))
    table = render(curation, judge)
    (out / "table.md").write_text(table)
    (out / "results.json").write_text(json.dumps({"curation": curation, "judge": judge, "args": vars(args),
                                                  "seconds": round(time.monotonic() - start, 1)}, indent=1))
    print(table)


if __name__ == "__main__":
    main()
