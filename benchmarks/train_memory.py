"""Per-worker peak memory of sharded (FSDP) against unsharded training, and the paper preset's plan.

    python benchmarks/train_memory.py [--judge tiny:vlm_micro tiny:vlm] [--stages sft dpo] [--steps 3]
                                      [--batch 4] [--keep DIR] [--json FILE]

For every judge and stage, two Ray Train runs on this machine's CPU, one after the other in the same Ray
(2 workers, gloo, the same data, seed and effective batch of `--batch` sequences per worker and step):
`sharding: none` (each worker a whole replica, DDP) and `sharding: fsdp`. A sampler reads RSS and PSS of
every Ray Train worker process every 0.25 s; reported per run: the peak over workers and time. The ratio
fsdp / none is the figure; the difference none - fsdp is shown next to what the planner predicts for it
(`carevl.planning.memory` at the same shapes, batch and length). Both runs must also agree: the largest
relative difference of the logged losses and the largest absolute difference of the saved weights are
printed.

Then the paper preset's planned per-worker GPU memory of SFT and DPO on cluster.yaml, sharded (the
preset) and unsharded, and whether each stage places (the exit status of `ray_jobs.plan` follows it).

`tiny:vlm_micro` (about 1M parameters) is the tiny preset's judge: its model state is a few MB, so
the Python/torch runtime dominates a worker's memory and the ratio stays near 1. `tiny:vlm` (the kit's
SmolLM-135M LLaVA) is large enough for the sharded state to show.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODES = ("none", "fsdp")


class WorkerMemory:
    """Peak RSS and PSS of the Ray Train worker processes below this process, sampled in a thread."""

    def __init__(self, interval_s: float = 0.25) -> None:
        self.interval_s, self.peak_rss, self.peak_pss = interval_s, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "WorkerMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.is_set():
            for child in me.children(recursive=True):
                try:
                    if child.cmdline()[:1] != ["ray::RayTrainWorker"]:
                        continue
                    info = child.memory_full_info()
                except psutil.Error:
                    continue
                self.peak_rss, self.peak_pss = max(self.peak_rss, info.rss), max(self.peak_pss, info.pss)
            self._stop.wait(self.interval_s)


def _config(judge: str, stage: str, mode: str, steps: int, batch: int):
    """`batch` sequences per worker and step: SFT rows, or half as many DPO rows (a row is a chosen and a
    rejected answer, forwarded together)."""
    from carevl.config import load_config

    rows = batch if stage == "sft" else max(1, batch // 2)
    trainer = {"max_steps": steps, "save_steps": steps, "per_device_train_batch_size": rows, "logging_steps": 1,
               "bf16": False, "gradient_checkpointing": False, "learning_rate": 1e-4}
    return load_config(overrides=[f"models.judge.path={judge}", f"{stage}.num_workers=2", f"{stage}.sharding={mode}"]
                       + [f"{stage}.trainer.{k}={v}" for k, v in trainer.items()])


def _planned_bytes(config, stage: str) -> float:
    """The planner's per-worker bytes for `stage` of `config` (its shapes, batch, length and sharding)."""
    from carevl.planning.placement import footprint_of, stage_needs
    from carevl.planning.shapes import model_shape

    [need] = stage_needs(config, stage)
    need.shape = model_shape(need.spec, config.paths.model_cache_dir())
    return footprint_of(need, config).total


def _agreement(runs: dict[str, dict], folders: dict[str, Path]) -> dict[str, float]:
    """Largest relative loss difference and largest absolute weight difference between the two runs."""
    from transformers import AutoModelForImageTextToText

    losses = {m: [e["loss"] for e in runs[m]["train_metrics"]["log_history"] if "loss" in e] for m in MODES}
    weights = {m: AutoModelForImageTextToText.from_pretrained(folders[m]).state_dict() for m in MODES}
    a, b = weights["fsdp"], weights["none"]
    return {"loss_rel_diff": max(abs(x - y) / abs(y) for x, y in zip(losses["fsdp"], losses["none"])),
            "weight_abs_diff": max((a[k].float() - b[k].float()).abs().max().item() for k in b),
            "steps": len(losses["fsdp"])}


