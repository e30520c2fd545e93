"""Custom Ray metrics (`ray.util.metrics`), exported to Prometheus by Ray's own metrics agent on every
node (`ray start --metrics-export-port=PORT`, scraped at http://<node>:PORT/metrics; Ray prefixes each
name with `ray_`, and counters end in `_total`):

    carevl_curation_pairs                 counter    curated pairs written, tag `confidence` (high / low)
    carevl_curation_pairs_per_second      gauge      the curation driver's running pairs/s
    carevl_curation_quarantined_rows      counter    input rows quarantined, tag `reason`
    carevl_judge_requests                 counter    judge service answers, tags `route`, `status`
    carevl_judge_batch_size               histogram  pairs per judge model call (dynamic batching)
    carevl_judge_p_a                      histogram  p_a of each verdict (probability that A is better)

Metrics are created in the process that records them, on first use; outside a Ray worker or driver
(a unit test with no cluster) recording does nothing.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import ray
from ray.util.metrics import Counter, Gauge, Histogram

BATCH_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128]
P_A_BOUNDARIES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


@lru_cache(maxsize=1)
def _curation() -> dict[str, Any]:
    return {
        "pairs": Counter("carevl_curation_pairs", "curated pairs written", tag_keys=("confidence",)),
        "rate": Gauge("carevl_curation_pairs_per_second", "pairs per second of the running curation job"),
        "quarantined": Counter("carevl_curation_quarantined_rows", "input rows quarantined", tag_keys=("reason",)),
    }


@lru_cache(maxsize=1)
def _judge() -> dict[str, Any]:
    return {
        "requests": Counter("carevl_judge_requests", "judge service answers", tag_keys=("route", "status")),
        "batch": Histogram("carevl_judge_batch_size", "pairs per judge model call", boundaries=BATCH_BOUNDARIES),
        "p_a": Histogram("carevl_judge_p_a", "p_a of each verdict", boundaries=P_A_BOUNDARIES),
    }


def record_curation(stats: dict[str, Any], pairs_per_second: float) -> None:
    """Counts of one written batch (its `stats`, see `curation.summary`) and the running rate."""
    if not ray.is_initialized():
        return
    m = _curation()
    for confidence, n in stats.get("pairs", {}).items():
        if n:
            m["pairs"].inc(n, tags={"confidence": confidence})
    for reason, n in stats.get("quarantine_reasons", {}).items():
        if n:
            m["quarantined"].inc(n, tags={"reason": reason})
    m["rate"].set(pairs_per_second)


def record_judge_request(route: str, status: int) -> None:
    if ray.is_initialized():
        _judge()["requests"].inc(1, tags={"route": route, "status": str(status)})


def record_judge_batch(pairs: int) -> None:
    if ray.is_initialized():
        _judge()["batch"].observe(pairs)


def record_p_a(p_a: float | None) -> None:
    if ray.is_initialized() and p_a is not None:
        _judge()["p_a"].observe(p_a)
