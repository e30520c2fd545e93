"""What each training stage adds, on synthetic data with known answers (the paper's Table 3 ablation in
miniature): judge accuracy on held-out pairs before training, after SFT, and after SFT + DPO.

    python benchmarks/learning_synthetic.py --output runs/learning [--items 40] [--eval-pairs 60]
        [--set k=v ...]

Steps, all through the project's own jobs: synthetic items -> curated-pair stand-ins (high/low, see
carevl.training.synthetic_pairs) -> SFT (Ray Train) -> refinement (Ray Data: critiques, rubric scores,
Best-to-Worse) -> DPO (Ray Train). The judge's verdict on a held-out pair is read from its next-token
distribution right after "Verdict:" (A vs B), so an unparseable free-text reply cannot hide what the
model prefers. Held-out pairs come from the synthetic generator's separate evaluation stream; ties are
left out. Timings are wall-clock on this machine and only comparable within one run.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from carevl.cli import parse_job_args
from carevl.config import CarevlConfig
from carevl.data.images import load_image
from carevl.data.synth import synth_eval_pairs
from carevl.judge_format import VERDICT_PREFIX, judge_messages

# Fast CPU settings on top of the tiny preset (whose judge is the micro LLaVA); --set overrides them,
# e.g. --set models.judge.path=tiny:vlm for the SmolLM2-backed judge.
DEFAULTS = [
    "sft.num_workers=2", "sft.trainer.save_steps=1000", "sft.trainer.logging_steps=5",
    "dpo.num_workers=2", "dpo.trainer.num_train_epochs=2", "dpo.trainer.learning_rate=2.0e-4",
    "dpo.trainer.beta=0.1", "dpo.trainer.save_steps=1000", "dpo.trainer.logging_steps=5",
    "refine.num_samples=4", "refine.max_new_tokens=40", "refine.temperature=0.7",
]


def judge_accuracy(config: CarevlConfig, model_dir: str | None, pairs: list[dict]) -> dict:
    """Share of held-out pairs whose better answer gets the higher verdict probability."""
    from carevl.models.backends.transformers import VLMGenerator
    from carevl.models.specs import judge_spec

    generator = VLMGenerator(judge_spec(config, model_dir), config.paths.model_cache_dir())
    messages = [judge_messages(p["question"], p["response_a"], p["response_b"]) for p in pairs]
    images = [load_image(p["image"], None, config.curation.limits) for p in pairs]
    log_probs = generator.score_next_token(messages, images, [" A", " B"], assistant_prefix=VERDICT_PREFIX)
    picks = ["A" if a >= b else "B" for a, b in log_probs]
    correct = sum(pick == p["label"] for pick, p in zip(picks, pairs))
    return {"accuracy": round(correct / len(pairs), 4), "pairs": len(pairs),
            "share_A": round(picks.count("A") / len(pairs), 4)}


def run(config: CarevlConfig, out: Path, items: int, eval_pairs: int, seed: int) -> dict:
    from carevl.refine.pipeline import run_refine
    from carevl.training.dpo import run_dpo
    from carevl.training.sft import run_sft
    from carevl.training.synthetic_pairs import write_synthetic_pairs

    held_out = [p for p in synth_eval_pairs(eval_pairs, seed) if p["label"] != "tie"]
    counts = write_synthetic_pairs(str(out / "run"), items, seed) if not (out / "run").exists() else {}
    results: dict = {"judge_model": config.models[config.sft.judge_model].path, "items": items,
                     "curated_pairs": counts, "held_out_pairs": len(held_out)}
    print(f"judge backbone: {results['judge_model']}", flush=True)
    results["before"] = judge_accuracy(config, None, held_out)
    sft = run_sft(config, str(out / "run" / "high"), str(out / "sft"))
    results["sft_train_seconds"] = sft["train_seconds"]
    results["after_sft"] = judge_accuracy(config, str(out / "sft" / "model"), held_out)
    start = time.perf_counter()
    refined = run_refine(config, str(out / "run" / "low"), str(out / "sft" / "model"), str(out / "pairs"))
    results["refine_seconds"] = round(time.perf_counter() - start, 1)
    results["refine"] = {k: refined[k] for k in ("input_pairs", "used_pairs", "dpo_rows", "skipped",
                                                 "correct_critiques", "critiques", "score_status")}
    if refined["dpo_rows"] == 0:
        results["after_sft_dpo"] = None
        results["note"] = "refinement produced no DPO rows (no correct, scorable critique), so DPO could not run"
        return results
    dpo = run_dpo(config, str(out / "pairs"), str(out / "sft" / "model"), str(out / "dpo"))
    results["dpo_train_seconds"] = dpo["train_seconds"]
    results["after_sft_dpo"] = judge_accuracy(config, str(out / "dpo" / "model"), held_out)
    return results


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--items", type=int, default=40, help="synthetic training items")
    parser.add_argument("--eval-pairs", type=int, default=60, help="held-out pairs (ties are dropped)")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    defaults = [a for s in DEFAULTS for a in ("--set", s)]
    args = parse_job_args("Judge accuracy before training, after SFT, after SFT + DPO.",
                          defaults + argv, _add_arguments)
    if not args.output:
        print("error: --output is required", file=sys.stderr)
        raise SystemExit(2)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    import ray

    try:
        results = run(args.config, out, args.extra.items, args.extra.eval_pairs, args.config.seed)
    finally:
        ray.shutdown()
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