def measure(judge: str, stage: str, steps: int, batch: int, root: Path) -> dict:
    from carevl.training.dpo import run_dpo
    from carevl.training.sft import run_sft
    from carevl.training.synthetic_pairs import write_synthetic_dpo_rows, write_synthetic_pairs

    data = root / "pairs"
    if not data.exists():
        write_synthetic_pairs(str(data), 12, seed=0)
        write_synthetic_dpo_rows(str(data), str(data))
    runs, folders, row = {}, {}, {"judge": judge, "stage": stage}
    for mode in MODES:
        config = _config(judge, stage, mode, steps, batch)
        out = root / f"{judge.replace(':', '_')}-{stage}-{mode}"
        start = time.perf_counter()
        with WorkerMemory() as memory:
            runs[mode] = run_sft(config, str(data / "high"), str(out)) if stage == "sft" else \
                run_dpo(config, str(data), str(_base_folder(config)), str(out))
        folders[mode] = out / "model"
        row[mode] = {"peak_rss": memory.peak_rss, "peak_pss": memory.peak_pss,
                     "planned": _planned_bytes(config, stage), "seconds": round(time.perf_counter() - start, 1)}
    row["rss_ratio"] = row["fsdp"]["peak_rss"] / row["none"]["peak_rss"]
    row["pss_ratio"] = row["fsdp"]["peak_pss"] / row["none"]["peak_pss"]
    row.update(_agreement(runs, folders))
    return row


def _base_folder(config) -> Path:
    from carevl.models.loading import resolve_model_path
    from carevl.models.specs import judge_spec

    return Path(resolve_model_path(judge_spec(config), config.paths.model_cache_dir())[0])


def paper_plan() -> list[dict]:
    """Planned per-worker GPU memory of the paper preset's SFT and DPO on cluster.yaml."""
    from carevl.config import load_config
    from carevl.planning.nodes import GB, from_cluster_yaml
    from carevl.planning.placement import placement_errors, plan_stage

    nodes = from_cluster_yaml(str(REPO / "cluster.yaml"))
    rows = []
    for stage in ("sft", "dpo"):
        for sharding in ("fsdp", "none"):
            config = load_config(REPO / "configs" / "paper.yaml", [f"{stage}.sharding={sharding}"])
            needs = plan_stage(config, stage, nodes)
            rows.append({"stage": stage, "sharding": sharding, "workers": getattr(config, stage).num_workers,
                         "planned_gb": round(needs[0].footprint.total / GB, 1),
                         "places": not placement_errors(needs, nodes, config)})
    return rows


def _mib(n: float) -> str:
    return f"{n / 2**20:8.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--judge", nargs="+", default=["tiny:vlm_micro", "tiny:vlm"])
    parser.add_argument("--stages", nargs="+", choices=("sft", "dpo"), default=["sft", "dpo"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4, help="sequences per worker and step (DPO: half as many rows)")
    parser.add_argument("--keep", default=None, help="write the runs under this folder and keep them")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()

    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        for judge in args.judge:
            for stage in args.stages:
                rows.append(measure(judge, stage, args.steps, args.batch, root))
                if args.json:  # kept as it grows: a later run that fails leaves the earlier rows
                    Path(args.json).write_text(json.dumps({"runs": rows}, indent=1))
                r = rows[-1]
                print(f"{judge:15s} {stage:4s} peak RSS MiB none {_mib(r['none']['peak_rss'])} fsdp "
                      f"{_mib(r['fsdp']['peak_rss'])} ratio {r['rss_ratio']:.3f} | PSS ratio {r['pss_ratio']:.3f} | "
                      f"saved {_mib(r['none']['peak_rss'] - r['fsdp']['peak_rss'])} MiB, planned "
                      f"{_mib(r['none']['planned'] - r['fsdp']['planned'])} MiB | loss rel diff "
                      f"{r['loss_rel_diff']:.1e}, weight abs diff {r['weight_abs_diff']:.1e} over {r['steps']} steps",
                      flush=True)
    ray.shutdown()
    plan = paper_plan()
    for p in plan:
        print(f"paper {p['stage']:4s} sharding {p['sharding']:4s}: {p['planned_gb']:5.1f} GB per worker "
              f"(x{p['workers']}), {'places' if p['places'] else 'fits no node type'}")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": rows, "paper_plan": plan}, indent=1))


if __name__ == "__main__":
    main()
