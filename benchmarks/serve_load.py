"""Load test: the Ray Serve judge (dynamic batching) against a one-request-at-a-time server of the same model.

    python benchmarks/serve_load.py [--model tiny:vlm_micro] [--concurrency 1 8 32 64]
        [--verdict-requests 500 1500 4000 4000] [--explain-requests 100 200 400 400]
        [--baseline-requests 100 200 300 300] [--max-new-tokens 48] [--json out.json]

The baseline is what reward-model servers commonly do: plain FastAPI + transformers under uvicorn, each
request run alone (a lock around the model), no batching. It runs in its own process with the same
torch thread count as the Serve replica. Both servers get identical requests (varied questions,
answers and small images as data URLs) from the same bounded closed-loop load generator on 127.0.0.1:
`c` workers each send their next request when the previous answer arrives. Reported per server, mode
and concurrency: requests, errors, throughput, p50 and p99 latency; and the Serve/baseline throughput
ratio. Everything runs in one invocation so both servers see the same machine.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass

from pydantic import BaseModel

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Ray starts its workers at nice 15 by default; the baseline server runs at nice 0. Same priority for both.
os.environ.setdefault("RAY_worker_niceness", "0")

THREADS = 2  # torch threads for either server (the machine has 2 cores)


class BaselineBody(BaseModel):
    """The baseline's request (module level so FastAPI can resolve the annotation)."""

    question: str
    response_a: str
    response_b: str
    image: str | None = None
    mode: str = "verdict"


# ---- the baseline server (runs in a subprocess) ------------------------------------------------------
def serve_baseline(model: str, port: int, max_new_tokens: int) -> None:
    """Plain FastAPI + transformers, one request at a time."""
    import torch
    import uvicorn
    from fastapi import FastAPI

    from carevl.config import InputLimits, ModelSpec, PathsConfig
    from carevl.data.images import decode_data_url, decode_image
    from carevl.judge_format import VERDICT_PREFIX, judge_messages
    from carevl.models.loading import load_vlm

    torch.set_num_threads(THREADS)
    spec = ModelSpec(path=model, kind="vlm")
    vlm, processor = load_vlm(spec, PathsConfig().model_cache_dir())
    tokenizer = processor.tokenizer
    token_a, token_b = (tokenizer.encode(VERDICT_PREFIX + t, add_special_tokens=False)[-1] for t in (" A", " B"))
    limits = InputLimits()
    lock = threading.Lock()
    app = FastAPI()

    @app.post("/v1/judge")
    def judge(body: BaselineBody) -> dict:
        start = time.perf_counter()
        image = decode_image(decode_data_url(body.image)[1], limits) if body.image else None
        prompt = processor.apply_chat_template(
            judge_messages(body.question, body.response_a, body.response_b, image is not None),
            add_generation_prompt=True, tokenize=False)
        with lock, torch.inference_mode():
            if body.mode == "verdict":
                inputs = processor(text=[prompt + VERDICT_PREFIX], images=[image] if image else None,
                                   return_tensors="pt", add_special_tokens=False)
                logits = vlm(**inputs, logits_to_keep=1).logits[0, -1, [token_a, token_b]].float()
                p_a = torch.softmax(logits, dim=-1)[0].item()
                result = {"winner": "A" if p_a >= 0.5 else "B", "p_a": p_a}
            else:
                inputs = processor(text=[prompt], images=[image] if image else None, return_tensors="pt",
                                   add_special_tokens=False)
                out = vlm.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                   pad_token_id=tokenizer.pad_token_id)
                text = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
                result = {"judgement": text}
        return {**result, "latency_ms": (time.perf_counter() - start) * 1000}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


# ---- load generation ---------------------------------------------------------------------------------
@dataclass
class Row:
    server: str
    mode: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    throughput_rps: float
    p50_ms: float
    p99_ms: float


def _payloads(n: int, mode: str) -> list[dict]:
    from PIL import Image

    from carevl.data.images import encode_data_url

    words = ["cat", "dog", "red", "blue", "tree", "car", "sky", "sun", "two", "dark", "round", "tall"]
    images = [encode_data_url(Image.new("RGB", (32, 32), ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256)))
              for i in range(16)]
    return [{"question": f"What is shown in picture {i}?",
             "response_a": " ".join(words[(i + k) % 12] for k in range(i % 6 + 2)),
             "response_b": " ".join(words[(3 * i + k) % 12] for k in range(i % 4 + 2)),
             "image": images[i % 16], "mode": mode} for i in range(n)]


async def _load(url: str, payloads: list[dict], concurrency: int) -> tuple[list[float], int, float]:
    """Closed loop: `concurrency` workers share a bounded list of requests. Returns latencies, errors, seconds."""
    import httpx

    latencies: list[float] = []
    errors = 0
    first_error: list[str] = []
    next_index = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        async def worker() -> None:
            nonlocal next_index, errors
            while next_index < len(payloads):
                body = payloads[next_index]
                next_index += 1
                start = time.perf_counter()
                try:
                    response = await client.post(url, json=body)
                    ok = response.status_code == 200 and ("p_a" in response.json() or "judgement" in response.json())
                    problem = f"HTTP {response.status_code}: {response.text[:300]}"
                except httpx.HTTPError as exc:
                    ok, problem = False, f"{type(exc).__name__}: {exc}"
                if not ok and not first_error:
                    first_error.append(problem)
                    print(f"    first error: {problem}", flush=True)
                latencies.append((time.perf_counter() - start) * 1000)
                errors += 0 if ok else 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, errors, time.perf_counter() - start


