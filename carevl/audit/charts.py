"""The audit's chart: high-set label accuracy against high-set size across tau (matplotlib, Agg backend).

One line per expert panel (all M experts, each panel with one expert left out), one point per tau,
labelled with tau; the full panel carries its 95% Wilson interval and marks the run's own tau. The
strong judge's accuracy on all pairs is the reference: curation earns its keep where a point lies
above it (paper 3.2).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend must be chosen before pyplot loads)


def _panels(what_if: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    panels: dict[str, list[dict[str, Any]]] = {}
    for row in what_if:
        name = f"all {row['m']} experts" if row["left_out"] is None else f"without {row['left_out']}"
        panels.setdefault(name, []).append(row)
    return panels


def _draw_full_panel(ax, rows: list[dict[str, Any]]) -> None:
    scored = [r for r in rows if r["high"]["accuracy"] is not None]
    xs = [r["high_size"] for r in scored]
    ys = [r["high"]["accuracy"] for r in scored]
    low = [y - r["high"]["ci95"][0] for y, r in zip(ys, scored)]
    high = [r["high"]["ci95"][1] - y for y, r in zip(ys, scored)]
    ax.errorbar(xs, ys, yerr=[low, high], color="black", linewidth=2.2, marker="o", capsize=4, zorder=4,
                label=f"all {rows[0]['m']} experts (95% CI)")
    for r in scored:
        ax.annotate(f"τ={r['tau']}" + (" (run)" if r["configured"] else ""), (r["high_size"], r["high"]["accuracy"]),
                    xytext=(6, 6), textcoords="offset points", fontsize=8, fontweight="bold" if r["configured"] else None)
        if r["configured"]:
            ax.plot([r["high_size"]], [r["high"]["accuracy"]], marker="*", markersize=16, color="gold",
                    markeredgecolor="black", zorder=5)


def _lowest(report: dict[str, Any]) -> float:
    """The lowest value drawn (an accuracy or the judge's interval), so the y axis can zoom in."""
    values = [r["high"]["ci95"][0] for r in report["what_if"] if r["high"]["ci95"]]
    judge = report["accuracy"]["judge"]["overall"]["ci95"]
    return max(0.0, min(values + ([judge[0]] if judge else []) + [0.5]))


def what_if_chart(report: dict[str, Any], path: str | Path) -> Path:
    """Write the chart of `report['what_if']` to `path` (PNG) and return the path."""
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for name, rows in _panels(report["what_if"]).items():
        if rows[0]["left_out"] is None:
            _draw_full_panel(ax, rows)
            continue
        scored = [r for r in rows if r["high"]["accuracy"] is not None]
        ax.plot([r["high_size"] for r in scored], [r["high"]["accuracy"] for r in scored], marker=".",
                linewidth=1, alpha=0.75, label=name)
        for r in scored:
            ax.annotate(str(r["tau"]), (r["high_size"], r["high"]["accuracy"]), xytext=(3, -9),
                        textcoords="offset points", fontsize=6, alpha=0.7)
    judge = report["accuracy"]["judge"]["overall"]
    if judge["accuracy"] is not None:
        ax.axhline(judge["accuracy"], color="crimson", linestyle="--", linewidth=1.5,
                   label=f"strong judge, all pairs ({judge['accuracy']:.3f}, n={judge['n']}; band: 95% CI)")
        ax.axhspan(*judge["ci95"], color="crimson", alpha=0.08)
    ax.set_xlabel("high-confidence set size (pairs)")
    ax.set_ylabel("label accuracy against gold (high set)")
    ax.set_ylim(_lowest(report) - 0.05, 1.06)
    ax.set_xlim(0, max([r["high_size"] for r in report["what_if"]] + [1]) * 1.15)   # room for the labels
    ax.grid(alpha=0.3)
    ax.set_title(f"High-confidence labels across τ ({report['pairs']['total']} curated pairs; "
                 "smaller τ keeps more pairs)", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
