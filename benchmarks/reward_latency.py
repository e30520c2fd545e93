"""Reward latency: /v1/reward against the same rewards computed from separate /v1/judge calls.

    python benchmarks/reward_latency.py [--model tiny:vlm_micro] [--group-size 8] [--groups 24 8]
        [--concurrency 1 4] [--json out.json]

One judge deployment on local Ray Serve (transformers backend, dynamic batching). The workload is RL
groups: a question, a small image, `--group-size` completions and a reference answer. For each method
(reference: 2k comparisons per group; bradley_terry: k(k-1)) and each concurrency c (c groups in flight,
closed loop), three ways to get the same k rewards per group, all on one reused HTTP connection pool:

- reward:        one POST /v1/reward per group (the judge gets the group's comparisons at once);
- judge_loop:    the glue a user writes without it: one swap-checked POST /v1/judge per pair, one after
                 the other, and the rule (`group_rewards`) applied on the client;
- judge_gather:  the same /v1/judge calls of a group sent concurrently.

Reported per method, concurrency and way: groups, rewards (completions scored) per second, p50 and p99
latency of a group's rewards, and the reward/baseline throughput ratios. The rewards of the three ways
are checked to agree (up to batching numerics). Everything runs in one invocation on one machine.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = ["red", "blue", "square", "circle", "two", "small", "large", "left", "right", "a", "the", "shape"]


def make_groups(n: int, k: int, seed: int) -> list[dict]:
    from PIL import Image

    from carevl.client import image_field

    rng = random.Random(seed)
    groups = []
    for g in range(n):
        image = Image.new("RGB", (24, 24), tuple(rng.randrange(256) for _ in range(3)))
        completions = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 12))) for _ in range(k)]
        groups.append({"question": f"Describe picture {g}.", "image": image_field(image),
                       "completions": completions, "reference": "a red square on the left"})
    return groups


async def via_reward(client, group: dict, method: str) -> list[float]:
    return (await client.reward([group], method)).rewards[0]


async def via_judge(client, group: dict, method: str, concurrent: bool) -> list[float]:
    """The group's rewards from one swap-checked /v1/judge call per unordered pair."""
    from carevl.judge.rules import group_rewards, reward_comparisons

    k = len(group["completions"])
    texts = [*group["completions"], group["reference"]]
    comparisons = reward_comparisons(k, method)
    pairs = comparisons[::2]  # (a, b); the next comparison is (b, a), which the swap check judges

    def call(a: int, b: int):
        return client.judge(group["question"], texts[a], texts[b], image=group["image"], mode="verdict",
                            swap_check=True)

    if concurrent:
        results = await asyncio.gather(*(call(a, b) for a, b in pairs))
    else:
        results = [await call(a, b) for a, b in pairs]
    p_first = []
    for result in results:  # swap-checked p_a = (p(a,b) + 1 - p(b,a)) / 2: both orders' view of a
        p_first += [result.p_a, 1.0 - result.p_a]
    return group_rewards(k, method, comparisons, p_first)


async def run_way(base_url: str, way: str, groups: list[dict], method: str, concurrency: int) -> dict:
    from carevl.client import AsyncJudgeClient

    latencies, rewards = [], [None] * len(groups)
    queue = list(range(len(groups)))

    async with AsyncJudgeClient(base_url, timeout_s=600, retries=0, max_connections=64) as client:
        async def worker():
            while queue:
                n = queue.pop(0)
                start = time.perf_counter()
                if way == "reward":
                    rewards[n] = await via_reward(client, groups[n], method)
                else:
                    rewards[n] = await via_judge(client, groups[n], method, concurrent=way == "judge_gather")
                latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    scored = sum(len(g["completions"]) for g in groups)
    return {"method": method, "concurrency": concurrency, "way": way, "groups": len(groups),
            "rewards_per_s": scored / elapsed, "p50_ms": float(np.percentile(latencies, 50) * 1000),
            "p99_ms": float(np.percentile(latencies, 99) * 1000), "rewards": rewards}


def start_judge(model: str) -> str:
    import ray
    from ray import serve

    from carevl.serving.app import build_app
    from carevl.serving.builder import JudgeAppArgs
    from carevl.testing.cluster import free_ports

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    (port,) = free_ports(1)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    args = {"model": model, "default_mode": "verdict", "max_batch_size": 32, "batch_wait_timeout_s": 0.005,
            "num_cpus": 1, "max_ongoing_requests": 256}
    serve.run(build_app(JudgeAppArgs.model_validate(args)), name="judge", route_prefix="/")
    return f"http://127.0.0.1:{port}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny:vlm_micro")
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--groups", type=int, nargs=2, default=[24, 8], metavar=("REFERENCE", "BRADLEY_TERRY"),
                        help="groups per run for each method")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    base_url = start_judge(args.model)
    rows = []
    for method, n in zip(("reference", "bradley_terry"), args.groups):
        groups = make_groups(n, args.group_size, args.seed)
        asyncio.run(run_way(base_url, "reward", groups[:2], method, 1))  # warm-up: first batches, tokenizer caches
        for concurrency in args.concurrency:
            results = [asyncio.run(run_way(base_url, way, groups, method, concurrency))
                       for way in ("reward", "judge_loop", "judge_gather")]
            served = np.array(results[0]["rewards"], dtype=float)
            for result in results[1:]:
                result["max_reward_difference"] = float(np.abs(np.array(result["rewards"], dtype=float) - served).max())
                result["speedup_of_reward"] = results[0]["rewards_per_s"] / result["rewards_per_s"]
            rows += results
    print(f"{'method':<14}{'c':>3} {'way':<13}{'groups':>7}{'rewards/s':>11}{'p50 ms':>10}{'p99 ms':>10}"
          f"{'reward x':>10}{'max diff':>10}")
    for r in rows:
        print(f"{r['method']:<14}{r['concurrency']:>3} {r['way']:<13}{r['groups']:>7}{r['rewards_per_s']:>11.1f}"
              f"{r['p50_ms']:>10.0f}{r['p99_ms']:>10.0f}{r.get('speedup_of_reward', 1.0):>10.2f}"
              f"{r.get('max_reward_difference', 0.0):>10.1e}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump([{k: v for k, v in r.items() if k != "rewards"} for r in rows], fh, indent=2)


if __name__ == "__main__":
    main()