def measure(server: str, url: str, mode: str, concurrency: int, requests: int) -> Row:
    payloads = _payloads(requests, mode)
    asyncio.run(_load(url, payloads[: min(len(payloads), 2 * concurrency)], concurrency))  # warm-up
    latencies, errors, seconds = asyncio.run(_load(url, payloads, concurrency))
    ordered = sorted(latencies)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    row = Row(server, mode, concurrency, len(latencies), errors, seconds, len(latencies) / seconds,
              pick(0.50), pick(0.99))
    print(f"  {server:8s} {mode:7s} c={concurrency:<3d} n={row.requests:<5d} err={errors} "
          f"{row.throughput_rps:8.1f} req/s  p50 {row.p50_ms:8.1f} ms  p99 {row.p99_ms:8.1f} ms", flush=True)
    return row


# ---- servers -----------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, proc: subprocess.Popen | None = None, timeout_s: float = 300) -> None:
    import httpx

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"baseline server exited with {proc.returncode}")
        try:
            if httpx.post(url, json=_payloads(1, "verdict")[0], timeout=30).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError(f"{url} not ready after {timeout_s}s")


def run_baseline(args, modes_counts) -> list[Row]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve-baseline", "--model", args.model, "--port",
                             str(port), "--max-new-tokens", str(args.max_new_tokens)],
                            env={**os.environ, "OMP_NUM_THREADS": str(THREADS)})
    rows = []
    try:
        url = f"http://127.0.0.1:{port}/v1/judge"
        _wait_ready(url, proc)
        for mode, counts in modes_counts:
            for c, n in zip(args.concurrency, counts):
                rows.append(measure("baseline", url, mode, c, n))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return rows


def run_serve(args, modes_counts) -> list[Row]:
    import ray
    from ray import serve

    from carevl.serving.app import build_app
    from carevl.serving.builder import JudgeAppArgs

    port = _free_port()
    ray.init(address="local", num_cpus=max(THREADS, args.replicas * args.replica_cpus), include_dashboard=False,
             log_to_driver=False)
    rows = []
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app_args = JudgeAppArgs.model_validate({
            "model": args.model, "default_mode": "verdict", "max_batch_size": args.max_batch_size,
            "batch_wait_timeout_s": args.batch_wait_timeout_s, "max_new_tokens": args.max_new_tokens,
            "max_ongoing_requests": 4 * max(args.concurrency), "max_queued_requests": 1024,
            "num_cpus": args.replica_cpus, "num_replicas": args.replicas})
        serve.run(build_app(app_args), name="judge", route_prefix="/")
        url = f"http://127.0.0.1:{port}/v1/judge"
        _wait_ready(url)
        for mode, counts in modes_counts:
            for c, n in zip(args.concurrency, counts):
                rows.append(measure("serve", url, mode, c, n))
    finally:
        serve.shutdown()
        ray.shutdown()
    return rows


def _table(rows: list[Row], concurrency: list[int]) -> str:
    lines = ["| mode | c | server | requests | errors | req/s | p50 ms | p99 ms | serve / baseline |",
             "|---|---|---|---|---|---|---|---|---|"]
    by_key = {(r.server, r.mode, r.concurrency): r for r in rows}
    for mode in ("verdict", "explain"):
        for c in concurrency:
            base = by_key.get(("baseline", mode, c))
            for server in ("baseline", "serve"):
                r = by_key.get((server, mode, c))
                if r is None:
                    continue
                ratio = f"{r.throughput_rps / base.throughput_rps:.1f}x" if server == "serve" and base else ""
                lines.append(f"| {mode} | {c} | {server} | {r.requests} | {r.errors} | {r.throughput_rps:.1f} | "
                             f"{r.p50_ms:.0f} | {r.p99_ms:.0f} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny:vlm_micro")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--verdict-requests", type=int, nargs="+", default=[500, 1500, 4000, 4000])
    parser.add_argument("--explain-requests", type=int, nargs="+", default=[100, 200, 400, 400])
    parser.add_argument("--baseline-requests", type=int, nargs="+", default=[100, 200, 300, 300],
                        help="per concurrency, both modes (the unbatched server is slow)")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-wait-timeout-s", type=float, default=0.005)
    parser.add_argument("--replica-cpus", type=float, default=THREADS,
                        help="CPUs (and so torch threads) of the Serve replica; the proxy shares the machine")
    parser.add_argument("--replicas", type=int, default=1, help="Serve replicas (each its own process)")
    parser.add_argument("--json", default=None, help="also write the rows here")
    parser.add_argument("--serve-baseline", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_baseline:
        return serve_baseline(args.model, args.port, args.max_new_tokens)
    for name in ("verdict_requests", "explain_requests", "baseline_requests"):
        if len(getattr(args, name)) != len(args.concurrency):
            parser.error(f"--{name.replace('_', '-')} needs one count per concurrency level")
    print(f"model {args.model}; baseline (FastAPI + transformers, one at a time) then Ray Serve", flush=True)
    rows = run_baseline(args, [("verdict", args.baseline_requests), ("explain", args.baseline_requests)])
    rows += run_serve(args, [("verdict", args.verdict_requests), ("explain", args.explain_requests)])
    print()
    print(_table(rows, args.concurrency))
    serve_verdict = [r for r in rows if r.server == "serve" and r.mode == "verdict"]
    print(f"\nserve verdict: {sum(r.requests for r in serve_verdict)} requests, "
          f"{sum(r.errors for r in serve_verdict)} errors; all rows: {sum(r.errors for r in rows)} errors")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump([asdict(r) for r in rows], handle, indent=1)


if __name__ == "__main__":
    main()
