"""Evaluation outputs: predictions.jsonl (resume-safe), report.json and report.md.

predictions.jsonl holds one line per item and run; a re-run reads it back and judges only the
(item, run) pairs that are missing, so a run killed midway finishes with exactly one line each.
"""
from __future__ import annotations

import csv
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from carevl.evaluation import bias
from carevl.evaluation.judgements import STATUS_NO_PREFERENCE, STATUS_OK, STATUS_UNPARSEABLE
from carevl.evaluation.loaders import VL_REWARDBENCH_CATEGORIES
from carevl.evaluation.metrics import pairwise_metrics, per_run_spread, vl_rewardbench_metrics

REFERENCE_CSV = Path(__file__).with_name("reference_scores.csv")
BENCHMARKS = ("vl_rewardbench", "pairwise", "synthetic")
# Statuses with a judge answer; every other status is a reason the judge could not answer (an error).
_SCORED_STATUSES = (STATUS_OK, STATUS_UNPARSEABLE, STATUS_NO_PREFERENCE)


class PredictionStore:
    """Append-only predictions.jsonl keyed by (id, run).

    Opening it drops a torn last line (a kill during a write) and repeated keys, rewriting the
    file only when something had to go.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.records: list[dict[str, Any]] = []
        self._keys: set[tuple[str, int]] = set()
        if self.path.is_file():
            self._load()

    def _load(self) -> None:
        dirty = False
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
                key = (record["id"], int(record["run"]))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                dirty = True
                continue
            if key in self._keys:
                dirty = True
                continue
            self._keys.add(key)
            self.records.append(record)
        if dirty:
            tmp = self.path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in self.records), encoding="utf-8")
            os.replace(tmp, self.path)

    @property
    def done(self) -> set[tuple[str, int]]:
        return set(self._keys)

    def append(self, records: Iterable[dict[str, Any]]) -> int:
        """Write new records (skipping keys already stored), flushed to disk; returns how many."""
        fresh = [r for r in records if (r["id"], int(r["run"])) not in self._keys]
        if not fresh:
            return 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            for record in fresh:
                fh.write(json.dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        for record in fresh:
            self._keys.add((record["id"], int(record["run"])))
            self.records.append(record)
        return len(fresh)


def _column(records: list[dict[str, Any]], name: str) -> list[Any]:
    return [r[name] for r in records]


def benchmark_metrics(benchmark: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    """The benchmark's headline metrics (paper Table 1 for VL-RewardBench, Table 2 for pairwise)."""
    ids, cats = _column(records, "id"), _column(records, "category")
    if benchmark == "vl_rewardbench":
        return vl_rewardbench_metrics(ids, cats, _column(records, "correct"))
    metrics = pairwise_metrics(ids, cats, _column(records, "label"), _column(records, "tie_prediction"),
                               _column(records, "verdict"))
    if benchmark == "synthetic":
        # Headline numbers for held-out synthetic pairs with a preference: the verdict must name the better
        # answer in both orders (a swap tie counts as wrong), so position bias cannot pass for skill.
        metrics["overall"] = metrics["swap_checked"]["overall"]
        metrics["macro"] = metrics["swap_checked"]["average"]
    return metrics


def bias_report(records: list[dict[str, Any]], length_edges: list[int]) -> dict[str, Any]:
    """Position consistency, first-position preference, length bias, tie rate, accuracy by length."""
    with_swap = [r for r in records if r.get("status_swapped") is not None]
    return {
        "position_consistency": bias.position_consistency(
            _column(with_swap, "verdict"), _column(with_swap, "verdict_swapped")) if with_swap else None,
        "first_position": bias.first_position_rate([v for r in records for v in r["shown_verdicts"]]),
        "length_bias": bias.length_bias(_column(records, "len_a"), _column(records, "len_b"),
                                        _column(records, "label"), _column(records, "verdict")),
        "tie_rate": bias.tie_rate(_column(records, "tie_prediction"), _column(records, "label")),
        "accuracy_by_length": bias.accuracy_by_length_bucket(
            [(r["len_a"] + r["len_b"]) / 2 for r in records], _column(records, "correct"), length_edges),
    }


