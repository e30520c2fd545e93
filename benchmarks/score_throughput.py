"""Scoring throughput and memory: the offline scoring job against the same judge called in a plain
loop and through the judge service, on the same pairs, in one run on this machine.

Throughput (held-out synthetic pairs with images, every pair judged in both orders, 16 ordered pairs
per forward pass everywhere, the same torch thread count everywhere):
  job    `ray_jobs.score` on Ray Data (`run_scoring` end to end: planning, actor start-up, model
         loading, reading, writing; local Ray already up); also its steady state (pairs of the units
         published after the first, over the time from the first publication to the last);
  loop   one process: `JudgeModel` loaded once, then for each chunk of pairs the images decoded and
         both orders judged (`verdict`), the swap rule applied (model loading not timed);
  serve  the judge service (Ray Serve, transformers backend, dynamic batching) started in this run,
         POST /v1/judge/batch with swap_check, `--serve-items` pairs per request and
         `--serve-concurrency` requests in flight (service start-up not timed).
Reported: pairs/s of each, job/loop and job/serve.

Memory: the job run as a subprocess on inputs of each requested size (text-only pairs, so a run gets
further in the time it has); the proportional set size of every process of that run (driver, raylet,
GCS, workers: Ray gets a private temp dir so they can be found) is sampled once a second and the peak
of the sum reported, with the PSS at a quarter, half and three quarters of the run. Flat means it does
not grow with the input. `--memory-max-seconds` stops a run (SIGINT) after that long; the pairs scored
by then are reported.

    python benchmarks/score_throughput.py --pairs 256 --memory-pairs 10000 100000 \
        --memory-max-seconds 600 --workdir /tmp/score_bench
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_worker_niceness", "0")  # Ray workers at the loop's priority

from benchmarks.curate_throughput import quarter_rates, run_benchmark, watch_run  # noqa: E402

BATCH = 16  # ordered pairs per forward pass in all three


def write_pairs(path: Path, n: int, seed: int, images: bool = True) -> Path:
    from carevl.data.synth import synth_eval_pairs

    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as out:
            for pair in synth_eval_pairs(n, seed):
                if not images:
                    pair.pop("image")
                out.write(json.dumps(pair) + "\n")
    return path


def job_overrides(cpus: float, unit_rows: int) -> list[str]:
    return ["ray.num_cpus=2", f"models.judge.resources.num_cpus={cpus}", f"models.judge.resources.batch_size={BATCH}",
            f"score.unit_rows={unit_rows}", "score.task_num_cpus=0.25", "score.progress_interval_s=30"]


def steady_state(run_dir: Path) -> dict:
    """Pairs of the units published after the first one, over the time between the first and the last
    publication (a unit's manifest is written last, atomically)."""
    published = sorted((m.stat().st_mtime, json.loads(m.read_text())["stats"]["pairs"])
                       for m in (run_dir / "_units").glob("*.json"))
    if len(published) < 3:
        return {"units": len(published), "steady_pairs_per_s": None}
    span = published[-1][0] - published[0][0]
    return {"units": len(published), "steady_pairs_per_s": sum(n for _, n in published[1:]) / span}


def run_job(config, pairs_file: Path, judge: str, run_dir: Path) -> dict:
    import ray

    from carevl.ray_utils import init_ray
    from carevl.scoring.pipeline import ScoreRequest, run_scoring

    shutil.rmtree(run_dir, ignore_errors=True)
    init_ray(config)  # not timed: a job submitted to a running cluster does not start Ray
    try:
        summary = run_scoring(config, ScoreRequest(str(pairs_file), judge, str(run_dir)))
    finally:
        ray.shutdown()
    return {"job_pairs": summary["pairs"], "job_seconds": summary["run"]["seconds"],
            "job_pairs_per_s": summary["pairs"] / summary["run"]["seconds"], **steady_state(run_dir)}


def run_loop(config, pairs: list[dict], judge: str, threads: int) -> dict:
    import torch

    from carevl.judge.model import JudgeModel
    from carevl.judge.rules import combine_swap
    from carevl.models.specs import judge_spec

    torch.set_num_threads(threads)
    spec = judge_spec(config, judge, backbone=config.score.judge_model)
    t0 = time.perf_counter()
    model = JudgeModel(spec, config.paths.model_cache_dir())
    load = time.perf_counter() - t0
    t0 = time.perf_counter()
    step = BATCH // 2
    for start in range(0, len(pairs), step):
        chunk = pairs[start:start + step]
        images = [model.resolve_image(p.get("image")) for p in chunk]
        p, _ = model.verdict({"question": [x["question"] for x in chunk] * 2, "image": images * 2,
                              "response_a": [x["response_a"] for x in chunk] + [x["response_b"] for x in chunk],
                              "response_b": [x["response_b"] for x in chunk] + [x["response_a"] for x in chunk]})
        [combine_swap(p[i], p[i + len(chunk)]) for i in range(len(chunk))]
    seconds = time.perf_counter() - t0
    return {"loop_pairs_per_s": len(pairs) / seconds, "loop_seconds": seconds, "loop_model_load_seconds": load}


async def _serve_load(url: str, pairs: list[dict], per_request: int, concurrency: int) -> float:
    from carevl.client import AsyncJudgeClient

    chunks = [pairs[i:i + per_request] for i in range(0, len(pairs), per_request)]
    queue = list(reversed(chunks))
    async with AsyncJudgeClient(url, timeout_s=600, max_connections=concurrency) as client:
        async def worker() -> None:
            while queue:
                chunk = queue.pop()
                items = [{"question": p["question"], "image": p.get("image"), "response_a": p["response_a"],
                          "response_b": p["response_b"], "mode": "verdict", "swap_check": True} for p in chunk]
                result = await client.judge_batch(items)
                if len(result.results) != len(chunk):
                    raise RuntimeError("the service answered a different number of pairs")

        await client.judge_batch([{"question": "warm-up", "response_a": "a", "response_b": "b", "mode": "verdict"}])
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - t0


def run_serve(pairs: list[dict], judge: str, cpus: float, per_request: int, concurrency: int) -> dict:
    import ray
    from ray import serve

    from carevl.serving.app import build_app
    from carevl.serving.builder import JudgeAppArgs
    from carevl.testing.cluster import free_ports

    port = free_ports(1)[0]
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(JudgeAppArgs.model_validate({
            "model": judge, "default_mode": "verdict", "max_batch_size": BATCH, "batch_wait_timeout_s": 0.01,
            "num_cpus": cpus, "max_ongoing_requests": 64, "limits": {"max_batch_items": per_request}})),
            name="judge", route_prefix="/")
        seconds = asyncio.run(_serve_load(f"http://127.0.0.1:{port}", pairs, per_request, concurrency))
    finally:
        serve.shutdown()
        ray.shutdown()
    return {"serve_pairs_per_s": len(pairs) / seconds, "serve_seconds": seconds}


