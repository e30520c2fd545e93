"""Does putting the verdict first cost accuracy? Two copies of the tiny judge, trained on the same pairs.

    python benchmarks/verdict_order.py [--train-items 400] [--eval-pairs 300] [--epochs 2] [--out DIR]

The project's judge format (`carevl.judge_format`) writes `Verdict: X` first, then the explanation, so
verdict mode reads p_a from one forward pass at a position the judge was trained on. The usual
alternative writes the explanation first and the verdict last (the judge "reasons" before deciding).
This script SFT-trains two copies of the tiny judge (`models.vlm` of configs/tiny.yaml: tiny CLIP
tower + SmolLM2-135M) with TRL's SFTTrainer on identical synthetic high-confidence pairs, differing
only in the order of the two parts of the target:

    verdict_first:      "Verdict: B\nExplanation: <reasons>"
    explanation_first:  "Explanation: <reasons>\nVerdict: B"

(The synthetic explanations open with "Answer X is better."; that sentence is removed from both, so
the explanation does not state the verdict before the verdict line.) Both are scored on the same
held-out synthetic pairs (`carevl.data.synth.synth_eval_pairs`, ties left out) by:

- generate: greedy generation, verdict read from the text (unreadable counts as wrong);
- forced: the verdict token compared at the verdict position: for verdict_first that is verdict mode
  (one forward pass, no generation); for explanation_first the generated explanation plus
  "\nVerdict:" is fed back and " A" / " B" compared.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ORDERS = ("verdict_first", "explanation_first")
_LEAD_RE = re.compile(r"^\s*Answer [AB] is better\.\s*")
_LAST_VERDICT_RE = re.compile(r"verdict\s*:\s*\**\s*\[?\s*(A|B)\b", re.IGNORECASE)


def target(choice: str, reasons: str, order: str) -> str:
    if order == "verdict_first":
        from carevl.judge_format import format_judgement
        return format_judgement(choice, reasons)  # the project format, unchanged
    return f"Explanation: {' '.join(reasons.split())}\nVerdict: {choice}"


def train_examples(n_items: int, seed: int, order: str) -> list[dict]:
    """TRL vision prompt/completion examples from high-confidence synthetic pairs (paper 3.3)."""
    from carevl.data.images import decode_image
    from carevl.config import InputLimits
    from carevl.data.synth import iter_items
    from carevl.judge_format import parse_explanation, parse_verdict
    from carevl.training.sft_data import sft_conversation
    from carevl.training.synthetic_pairs import pairs_of_item

    examples = []
    for item in iter_items(n_items, seed):
        image = decode_image(item["image_bytes"], InputLimits()) if item["image_bytes"] else None
        for row in pairs_of_item(item):
            example, _ = sft_conversation(row, seed)
            if example is None or image is None:
                continue
            text = example["completion"][0]["content"][0]["text"]
            choice, reasons = parse_verdict(text), _LEAD_RE.sub("", parse_explanation(text))
            example["completion"] = [{"role": "assistant", "content": [{"type": "text",
                                                                       "text": target(choice, reasons, order)}]}]
            examples.append({"prompt": example["prompt"], "completion": example["completion"], "images": [image]})
    return examples


def train(order: str, args: argparse.Namespace, out: Path) -> dict:
    """SFT one copy of the judge in-process with TRL (the same settings for both orders)."""
    import datasets
    import torch
    from trl import SFTConfig, SFTTrainer

    from carevl.config import load_config
    from carevl.training.common import load_trainable_vlm

    config = load_config(overrides=[f"models.{load_config().sft.judge_model}.path={args.model}"])
    torch.manual_seed(args.seed)
    model, processor, _ = load_trainable_vlm(config, config.sft, None, device="cpu")
    data = datasets.Dataset.from_list(train_examples(args.train_items, args.seed, order))
    sft_args = SFTConfig(output_dir=str(out / "hf"), learning_rate=args.lr, num_train_epochs=args.epochs,
                         per_device_train_batch_size=4, max_length=768, logging_steps=10, save_strategy="no",
                         report_to="none", use_cpu=True, seed=args.seed, dataloader_num_workers=0,
                         gradient_checkpointing=False, max_steps=args.max_steps)
    start = time.perf_counter()
    trainer = SFTTrainer(model=model, args=sft_args, train_dataset=data, processing_class=processor)
    result = trainer.train()
    model.save_pretrained(out / "model")
    processor.save_pretrained(out / "model")
    return {"examples": len(data), "steps": result.global_step, "train_loss": round(result.training_loss, 4),
            "train_seconds": round(time.perf_counter() - start, 1)}


def last_verdict(text: str) -> str | None:
    """The verdict of an explanation-first judgement: the last `Verdict: X` in the text."""
    found = _LAST_VERDICT_RE.findall(text or "")
    return found[-1].upper() if found else None


def evaluate(order: str, model_dir: Path, args: argparse.Namespace) -> dict:
    from carevl.config import ModelSpec
    from carevl.judge.model import VERDICT_CANDIDATES, JudgeModel
    from carevl.judge.rules import verdict_probability
    from carevl.judge_format import VERDICT_PREFIX, parse_verdict
    from carevl.data.synth import synth_eval_pairs

    pairs = [p for p in itertools.islice(synth_eval_pairs(args.eval_pairs * 2, args.seed + 1), args.eval_pairs * 2)
             if p["label"] in ("A", "B")][: args.eval_pairs]
    judge = JudgeModel(ModelSpec(path=str(model_dir), kind="vlm", dtype="float32", max_length=1024),
                       batch_size=8, max_new_tokens=args.max_new_tokens)
    batch = {k: [p[k] for p in pairs] for k in ("question", "response_a", "response_b", "image")}
    gold = [p["label"] for p in pairs]
    start = time.perf_counter()
    texts = [t[0] for t in judge.explain(batch)]
    gen_seconds = time.perf_counter() - start
    read = [parse_verdict(t) if order == "verdict_first" else last_verdict(t) for t in texts]
    start = time.perf_counter()
    if order == "verdict_first":
        forced = ["A" if p > 0.5 else "B" for p in judge.verdict(batch)[0]]
    else:  # feed the generated explanation back and compare the verdict tokens after it
        images = [judge.resolve_image(i) for i in batch["image"]]
        forced = []
        for i, text in enumerate(texts):
            reasons = text.split("\nVerdict")[0].rstrip()
            messages = judge._messages({k: [v[i]] for k, v in batch.items()}, images[i:i + 1])
            logp = judge.generator.score_next_token(messages, images[i:i + 1], list(VERDICT_CANDIDATES),
                                                    reasons + "\n" + VERDICT_PREFIX)[0]
            forced.append("A" if verdict_probability(float(logp[0]), float(logp[1])) > 0.5 else "B")
    forced_seconds = time.perf_counter() - start
    n = len(pairs)
    return {"eval_pairs": n, "readable": round(sum(r is not None for r in read) / n, 3),
            "acc_generate": round(sum(r == g for r, g in zip(read, gold)) / n, 3),
            "acc_forced": round(sum(f == g for f, g in zip(forced, gold)) / n, 3),
            "share_A_gold": round(gold.count("A") / n, 3),
            "generate_s_per_pair": round(gen_seconds / n, 3), "forced_s_per_pair": round(forced_seconds / n, 3),
            "sample": texts[0][:200]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-items", type=int, default=400)
    parser.add_argument("--eval-pairs", type=int, default=300)
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=-1, help="cap on optimizer steps (-1: epochs decide)")
    parser.add_argument("--model", default="tiny:vlm", help="judge backbone to fine-tune (path or tiny:<role>)")
    parser.add_argument("--out", default="/tmp/carevl_verdict_order")
    parser.add_argument("--orders", nargs="+", default=list(ORDERS), choices=ORDERS)
    args = parser.parse_args()
    results = {}
    for order in args.orders:
        out = Path(args.out) / order
        stats = train(order, args, out)
        stats.update(evaluate(order, out / "model", args))
        results[order] = stats
        print(order, json.dumps(stats), flush=True)
    print("\n| target order | train examples | steps | train loss | eval pairs | verdict readable | "
          "acc (generate) | acc (forced verdict token) | s/pair generate | s/pair forced |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for order, r in results.items():
        print(f"| {order} | {r['examples']} | {r['steps']} | {r['train_loss']} | {r['eval_pairs']} | {r['readable']} | "
              f"{r['acc_generate']} | {r['acc_forced']} | {r['generate_s_per_pair']} | {r['forced_s_per_pair']} |")
    (Path(args.out) / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
