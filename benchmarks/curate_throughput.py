"""Curation throughput and memory, measured in one run on this machine.

Throughput (same models, same items, 5 responses each = 10 pairs per item, captions pre-computed once
into a shared caption store so none of the three measurements pays for them):
  job    the curation job on Ray Data (`run_curation`, end to end: planning, actor start-up and model
         loading included, strong-judge backend `column`);
  naive  one process, every pair, every expert: a forward pass over both sides of the pair;
  raw    one process doing only the expert actor's own work: render each distinct response in the
         expert's chat template and run the batched forward passes over them. It runs as a plain
         script in a fresh interpreter and is reported twice: the forward passes alone (`raw`), and
         the whole script (`raw_script`: interpreter start, imports, reading the items and stored
         captions, model loading, forwards), which pays the fixed costs a job's actors pay too.
Reported: job/naive (target >= 4) and job/raw (target >= 0.9; the raw baseline gets the expert actor's
own batching: the distinct responses of one expert batch of items per call, in token-budget,
length-sorted chunks). The job's rate is given twice: end to end, and in steady state (pairs of every
unit published after the first, over the time from the first publication to the last), which leaves out
start-up: Ray Data planning, actor creation, model loading and filling the pipeline, a fixed cost that a
run of millions of pairs pays once. `steady/raw` is what orchestration costs per pair and
`job/raw_script` what it costs end to end against a script without Ray; use `--unit-items` small enough
for several units. The job's end-to-end clock starts once Ray is up (`job_wall_seconds` adds the
local Ray start-up, which a job submitted to a running cluster does not pay).

Memory: the job run as a subprocess at each requested size (in pairs) with the fastest models (the
micro caption VLM, the four micro reward models, judge backend `column`); the proportional set size of
every process of that run (driver, raylet, GCS, workers; Ray gets a private temp dir so they can be
found) is sampled once a second and the peak of the sum reported. Flat means it does not grow with size.

    python benchmarks/curate_throughput.py --items 40 --memory-pairs 10000 100000 --workdir /tmp/cb
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from itertools import combinations
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MICRO_EXPERTS = ["rm_llama", "rm_qwen2", "rm_gemma2", "rm_mistral"]


def write_items(folder: Path, n_items: int, seed: int) -> Path:
    from carevl.data.synth import SynthSpec, write_synth_items

    if not folder.exists():
        write_synth_items(str(folder), n_items, seed, SynthSpec(min_responses=5, max_responses=5),
                          shard_size=10_000)
    return folder


def overrides(caption_store: Path, experts: list[str], unit_items: int, experts_cpus: float) -> list[str]:
    sets = ["models.vlm.path=tiny:vlm_micro", "models.vlm.generation.max_new_tokens=8",
            "models.vlm.resources.num_cpus=0.25", "curation.task_num_cpus=0.25",
            f"curation.unit_items={unit_items}", f"curation.caption_store={caption_store}",
            f"curation.experts=[{', '.join(experts)}]", "curation.progress_interval_s=30"]
    sets += [f"models.{e}.resources.num_cpus={experts_cpus}" for e in experts]
    return sets


# ----------------------------------------------------------------------------------------- throughput

def load_items(folder: Path) -> list[dict]:
    from carevl.data.io import read_table

    return read_table(str(folder)).to_pylist()


def precompute_captions(config, items: list[dict], store: Path) -> dict[str, str]:
    """Caption every image once into the shared store (excluded from all timings)."""
    from carevl.curation.captions import Captioner
    from carevl.data.images import image_key

    import torch

    torch.set_num_threads(1)
    captioner = Captioner(config.models["vlm"], str(config.paths.model_cache_dir()), str(store),
                          config.curation.limits)
    keys = [image_key(it["image_path"], it["image_bytes"]) for it in items]
    for start in range(0, len(items), 16):
        chunk = items[start:start + 16]
        captioner({"image_key": keys[start:start + 16], "image_path": [it["image_path"] for it in chunk],
                   "image_bytes": [it["image_bytes"] for it in chunk], "reason": [None] * len(chunk)})
    return captioner.store.lookup(set(keys))


def raw_forward(config, items: list[dict], captions: dict[str, str], threads: int) -> tuple[int, float]:
    """(pairs, seconds) of the raw baseline: what the job's expert actor does per call, render the distinct
    responses of one expert batch of items (`batch_size` items) and score them through the same
    `RewardScorer.score`, i.e. the same token-budget, length-sorted chunks, one expert after another."""
    import torch

    from carevl.curation.pairs import distinct_indices
    from carevl.data.images import image_key
    from carevl.models.backends import make_scorer
    from carevl.prompts import expert_messages

    torch.set_num_threads(threads)  # the same as the job's expert actor (its CPUs, rounded up)
    scorers = {e: make_scorer(config.models[e], config.paths.model_cache_dir()) for e in config.curation.experts}
    pairs = sum(len(list(combinations(distinct_indices(it["responses"]), 2))) for it in items)
    caption = [captions[image_key(it["image_path"], it["image_bytes"])] for it in items]
    batch = min(config.models[e].resources.batch_size for e in config.curation.experts)  # the pool's batch
    seconds = 0.0
    for scorer in scorers.values():
        t0 = time.perf_counter()
        for start in range(0, len(items), batch):
            scorer.score([scorer.render(expert_messages(caption[i], it["question"], it["responses"][r]))
                          for i, it in enumerate(items[start:start + batch], start)
                          for r in distinct_indices(it["responses"])])
        seconds += time.perf_counter() - t0
    return pairs, seconds


def raw_script_main(request: dict) -> None:
    """The raw baseline as a plain script would run it, in this fresh process: read the items and the
    stored captions, load the experts, score. Prints its figures as one JSON line; `script_seconds`
    counts from the interpreter's start (imports and model loading included, as the job's actors pay
    them)."""
    import psutil

    from carevl.config import load_config
    from carevl.curation.captions import CaptionStore, caption_id
    from carevl.data.images import image_key

    config = load_config(overrides=request["sets"])
    items = load_items(Path(request["items"]))
    store = CaptionStore(request["store"], caption_id(config.models[config.curation.caption_model]))
    store.refresh()
    captions = store.lookup({image_key(it["image_path"], it["image_bytes"]) for it in items})
    pairs, seconds = raw_forward(config, items, captions, request["threads"])
    print(json.dumps({"pairs": pairs, "forward_seconds": seconds,
                      "script_seconds": time.time() - psutil.Process().create_time()}))


def raw_baseline(sets: list[str], items_dir: Path, store: Path, threads: int) -> dict:
    """Run `raw_script_main` in a fresh interpreter; its rates, forward-only and as a whole script."""
    request = json.dumps({"sets": sets, "items": str(items_dir), "store": str(store), "threads": threads})
    done = subprocess.run([sys.executable, __file__, "--raw-script", request], cwd=REPO, check=True,
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return {"pairs": out["pairs"], "raw_seconds": out["forward_seconds"],
            "raw_pairs_per_s": out["pairs"] / out["forward_seconds"],
            "raw_script_seconds": out["script_seconds"],
            "raw_script_pairs_per_s": out["pairs"] / out["script_seconds"]}


def naive_baseline(config, items: list[dict], captions: dict[str, str], threads: int) -> dict:
    """One process, every pair, every expert: a forward pass over both sides of the pair, pairs/s."""
    import torch

    from carevl.curation.pairs import distinct_indices
    from carevl.data.images import image_key
    from carevl.models.backends import make_scorer
    from carevl.prompts import expert_messages

    torch.set_num_threads(threads)
    scorers = [make_scorer(config.models[e], config.paths.model_cache_dir()) for e in config.curation.experts]
    pairs, t0 = 0, time.perf_counter()
    for it in items:
        caption = captions[image_key(it["image_path"], it["image_bytes"])]
        for a, b in combinations(distinct_indices(it["responses"]), 2):
            pairs += 1
            for scorer in scorers:
                scorer.score([scorer.render(expert_messages(caption, it["question"], it["responses"][a])),
                              scorer.render(expert_messages(caption, it["question"], it["responses"][b]))])
    seconds = time.perf_counter() - t0
    return {"naive_pairs": pairs, "naive_seconds": seconds, "naive_pairs_per_s": pairs / seconds}


def throughput(args, workdir: Path) -> dict:
    from carevl.config import load_config
    from carevl.curation.pipeline import run_curation

    items_dir = write_items(workdir / f"items_{args.items}", args.items, seed=7)
    store = workdir / "captions"
    experts = args.experts or load_config().curation.experts
    sets = overrides(store, experts, unit_items=args.unit_items, experts_cpus=args.experts_cpus)
    sets += [f"models.{e}.resources.batch_size={args.batch}" for e in experts] + ["ray.num_cpus=2"]
    config = load_config(overrides=sets)
    items = load_items(items_dir)
    captions = precompute_captions(config, items, store)
    run_dir = workdir / "run_throughput"
    shutil.rmtree(run_dir, ignore_errors=True)
    started = time.time()
    summary = run_curation(config, str(items_dir), str(run_dir))
    wall = time.time() - started   # local Ray start-up included (a running cluster's job pays no such cost)
    import ray

    ray.shutdown()
    threads = math.ceil(args.experts_cpus)
    base = {**raw_baseline(sets, items_dir, store, threads),
            **naive_baseline(config, items[:args.naive_items], captions, threads)}
    job = summary["run"]["pairs_per_second"]
    steady = steady_state(run_dir, started)
    return {"items": len(items), "experts": experts, "job_pairs_per_s": job, "job_seconds": summary["run"]["seconds"],
            "job_wall_seconds": round(wall, 2),
            "captions_generated_by_job": summary["captions"].get("generated", 0), **base, **steady,
            "job_over_naive": job / base["naive_pairs_per_s"], "job_over_raw": job / base["raw_pairs_per_s"],
            "job_over_raw_script": job / base["raw_script_pairs_per_s"],
            "steady_over_raw": (steady["steady_pairs_per_s"] or 0.0) / base["raw_pairs_per_s"]}


def steady_state(run_dir: Path, started: float) -> dict:
    """The job's rate once running: pairs of the units published after the first one, over the time
    between the first and the last publication (a unit's manifest is written last, atomically)."""
    published = sorted((m.stat().st_mtime, sum(json.loads(m.read_text())["stats"]["pairs"].values()))
                       for m in (run_dir / "_units").glob("*.json"))
    if len(published) < 3:
        return {"units": len(published), "steady_pairs_per_s": None, "first_unit_after_s": None}
    span = published[-1][0] - published[0][0]
    return {"units": len(published), "steady_pairs_per_s": sum(n for _, n in published[1:]) / span,
            "first_unit_after_s": round(published[0][0] - started, 1)}


# --------------------------------------------------------------------------------------------- memory

def _pss_of_run(driver_pid: int, marker: str) -> int:
    import psutil

    total = 0
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if proc.pid == driver_pid or any(marker in part for part in proc.info["cmdline"] or []):
                total += proc.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


def _kill_run(marker: str) -> None:
    """Stop what is left of the run's Ray (its processes carry the private temp dir), by pid."""
    import psutil

    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(marker in part for part in proc.info["cmdline"] or []):
                proc.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue


def _pairs_published(run_dir: Path) -> int:
    total = 0
    for manifest in (run_dir / "_units").glob("*.json"):
        total += sum(json.loads(manifest.read_text())["stats"]["pairs"].values())
    return total


def _pairs_in_input(items_dir: Path) -> int:
    """Pairs the items really hold: the generator asks for 5 responses per item, but gives up on a fifth
    distinct text after a few tries now and then (about 1 item in 500 has 4 responses, 6 pairs)."""
    import pyarrow.dataset as ds

    total = 0
    for batch in ds.dataset(str(items_dir), format="parquet").to_batches(columns=["responses"]):
        total += sum(len(r) * (len(r) - 1) // 2 for r in batch.column(0).to_pylist() if r)
    return total


def memory(pairs: int, workdir: Path, unit_items: int, max_seconds: float | None) -> dict:
    n_items = pairs // 10
    items_dir = write_items(workdir / f"items_{n_items}", n_items, seed=9)
    run_dir = workdir / f"run_memory_{pairs}"
    shutil.rmtree(run_dir, ignore_errors=True)
    ray_tmp = tempfile.mkdtemp(prefix="cbm", dir="/tmp")
    cmd = [sys.executable, "-m", "ray_jobs.curate", "--input", str(items_dir), "--output", str(run_dir),
           "--set", "ray.num_cpus=2"]
    for s in overrides(workdir / f"captions_{pairs}", MICRO_EXPERTS, unit_items, experts_cpus=1.0):
        cmd += ["--set", s]
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "HF_HUB_OFFLINE": "1"}
    run = watch_run(cmd, env, ray_tmp, workdir / f"memory_{pairs}.log", max_seconds, lambda: _pairs_published(run_dir))
    (workdir / f"memory_{pairs}_progress.json").write_text(json.dumps(run["progress"]))  # (seconds, pairs published)
    in_input = _pairs_in_input(items_dir)
    return {"pairs_requested": pairs, "pairs_in_input": in_input, "items": n_items,
            "returncode": run["returncode"],
            "completed": (run_dir / "summary.json").exists(), "pairs_written": _pairs_published(run_dir),
            "seconds": run["seconds"], "peak_pss_mib": run["peak_pss_mib"],
            "pss_mib_at_25_50_75_percent_of_run": run["pss_mib_at_25_50_75_percent_of_run"],
            "pairs_per_s_by_quarter": quarter_rates(run["progress"], in_input)}


def watch_run(cmd: list[str], env: dict, ray_tmp: str, log_path: Path, max_seconds: float | None,
              published) -> dict:
    """Run a job as a subprocess with its own Ray (temp dir `ray_tmp`), sampling the PSS of all its
    processes once a second and `published()` (pairs written so far) every ~15 s; SIGINT after
    `max_seconds`. Returns the peak and quartile PSS, the progress samples, return code and seconds."""
    peak, samples, progress = 0, [], []
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    t0 = time.monotonic()
    try:
        while proc.poll() is None:
            now = _pss_of_run(proc.pid, ray_tmp)
            peak = max(peak, now)
            samples.append(now)
            if len(samples) % 15 == 1:  # published pairs every ~15 s: the rate per quarter of the run
                progress.append((time.monotonic() - t0, published()))
            if max_seconds and time.monotonic() - t0 > max_seconds:
                proc.send_signal(signal.SIGINT)  # stop here; what was published so far is reported
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                break
            time.sleep(1.0)
    finally:
        _kill_run(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
        log.close()
    quarters = [round(samples[min(len(samples) - 1, len(samples) * q // 4)] / 2**20, 1) for q in (1, 2, 3)] \
        if samples else []
    progress.append((time.monotonic() - t0, published()))
    return {"returncode": proc.returncode, "seconds": round(time.monotonic() - t0, 1),
            "peak_pss_mib": round(peak / 2**20, 1), "pss_mib_at_25_50_75_percent_of_run": quarters,
            "progress": progress}


def quarter_rates(progress: list[tuple[float, int]], total: int) -> list[float | None]:
    """Pairs/s over each quarter of the input. The time each quarter boundary was crossed is interpolated
    between the two progress samples around it (None: the run never got there)."""
    def crossed(target: float) -> float | None:
        prev_t, prev_n = 0.0, 0
        for t, n in progress:
            if n >= target:
                return prev_t + (t - prev_t) * (target - prev_n) / max(n - prev_n, 1)
            prev_t, prev_n = t, n
        return None

    times = [0.0] + [crossed(total * q / 4) for q in (1, 2, 3, 4)]
    return [None if b is None or a is None else round(total / 4 / max(b - a, 1e-9), 1)
            for a, b in zip(times, times[1:])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=40, help="items (x10 pairs) for the throughput run")
    parser.add_argument("--naive-items", type=int, default=10, help="items the naive loop times (it is a rate)")
    parser.add_argument("--experts", nargs="*", default=None, help="expert keys (default: the preset's M=5)")
    parser.add_argument("--experts-cpus", type=float, default=1.0,
                        help="CPUs of the expert pool (its torch threads, rounded up; baselines use as many)")
    parser.add_argument("--batch", type=int, default=8, help="items per expert batch")
    parser.add_argument("--unit-items", type=int, default=1000)
    parser.add_argument("--memory-pairs", type=int, nargs="*", default=[10_000])
    parser.add_argument("--memory-max-seconds", type=float, default=None,
                        help="stop a memory run after this long (reports the pairs published by then)")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--workdir", default="/tmp/curate_bench")
    parser.add_argument("--raw-script", metavar="REQUEST", help=argparse.SUPPRESS)  # the raw baseline's child
    args = parser.parse_args()
    if args.raw_script:
        return raw_script_main(json.loads(args.raw_script))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    run_benchmark(args, lambda workdir: throughput(args, workdir),
                  lambda pairs, workdir: memory(pairs, workdir, args.unit_items, args.memory_max_seconds))


def run_benchmark(args, throughput_of, memory_of) -> dict:
    """The throughput run (unless --skip-throughput), then one memory run per --memory-pairs size;
    each result printed as it comes, all of them in WORKDIR/report.json."""
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    report: dict = {}
    if not args.skip_throughput:
        report["throughput"] = throughput_of(workdir)
        print(json.dumps(report["throughput"], indent=2), flush=True)
    report["memory"] = []
    for pairs in args.memory_pairs:
        report["memory"].append(memory_of(pairs, workdir))
        print(json.dumps(report["memory"][-1]), flush=True)
    (workdir / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
