"""CAREVL in miniature, measured against the synthetic ground truth: does curation clean the labels, and
does the judge learn?

    python benchmarks/miniature.py --workdir /tmp/mini --items 40 --eval-items 64 --seeds 0 1 2
    python benchmarks/miniature.py --workdir /tmp/mini400 --items 400 --eval-items 200 --seeds 0 --ablation

For each seed the whole pipeline runs as a user runs it (`python -m ray_jobs.pipeline`, the tiny preset,
the synthetic strong judge right 75% of the time), then the figures are read from its reports:
- labels (the audit): strong judge, high-confidence and final-label accuracy against gold;
- the judge on held-out synthetic pairs, verdict mode with the swap check (a tie counts as wrong):
  base, after SFT, after DPO, and position consistency, next to the score a judge that reads only
  the answers' surface cues (an invented object, filler) would get on the same pairs
  (the run summary's `surface_cue_reference`): a judge at or below it has not learned to check the image;
- refinement: how many low-confidence pairs gave DPO rows, and why the others did not;
- with --ablation, the paper's data-selection ablation in miniature: SFT on a random subset of all
  pairs of the same size as the SFT set, labelled by the strong judge alone, with the same steps.
Each figure is printed next to its target; a JSON report holds everything. Nothing here is timed.
"""
from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from carevl.data import io as dio

JUDGE_ACCURACY = 0.75


def run_job(module: str, args: list[str], log: Path) -> None:
    cmd = [sys.executable, "-m", module, *args]
    print("$", " ".join(cmd), flush=True)
    with open(log, "w") as out:
        code = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT).returncode
    if code != 0:
        raise SystemExit(f"{module} failed ({code}); see {log}")


def pipeline(run: Path, seed: int, items: int, eval_items: int, sets: list[str]) -> dict:
    run.mkdir(parents=True, exist_ok=True)
    args = ["--output", str(run), "--items", str(items), "--eval-items", str(eval_items),
            "--judge-accuracy", str(JUDGE_ACCURACY), "--set", f"seed={seed}", *sum((["--set", s] for s in sets), [])]
    run_job("ray_jobs.pipeline", args, run / "pipeline.log")
    return json.loads((run / "pipeline_summary.json").read_text())


def random_judge_subset(curation: Path, n: int, seed: int, out: Path) -> int:
    """`n` pairs drawn at random from all curated pairs that carry a verdict and an explanation, each
    labelled by the strong judge alone and marked high-confidence, so SFT uses all of them."""
    rows = []
    for cls in ("high", "low"):
        for batch in dio.iter_batches(str(curation / cls), "parquet", batch_size=256):
            rows += [r for r in batch.to_pylist() if r["judge_choice"] in ("A", "B")
                     and (r.get("judge_explanation") or "").strip()]
    picked = random.Random(seed).sample(rows, min(n, len(rows)))
    for row in picked:
        row.update(confidence="high", low_reason=None, label=row["judge_choice"])
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(picked, schema=pq.read_schema(next((curation / "high").glob("*.parquet")))),
                   out / "part-00000.parquet")
    return len(picked)


def ablation(run: Path, sets: list[str]) -> dict:
    """SFT on judge-labelled random pairs, as many as the high set gave, then the same evaluation."""
    config = sum((["--set", s] for s in sets), [])
    sft_rows = json.loads((run / "sft" / "summary.json").read_text())["data"]["rows"]
    high_pairs = json.loads((run / "curation" / "summary.json").read_text())["pairs"]["high"]
    out = run / "ablation"
    n = random_judge_subset(run / "curation", min(sft_rows, high_pairs), 1, out / "random_pairs")
    if not (out / "sft" / "model").is_dir():
        run_job("ray_jobs.train_sft", [*config, "--input", str(out / "random_pairs"), "--output", str(out / "sft")],
                out / "train_sft.log")
    if not (out / "eval" / "report.json").is_file():
        run_job("ray_jobs.evaluate", [*config, "--benchmark", "synthetic", "--input", str(run / "data" / "eval"),
                                      "--judge", str(out / "sft" / "model"), "--output", str(out / "eval")],
                out / "evaluate.log")
    report = json.loads((out / "eval" / "report.json").read_text())
    return {"pairs": n, "accuracy": report["metrics"]["overall"]}


