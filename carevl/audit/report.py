"""The audit report: accuracy of every label source against gold, the run's own consistency, the
what-if table, the headline, and report.md.

Sources (paper 3.2 and 3.4), each over the curated pairs in their own A/B order:
- `judge`: the strong judge's verdict on all pairs (a missing verdict abstains);
- `experts`: each expert's vote from its stored scores (an exact tie abstains);
- `vote_majority`: v_A against v_B (equal votes abstain);
- `high`: the labels of the high-confidence pairs (the SFT set, paper 3.3);
- `low`: the labels of the low-confidence pairs, all together and per `low_reason` (paper 3.4);
- `final`: the `label` column over high + low.
"""
from __future__ import annotations

from typing import Any, Sequence

from carevl.audit.metrics import select, tally_by_category, vote_majority
from carevl.audit.pairs import CuratedPairs
from carevl.audit.whatif import apply_split, what_if_table
from carevl.curation.votes import HIGH, LOW, LOW_REASONS, count_votes_matrix, expert_vote

CHART_FILE = "high_vs_size.png"


def _subset(p: CuratedPairs, gold: Sequence[str | None], values: Sequence[str | None],
            mask: Sequence[bool]) -> dict[str, Any]:
    return tally_by_category(select(values, mask), select(gold, mask), select(p.category, mask))


def accuracy_sections(p: CuratedPairs, gold: Sequence[str | None], experts: Sequence[str]) -> dict[str, Any]:
    """Accuracy against gold, overall and per category, for every label source (module docstring)."""
    everything = [True] * len(p)
    expert_votes = {name: [expert_vote(a, b) for a, b in zip(p.scores_a[:, i], p.scores_b[:, i])]
                    for i, name in enumerate(experts)}
    majority = [vote_majority(a, b) for a, b in zip(p.votes_a, p.votes_b)]
    high = [c == HIGH for c in p.confidence]
    low = [c == LOW for c in p.confidence]
    reasons = list(LOW_REASONS) + sorted({r for r in p.low_reason if r is not None} - set(LOW_REASONS))
    return {
        "judge": _subset(p, gold, p.judge_choice, everything),
        "experts": {name: _subset(p, gold, votes, everything) for name, votes in expert_votes.items()},
        "vote_majority": _subset(p, gold, majority, everything),
        "high": _subset(p, gold, p.label, high),
        "low": {"all": _subset(p, gold, p.label, low),
                **{r: _subset(p, gold, p.label, [c and lr == r for c, lr in zip(low, p.low_reason)])
                   for r in reasons}},
        "final": _subset(p, gold, p.label, everything),
    }


def consistency(p: CuratedPairs, tau: int) -> dict[str, int]:
    """Pairs whose stored columns disagree with the rules re-applied to their stored scores: votes
    recounted (paper 3.2), class and label re-derived at the run's tau (paper 3.2, 3.4), the class
    column against the folder the row was read from, and pair ids seen more than once. All zero in a
    healthy run; anything else points at a bug between scoring and writing."""
    votes_a, votes_b = count_votes_matrix(p.scores_a, p.scores_b)
    decisions = apply_split(p.votes_a, p.votes_b, p.judge_choice, tau)
    return {
        "votes_mismatch": int(((votes_a != p.votes_a) | (votes_b != p.votes_b)).sum()),
        "split_mismatch": sum((d.confidence, d.low_reason, d.label) != (c, r, lab) for d, c, r, lab
                              in zip(decisions, p.confidence, p.low_reason, p.label)),
        "folder_mismatch": sum(c != f for c, f in zip(p.confidence, p.folder)),
        "duplicate_pair_ids": len(p.pair_id) - len(set(p.pair_id)),
    }


def pair_counts(p: CuratedPairs, gold: Sequence[str | None], summary_total: int | None) -> dict[str, Any]:
    """Where every curated pair went: class, gold kind, and whether the count matches the run summary."""
    counts = {"total": len(p), "high": sum(c == HIGH for c in p.confidence),
              "low": sum(c == LOW for c in p.confidence), "gold_ab": sum(g in ("A", "B") for g in gold),
              "gold_ties": sum(g == "tie" for g in gold), "no_gold": sum(g is None for g in gold),
              "summary_total": summary_total}
    counts["conserved"] = (counts["high"] + counts["low"] == counts["total"]
                           and counts["gold_ab"] + counts["gold_ties"] + counts["no_gold"] == counts["total"]
                           and (summary_total is None or summary_total == counts["total"]))
    return counts


def build_report(p: CuratedPairs, gold: Sequence[str | None], *, experts: Sequence[str], tau: int,
                 run_dir: str, gold_source: dict[str, Any], summary_total: int | None) -> dict[str, Any]:
    """The whole audit as one JSON-ready document (report.json)."""
    if len(gold) != len(p):
        raise ValueError(f"{len(gold)} gold labels for {len(p)} pairs")
    return {
        "run": run_dir,
        "gold": gold_source,
        "experts": list(experts),
        "tau": tau,
        "pairs": pair_counts(p, gold, summary_total),
        "consistency": consistency(p, tau),
        "accuracy": accuracy_sections(p, gold, experts),
        "what_if": what_if_table(p.scores_a, p.scores_b, p.judge_choice, gold, experts, tau),
        "chart": CHART_FILE,
    }


