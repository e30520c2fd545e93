"""PNG charts of an evaluation report (matplotlib, Agg backend: no display needed).

- accuracy.png: the judge's per-category accuracy beside the paper's published numbers for
  reference models (paper Tables 1 and 2, kept in reference_scores.csv);
- bias.png: position and length bias, tie rate, accuracy by answer length, accuracy per run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend must be chosen before pyplot loads)

from carevl.evaluation.loaders import VL_REWARDBENCH_CATEGORIES  # noqa: E402

THIS_JUDGE = "this judge"


def _grouped_bars(ax, groups: list[str], series: dict[str, list[float | None]], ylabel: str) -> None:
    """Bars for each series side by side within each group; a missing value leaves a gap."""
    n = max(len(series), 1)
    width = 0.8 / n
    for s, (name, values) in enumerate(series.items()):
        xs = [g + (s - (n - 1) / 2) * width for g in range(len(groups))]
        heights = [v if v is not None else 0.0 for v in values]
        bars = ax.bar(xs, heights, width, label=name, edgecolor="black" if name == THIS_JUDGE else None,
                      linewidth=1.2, zorder=3 if name == THIS_JUDGE else 2)
        for bar, v in zip(bars, values):
            if v is None:
                bar.set_visible(False)
            if name == THIS_JUDGE:  # print the judge's own numbers, so a zero bar is still readable
                ax.annotate("n/a" if v is None else f"{v:.2f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            ha="center", va="bottom", fontsize=7, xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=30 if len(groups) > 5 else 0, ha="right" if len(groups) > 5 else "center")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(ylabel)
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1, zorder=1)
    ax.grid(axis="y", alpha=0.3, zorder=0)


def _reference_series(reference: list[dict[str, Any]], benchmark: str, setting: str,
                      models: list[str], metrics: list[str]) -> dict[str, list[float | None]]:
    table = {(r["model"], r["metric"].lower()): r["value"] for r in reference
             if r["benchmark"] == benchmark and r["setting"] == setting}
    series = {}
    for model in models:
        values = [table.get((model, m.lower())) for m in metrics]
        if any(v is not None for v in values):
            series[model] = values
    return series


def accuracy_chart(report: dict[str, Any], reference: list[dict[str, Any]], ref_models: list[str],
                   path: str | Path) -> Path:
    """Per-category accuracy of this judge beside published reference models."""
    benchmark, metrics = report["benchmark"], report["metrics"]
    if benchmark in ("pairwise", "synthetic"):
        fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), sharey=True)
        for ax, setting in zip(axes, ("with_tie", "without_tie")):
            block = metrics[setting]
            groups = [*block["per_category"], "average"]
            series = {THIS_JUDGE: [*block["per_category"].values(), block["average"]]}
            if benchmark == "pairwise":  # published numbers exist only for MLLM-as-a-Judge's categories
                series.update(_reference_series(reference, "mllm_as_a_judge", setting, ref_models, groups))
            note = "paper Table 2 references" if benchmark == "pairwise" else "no published reference"
            _grouped_bars(ax, groups, series, "accuracy")
            ax.set_title(f"{benchmark}: pair {setting.replace('_', ' ')} ({note})", fontsize=10)
        axes[0].legend(fontsize=8, loc="upper left")
    else:
        fig, ax = plt.subplots(figsize=(10, 4.8))
        groups = [*VL_REWARDBENCH_CATEGORIES, "overall", "macro"]
        series = {THIS_JUDGE: [metrics[g] for g in groups]}
        series.update(_reference_series(reference, benchmark, "", ref_models, groups))
        title = "VL-RewardBench accuracy (references: paper Table 1)"
        if report.get("text_only"):
            title += "\ntext-only run: the judge saw no images, not comparable to the references"
        _grouped_bars(ax, groups, series, "accuracy")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def bias_chart(report: dict[str, Any], path: str | Path) -> Path:
    """Four panels: position/tie rates, length bias, accuracy by answer length, accuracy per run."""
    b, runs = report["bias"], report["runs"]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    pc = b["position_consistency"]
    rates = {"position\nconsistency": pc["rate"] if pc else None,
             "picks answer\nshown first": b["first_position"]["rate"],
             "judge\ntie rate": b["tie_rate"]["rate"], "label\ntie rate": b["tie_rate"]["label_rate"]}
    _labelled_bars(axes[0, 0], list(rates), list(rates.values()), "rate", "Position bias and ties")
    lb = b["length_bias"]
    _labelled_bars(axes[0, 1], ["judge picks\nlonger", "label picks\nlonger"],
                   [lb["judge_picks_longer"], lb["label_picks_longer"]], "rate",
                   f"Length bias (n = {lb['n']} judgements)")
    buckets = b["accuracy_by_length"]
    _labelled_bars(axes[1, 0], [f"{x['bucket']}\n(n={x['n']})" for x in buckets],
                   [x["accuracy"] for x in buckets], "accuracy", "Accuracy by mean answer length (chars)")
    per_run = runs["per_run"]
    _labelled_bars(axes[1, 1], [f"run {r}" for r in per_run], list(per_run.values()), "overall accuracy",
                   f"Overall accuracy per run (k = {len(per_run)}, {runs.get('setting', 'all items')})")
    fig.suptitle(f"Judge bias report: {report['benchmark']}", fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def _labelled_bars(ax, names: list[str], values: list[float | None], ylabel: str, title: str) -> None:
    heights = [v if v is not None else 0.0 for v in values]
    bars = ax.bar(range(len(names)), heights, color="tab:blue", zorder=2)
    for bar, v in zip(bars, values):
        ax.annotate("n/a" if v is None else f"{v:.2f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, fontsize=8)
    ax.set_ylim(0, 1.1)
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3, zorder=0)


def reliability_chart(curves: dict[str, dict[str, Any] | None], path: str | Path, title: str) -> Path:
    """Reliability diagram: per bin, the mean p_a against the share of pairs where A was better (a
    calibrated judge lies on the diagonal), one line per curve with its ECE; judgements per bin below."""
    fig, (ax, counts) = plt.subplots(2, 1, figsize=(6.5, 7.5), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="calibrated")
    shown = [(name, block) for name, block in curves.items() if block]
    width = 0.8 / max(len(shown), 1) / max(len(shown[0][1]["bins"]) if shown else 10, 10)
    for s, (name, block) in enumerate(shown):
        bins = block["bins"]
        ax.plot([b["mean_p"] for b in bins], [b["frequency"] for b in bins], marker="o",
                label=f"{name}: ECE {block['ece']:.3f} (n = {block['n']})")
        centres = [(b["low"] + b["high"]) / 2 + (s - (len(shown) - 1) / 2) * width for b in bins]
        counts.bar(centres, [b["count"] for b in bins], width=width, label=name)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of pairs where A is better")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    counts.set_xlabel("judge p_a (bin mean)")
    counts.set_ylabel("judgements")
    counts.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