def figures(summary: dict) -> dict:
    audit, ev = summary.get("audit", {}), summary.get("evaluation", {})
    refine = summary.get("refine", {})

    def acc(name: str):
        return (ev.get(f"synthetic_{name}") or {}).get("overall")

    return {
        "judge_labels": audit.get("judge", {}).get("accuracy"), "high_labels": audit.get("high", {}).get("accuracy"),
        "final_labels": audit.get("final", {}).get("accuracy"), "high_pairs": audit.get("high", {}).get("n"),
        "base": acc("base"), "sft": acc("sft"), "dpo": acc("dpo"),
        "position_consistency_sft": (ev.get("synthetic_sft") or {}).get("position_consistency"),
        "position_consistency_dpo": (ev.get("synthetic_dpo") or {}).get("position_consistency"),
        "refine_input_pairs": refine.get("input_pairs"), "refine_used_pairs": refine.get("used_pairs"),
        "refine_skipped": refine.get("skipped"), "surface_cue_judge": summary.get("surface_cue_reference"),
    }


def targets(f: dict, large: bool) -> list[tuple[str, float | None, str, bool | None]]:
    """(name, value, target, met) rows; a missing figure is not met."""
    def check(name, value, text, ok):
        return (name, value, text, None if value is None else bool(ok))

    j, h, fin, base, sft, dpo = (f[k] for k in ("judge_labels", "high_labels", "final_labels", "base", "sft", "dpo"))
    rows = [check("high-confidence label accuracy", h, f">= judge + 0.08 ({(j or 0) + 0.08:.3f})",
                  h is not None and j is not None and h >= j + 0.08),
            check("final-label accuracy", fin, f">= judge ({j if j is not None else 0:.3f})",
                  fin is not None and j is not None and fin >= j)]
    if large:
        rows += [check("judge after SFT", sft, ">= 0.70 and >= base + 0.15",
                       sft is not None and base is not None and sft >= 0.70 and sft >= base + 0.15),
                 check("judge after DPO", dpo, f">= SFT - 0.02", dpo is not None and sft is not None and dpo >= sft - 0.02),
                 check("position consistency after SFT", f["position_consistency_sft"], ">= 0.8",
                       f["position_consistency_sft"] is not None and f["position_consistency_sft"] >= 0.8)]
    else:
        rows.append(check("judge after SFT", sft, "SFT >= base + 0.10", sft is not None and base is not None
                          and sft >= base + 0.10))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--items", type=int, default=40)
    parser.add_argument("--eval-items", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--ablation", action="store_true", help="also SFT on judge-labelled random pairs")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="config override for every job")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    large = args.items >= 200
    results = {}
    for seed in args.seeds:
        run = args.workdir / f"seed-{seed}"
        f = figures(pipeline(run, seed, args.items, args.eval_items, args.sets))
        if args.ablation:
            f["ablation_random_judge_labels"] = ablation(run, [f"seed={seed}", *args.sets])
        f["targets"] = [dict(zip(("name", "value", "target", "met"), row)) for row in targets(f, large)]
        results[seed] = f
        print(f"\n=== seed {seed} ({args.items} items)")
        for row in f["targets"]:
            value = "n/a" if row["value"] is None else f"{row['value']:.3f}"
            print(f"  {row['name']:36s} {value:>7s}   target {row['target']:32s} {'met' if row['met'] else 'NOT met'}")
        print(f"  labels: judge {f['judge_labels']}, high {f['high_labels']} (n={f['high_pairs']}), final {f['final_labels']}")
        print(f"  reference: a judge that reads only surface cues (invented objects, filler) would score "
              f"{f['surface_cue_judge']} on these held-out pairs")
        print(f"  judge: base {f['base']}, SFT {f['sft']}, DPO {f['dpo']}; refinement used "
              f"{f['refine_used_pairs']} of {f['refine_input_pairs']} low-confidence pairs, skipped {f['refine_skipped']}")
        if args.ablation:
            print(f"  data selection: SFT on the high set {f['sft']} vs on {f['ablation_random_judge_labels']['pairs']} "
                  f"random judge-labelled pairs {f['ablation_random_judge_labels']['accuracy']}")
    out = args.json or args.workdir / "miniature.json"
    out.write_text(json.dumps({"items": args.items, "eval_items": args.eval_items, "seeds": results}, indent=1))
    print(f"\nreport: {out}")


if __name__ == "__main__":
    main()