def headline(report: dict[str, Any]) -> dict[str, Any]:
    """Judge, high-set and final-label accuracy (with n and 95% interval): the figures a pipeline
    summary prints. CAREVL's curation works when high > judge and final >= judge (paper 3.2, Table 3)."""
    acc = report["accuracy"]
    pick = ("accuracy", "n", "ci95")
    return {"judge": {k: acc["judge"]["overall"][k] for k in pick},
            "high": {k: acc["high"]["overall"][k] for k in pick},
            "final": {k: acc["final"]["overall"][k] for k in pick},
            "pairs": report["pairs"]["total"], "no_gold": report["pairs"]["no_gold"],
            "gold_ties": report["pairs"]["gold_ties"]}


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def format_headline(h: dict[str, Any]) -> str:
    """One line: 'label audit: judge 0.772 (n=180), high-confidence 0.822 (n=90), final 0.790 (n=180)'."""
    parts = [f"{name} {_fmt(h[key]['accuracy'])} (n={h[key]['n']})"
             for key, name in (("judge", "judge"), ("high", "high-confidence"), ("final", "final labels"))]
    return (f"label audit: {', '.join(parts)}; {h['pairs']} pairs, {h['gold_ties']} gold ties, "
            f"{h['no_gold']} without gold")


# ------------------------------------------------------------------------------------------ report.md

def _interval(block: dict[str, Any]) -> str:
    return "n/a" if block["ci95"] is None else f"[{block['ci95'][0]:.3f}, {block['ci95'][1]:.3f}]"


def _sources(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(row name, per-category block) in report order."""
    acc = report["accuracy"]
    rows = [("strong judge", acc["judge"])]
    rows += [(f"expert {name}", block) for name, block in acc["experts"].items()]
    rows += [("vote majority", acc["vote_majority"]), ("high-confidence labels", acc["high"])]
    rows += [(f"low-confidence labels ({reason})", block) for reason, block in acc["low"].items()]
    rows.append(("final labels (high + low)", acc["final"]))
    return rows


def _accuracy_table(report: dict[str, Any]) -> list[str]:
    lines = ["| source | n | correct | accuracy | 95% CI | abstained | gold ties | no gold |",
             "|---|---:|---:|---:|---|---:|---:|---:|"]
    for name, block in _sources(report):
        b = block["overall"]
        lines.append(f"| {name} | {b['n']} | {b['correct']} | {_fmt(b['accuracy'])} | {_interval(b)} "
                     f"| {b['abstained']} | {b['gold_ties']} | {b['no_gold']} |")
    return lines


def _category_table(report: dict[str, Any]) -> list[str]:
    categories = sorted(report["accuracy"]["judge"]["per_category"])
    lines = ["| source | " + " | ".join(categories) + " |", "|---|" + "---:|" * len(categories)]
    for name, block in _sources(report):
        cells = []
        for c in categories:
            b = block["per_category"].get(c)
            cells.append("-" if b is None or b["n"] == 0 else f"{_fmt(b['accuracy'])} ({b['n']})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _what_if_lines(report: dict[str, Any]) -> list[str]:
    lines = ["| experts | tau | high size | high accuracy | 95% CI | final accuracy | 95% CI |",
             "|---|---:|---:|---:|---|---:|---|"]
    for row in report["what_if"]:
        panel = f"all {row['m']}" if row["left_out"] is None else f"without {row['left_out']}"
        tau = f"**{row['tau']}** (run)" if row["configured"] else str(row["tau"])
        lines.append(f"| {panel} | {tau} | {row['high_size']} | {_fmt(row['high']['accuracy'])} "
                     f"| {_interval(row['high'])} | {_fmt(row['final']['accuracy'])} | {_interval(row['final'])} |")
    return lines


def render_markdown(report: dict[str, Any]) -> str:
    """report.md: headline, pair accounting, accuracy tables, per-category table, what-if table, chart."""
    pairs, checks, gold = report["pairs"], report["consistency"], report["gold"]
    lines = [
        "# Label audit", "",
        f"Run `{report['run']}`, gold `{gold['source']}` ({gold['kind']}, {gold['rows']} rows); "
        f"experts {', '.join(report['experts'])}; tau = {report['tau']}.", "",
        f"**{format_headline(headline(report))}**", "",
        "## Pairs", "",
        f"{pairs['total']} curated pairs (summary.json: {pairs['summary_total']}): {pairs['high']} high, "
        f"{pairs['low']} low; {pairs['gold_ab']} with an A/B gold label, {pairs['gold_ties']} gold ties, "
        f"{pairs['no_gold']} without gold. Every pair accounted for: {'yes' if pairs['conserved'] else 'NO'}.", "",
        "Stored columns against the rules re-applied to the stored scores: "
        + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in checks.items()) + ".", "",
        "## Accuracy against gold", "",
        "Accuracy counts pairs with an A/B gold label and a prediction; abstentions (no verdict, an "
        "expert's tie, equal votes, no label) and gold ties are counted, not scored.", "",
        *_accuracy_table(report), "",
        "## Accuracy per category (accuracy and n)", "",
        *_category_table(report), "",
        "## What if: other thresholds and panels, from the stored scores (no model run)", "",
        *_what_if_lines(report), "",
        f"![high-set accuracy against high-set size]({report['chart']})", "",
    ]
    return "\n".join(lines)