def _run_spread(benchmark: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Overall accuracy per run on the headline setting: all items with the A/B verdict for
    VL-RewardBench; for pairwise and synthetic the without-tie setting (plain verdict, tie labels out)."""
    if benchmark != "vl_rewardbench":
        records = [r for r in records if r["label"] != "tie"]
        correct = [r["verdict"] is not None and r["verdict"] == r["label"] for r in records]
    else:
        correct = _column(records, "correct")
    spread = per_run_spread(_column(records, "run"), _column(records, "id"), correct)
    spread["setting"] = "all items" if benchmark == "vl_rewardbench" else "without_tie"
    return spread


def build_report(benchmark: str, records: list[dict[str, Any]], meta: dict[str, Any],
                 quarantine: list[dict[str, Any]], length_edges: list[int]) -> dict[str, Any]:
    """Everything report.json holds. `meta` describes the run (judge, mode, k, seed, text_only, ...)."""
    statuses = Counter(r["status"] for r in records)
    items_per_category = Counter()
    for item_id, category in {(r["id"], r["category"]) for r in records}:
        items_per_category[category] += 1
    return {
        "benchmark": benchmark,
        **meta,
        "counts": {
            "items": len({r["id"] for r in records}),
            "judgements": len(records),
            "items_per_category": dict(sorted(items_per_category.items())),
            "quarantined": len(quarantine),
            "unparseable": statuses.get(STATUS_UNPARSEABLE, 0),
            "errors": sum(n for s, n in statuses.items() if s not in _SCORED_STATUSES),
            "error_reasons": {s: n for s, n in sorted(statuses.items()) if s not in _SCORED_STATUSES},
            "no_preference": statuses.get(STATUS_NO_PREFERENCE, 0),
        },
        "metrics": benchmark_metrics(benchmark, records),
        "runs": _run_spread(benchmark, records),
        "bias": bias_report(records, length_edges),
    }


def load_reference(path: str | Path = REFERENCE_CSV) -> list[dict[str, Any]]:
    """Published scores from paper Tables 1 and 2, as fractions: [{benchmark, setting, model, metric, value}]."""
    rows = []
    with Path(path).open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            scale = 100.0 if row["unit"] == "percent" else 1.0
            rows.append({**row, "value": float(row["value"]) / scale})
    return rows


def write_json(path: str | Path, payload: dict[str, Any]) -> None:
    """Write atomically (temp file + rename) so a reader never sees half a report."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _fmt(value: float | None, percent: bool) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.1f}" if percent else f"{value:.3f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(row) + " |" for row in rows]


def _metric_tables(report: dict[str, Any], reference: list[dict[str, Any]], ref_models: list[str]) -> list[str]:
    metrics, benchmark = report["metrics"], report["benchmark"]
    if benchmark == "vl_rewardbench":
        cols = [*VL_REWARDBENCH_CATEGORIES, "overall", "macro"]
        ref = {(r["model"], r["metric"]): r["value"] for r in reference if r["benchmark"] == benchmark}
        rows = [["**this judge**", *(_fmt(metrics[c], True) for c in cols)]]
        rows += [[m, *(_fmt(ref.get((m, c)), True) for c in cols)] for m in ref_models
                 if any((m, c) in ref for c in cols)]
        return ["Accuracy in percent (paper Table 1 layout); reference rows are the paper's published numbers.",
                "", *_table(["model", *cols], rows)]
    if benchmark in ("pairwise", "synthetic"):
        lines = [] if benchmark == "pairwise" else [
            f"Headline (pairs with a preference, right in both answer orders): overall "
            f"{_fmt(metrics['overall'], False)}, macro {_fmt(metrics['macro'], False)}", ""]
        for setting in ("with_tie", "without_tie", "swap_checked"):
            block = metrics[setting]
            cats = list(block["per_category"])
            lines += [f"**Pair {setting.replace('_', ' ')}** (MLLM-as-a-Judge setting, paper Table 2; "
                      f"average = mean of category accuracies)", ""]
            lines += _table(["", *cats, "average", "overall"], [
                ["accuracy", *(_fmt(block["per_category"][c], False) for c in cats),
                 _fmt(block["average"], False), _fmt(block["overall"], False)],
                ["items", *(str(block["n_items"][c]) for c in cats), "", str(block["n_items_total"])]])
            lines.append("")
        return lines
    raise ValueError(f"unknown benchmark {benchmark!r}")


def _bias_lines(b: dict[str, Any]) -> list[str]:
    pc, fp, lb, tr = b["position_consistency"], b["first_position"], b["length_bias"], b["tie_rate"]
    rows = [
        ["position consistency (same choice in both orders)",
         _fmt(pc["rate"], False) if pc else "not measured", str(pc["n_pairs"]) if pc else "0"],
        ["picks the answer shown first", _fmt(fp["rate"], False), str(fp["n"])],
        ["judge picks the longer answer", _fmt(lb["judge_picks_longer"], False), str(lb["n"])],
        ["label picks the longer answer", _fmt(lb["label_picks_longer"], False), str(lb["n"])],
        ["judge tie rate (tie rule)", _fmt(tr["rate"], False), str(tr["n"])],
        ["label tie rate", _fmt(tr["label_rate"], False), ""],
    ]
    lines = _table(["measure", "value", "n"], rows) + ["", "Accuracy by mean answer length (characters):", ""]
    lines += _table(["length", "accuracy", "judgements"],
                    [[x["bucket"], _fmt(x["accuracy"], False), str(x["n"])] for x in b["accuracy_by_length"]])
    return lines


def render_markdown(report: dict[str, Any], reference: list[dict[str, Any]], ref_models: list[str],
                    charts: list[str]) -> str:
    """report.md: run description, metric tables (beside published numbers), counts, bias report."""
    c, runs = report["counts"], report["runs"]
    lines = [f"# Evaluation: {report['benchmark']}", "",
             f"- judge: `{report.get('judge')}` (mode {report.get('mode')}), k = {report.get('k')} "
             f"judgement(s) per item, seed {report.get('seed')}",
             f"- items: {c['items']} ({', '.join(f'{k} {v}' for k, v in c['items_per_category'].items())}), "
             f"judgements: {c['judgements']}, quarantined rows: {c['quarantined']}",
             f"- unparseable verdicts: {c['unparseable']}, judge errors: {c['errors']} "
             f"{c['error_reasons'] or ''}, no preference: {c['no_preference']} (all counted as wrong)",
             f"- overall accuracy per run ({runs['setting']}): mean {_fmt(runs['mean'], False)}, "
             f"std {_fmt(runs['std'], False)}"]
    lines += [f"- note: {note}" for note in report.get("notes", [])]
    lines += ["", "## Accuracy", "", *_metric_tables(report, reference, ref_models), "",
              "## Bias report", "", *_bias_lines(report["bias"]), ""]
    if report.get("calibration"):
        lines += ["## Calibration", "", *_calibration_lines(report["calibration"]), ""]
    if charts:
        lines += ["## Charts", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in charts] + [""]
    return "\n".join(lines)


def _calibration_lines(cal: dict[str, Any]) -> list[str]:
    """ECE and NLL of p_a against the A/B labels (carevl.evaluation.reliability)."""
    temperature = cal.get("temperature")
    rows = [[name, _fmt(block["ece"], False), _fmt(block["nll"], False), str(block["n"])]
            for name, block in (("each order judged", cal["per_order"]), ("both orders averaged", cal["debiased"]))
            if block]
    applied = "unknown" if temperature is None else f"{temperature:.3g}"
    return [f"Calibration temperature applied by the judge: {applied} (1 = raw). ECE: |mean p_a - share of A "
            "better| per equal-width bin of p_a (score.calibration.bins), weighted by judgements.", "",
            *_table(["p_a", "ECE", "NLL (nats)", "judgements"], rows)]