def throughput(args, workdir: Path) -> dict:
    from carevl.config import load_config

    pairs_file = write_pairs(workdir / f"pairs_{args.pairs}.jsonl", args.pairs, seed=11)
    pairs = [json.loads(line) for line in pairs_file.read_text().splitlines()]
    config = load_config(overrides=job_overrides(args.cpus, args.unit_rows))
    threads = math.ceil(args.cpus)
    out = {"pairs": len(pairs), "judge": args.judge, "threads": threads, "batch": BATCH}
    out.update(run_job(config, pairs_file, args.judge, workdir / "run_throughput"))
    out.update(run_loop(config, pairs, args.judge, threads))
    out.update(run_serve(pairs, args.judge, args.cpus, args.serve_items, args.serve_concurrency))
    out["job_over_loop"] = out["job_pairs_per_s"] / out["loop_pairs_per_s"]
    out["job_over_serve"] = out["job_pairs_per_s"] / out["serve_pairs_per_s"]
    if out["steady_pairs_per_s"]:
        out["steady_over_loop"] = out["steady_pairs_per_s"] / out["loop_pairs_per_s"]
    return out


def _pairs_scored(run_dir: Path) -> int:
    return sum(json.loads(m.read_text())["stats"]["pairs"] for m in (run_dir / "_units").glob("*.json")) \
        if (run_dir / "_units").exists() else 0


def memory(pairs: int, args, workdir: Path) -> dict:
    pairs_file = write_pairs(workdir / f"text_pairs_{pairs}.jsonl", pairs, seed=13, images=False)
    run_dir = workdir / f"run_memory_{pairs}"
    shutil.rmtree(run_dir, ignore_errors=True)
    ray_tmp = tempfile.mkdtemp(prefix="sbm", dir="/tmp")
    cmd = [sys.executable, "-m", "ray_jobs.score", "--input", str(pairs_file), "--output", str(run_dir),
           "--judge", args.judge]
    for s in job_overrides(args.cpus, args.unit_rows):
        cmd += ["--set", s]
    run = watch_run(cmd, {**os.environ, "RAY_TMPDIR": ray_tmp}, ray_tmp, workdir / f"memory_{pairs}.log",
                    args.memory_max_seconds, lambda: _pairs_scored(run_dir))
    scored = _pairs_scored(run_dir)
    return {"pairs_in_input": pairs, "completed": (run_dir / "summary.json").exists(), "pairs_scored": scored,
            **{k: v for k, v in run.items() if k != "progress"},
            "pairs_per_s_by_quarter_of_scored": quarter_rates(run["progress"], max(scored, 1))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--judge", default="tiny:vlm_micro", help="judge folder, tiny:<role> or models key")
    parser.add_argument("--pairs", type=int, default=256, help="pairs (with images) of the throughput run")
    parser.add_argument("--cpus", type=float, default=1.0,
                        help="CPUs of the judge actor / replica (torch threads: rounded up; the loop uses as many)")
    parser.add_argument("--unit-rows", type=int, default=32)
    parser.add_argument("--serve-items", type=int, default=16, help="pairs per /v1/judge/batch request")
    parser.add_argument("--serve-concurrency", type=int, default=2)
    parser.add_argument("--memory-pairs", type=int, nargs="*", default=[10_000])
    parser.add_argument("--memory-max-seconds", type=float, default=None)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--workdir", default="/tmp/score_bench")
    args = parser.parse_args()
    run_benchmark(args, lambda workdir: throughput(args, workdir), lambda pairs, workdir: memory(pairs, args, workdir))

if __name__ == "__main__":
    main()
