"""The audit of hand-made run folders: recounts, consistency checks, bugs that must show, outputs, CLI."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from carevl.audit import audit_run, format_headline, headline, run_audit
from carevl.audit.report import render_markdown
from ray_jobs import audit as audit_job

from tests.audit.conftest import EXPERTS, write_gold, write_run
from tests.jobs import job_status


def recount(rows: list[dict], items: list[dict], predict) -> tuple[int, int]:
    """(correct, n) of predict(row) against gold read straight from the items, ties and abstentions out."""
    gold = {item["item_id"]: item["gold_scores"] for item in items}
    correct = n = 0
    for row in rows:
        a, b = (int(x) for x in row["pair_id"].rsplit(":", 1)[1].split("-"))
        sa, sb = gold[row["item_id"]][a], gold[row["item_id"]][b]
        prediction = predict(row)
        if sa == sb or prediction is None:
            continue
        n += 1
        correct += prediction == ("A" if sa > sb else "B")
    return correct, n


def _overall(block):
    return block["overall"]["correct"], block["overall"]["n"]


def test_every_source_matches_a_recount(hand_run):
    report = audit_run(str(hand_run["run"]), hand_run["gold"])
    rows, items, acc = hand_run["rows"], hand_run["items"], report["accuracy"]
    assert _overall(acc["judge"]) == recount(rows, items, lambda r: r["judge_choice"])
    no_verdict = [r for r in rows if r["judge_choice"] is None]
    assert acc["judge"]["overall"]["abstained"] == recount(no_verdict, items, lambda r: "A")[1] > 0
    for i, name in enumerate(EXPERTS):
        vote = lambda r, i=i: ("A" if r["expert_scores_a"][i] > r["expert_scores_b"][i]  # noqa: E731
                               else "B" if r["expert_scores_b"][i] > r["expert_scores_a"][i] else None)
        assert _overall(acc["experts"][name]) == recount(rows, items, vote)
    high = [r for r in rows if r["confidence"] == "high"]
    assert _overall(acc["high"]) == recount(high, items, lambda r: r["label"])
    for reason in ("judge_disagrees", "split_vote", "no_judge"):
        subset = [r for r in rows if r["low_reason"] == reason]
        assert _overall(acc["low"][reason]) == recount(subset, items, lambda r: r["label"])
    assert _overall(acc["final"]) == recount(rows, items, lambda r: r["label"])
    color = [r for r in rows if r["category"] == "color"]
    assert (acc["judge"]["per_category"]["color"]["correct"], acc["judge"]["per_category"]["color"]["n"]) == \
        recount(color, items, lambda r: r["judge_choice"])


def test_pairs_are_conserved_and_the_run_is_consistent(hand_run):
    report = audit_run(str(hand_run["run"]), hand_run["gold"])
    pairs = report["pairs"]
    assert pairs["total"] == len(hand_run["rows"]) == pairs["summary_total"] == 120
    assert pairs["high"] + pairs["low"] == pairs["total"]
    assert pairs["gold_ab"] + pairs["gold_ties"] + pairs["no_gold"] == pairs["total"]
    assert pairs["gold_ties"] > 0 and pairs["no_gold"] == 0 and pairs["conserved"]
    assert report["consistency"] == {"votes_mismatch": 0, "split_mismatch": 0, "folder_mismatch": 0,
                                     "duplicate_pair_ids": 0}
    for block in [report["accuracy"]["judge"], report["accuracy"]["final"], *report["accuracy"]["experts"].values()]:
        b = block["overall"]
        assert b["n"] + b["abstained"] + b["gold_ties"] + b["no_gold"] == pairs["total"]
    configured = [r for r in report["what_if"] if r["configured"]]
    assert len(configured) == 1
    assert configured[0]["high_size"] == pairs["high"]
    assert configured[0]["high"] == report["accuracy"]["high"]["overall"]
    assert configured[0]["final"] == report["accuracy"]["final"]["overall"]


def test_pairs_without_gold_are_counted_not_dropped(hand_run):
    gold_path = write_gold(hand_run["tmp"] / "partial.jsonl", hand_run["items"][:10])
    report = audit_run(str(hand_run["run"]), gold_path)
    assert report["pairs"]["no_gold"] == 90 and report["pairs"]["conserved"]
    assert report["accuracy"]["judge"]["overall"]["no_gold"] == 90


def test_an_inverted_vote_shows(hand_run):
    """A writer that stored votes the wrong way round: the consistency check and the majority drop."""
    good = audit_run(str(hand_run["run"]), hand_run["gold"])
    inverted = [{**r, "votes_a": r["votes_b"], "votes_b": r["votes_a"]} for r in hand_run["rows"]]
    report = audit_run(str(write_run(hand_run["tmp"] / "inverted", inverted)), hand_run["gold"])
    assert report["consistency"]["votes_mismatch"] > 0
    assert report["accuracy"]["vote_majority"]["overall"]["accuracy"] < \
        good["accuracy"]["vote_majority"]["overall"]["accuracy"] - 0.3


def test_a_flipped_label_shows(hand_run):
    """A run whose high-confidence labels were flipped: high-set accuracy collapses, the split check fires."""
    good = audit_run(str(hand_run["run"]), hand_run["gold"])
    flipped = [{**r, "label": {"A": "B", "B": "A"}[r["label"]]} if r["confidence"] == "high" else r
               for r in hand_run["rows"]]
    report = audit_run(str(write_run(hand_run["tmp"] / "flipped", flipped)), hand_run["gold"])
    assert report["accuracy"]["high"]["overall"]["accuracy"] < good["accuracy"]["high"]["overall"]["accuracy"] - 0.5
    assert report["consistency"]["split_mismatch"] == good["pairs"]["high"]
    assert headline(report)["high"]["accuracy"] < headline(good)["high"]["accuracy"]


def test_headline_and_markdown(hand_run):
    report = audit_run(str(hand_run["run"]), hand_run["gold"])
    h = headline(report)
    assert h["judge"] == {k: report["accuracy"]["judge"]["overall"][k] for k in ("accuracy", "n", "ci95")}
    assert h["high"]["n"] == report["accuracy"]["high"]["overall"]["n"] and h["pairs"] == 120
    line = format_headline(h)
    assert f"judge {h['judge']['accuracy']:.3f} (n={h['judge']['n']})" in line
    md = render_markdown(report)
    assert line in md and "| expert e2 |" in md and "| without e3 |" in md and "(run)" in md
    assert md.count("\n| low-confidence labels (") == 2 * 4   # all + 3 reasons, in two tables


def test_write_outputs(hand_run):
    out = hand_run["tmp"] / "audit"
    report = run_audit(str(hand_run["run"]), hand_run["gold"], out)
    assert json.loads((out / "report.json").read_text()) == json.loads(json.dumps(report))
    assert (out / "report.md").read_text().startswith("# Label audit")
    with Image.open(out / report["chart"]) as image:
        assert image.format == "PNG" and image.width > 500


def test_job_command_line(hand_run, capsys):
    out = hand_run["tmp"] / "cli"
    code = job_status(audit_job.main, ["--run", str(hand_run["run"]), "--gold", hand_run["gold"], "--output", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and printed.startswith("label audit: judge ")
    assert (out / "report.md").is_file()


def test_job_errors_are_clear(hand_run, capsys):
    other = write_gold(hand_run["tmp"] / "other.jsonl", [{**hand_run["items"][0], "item_id": "elsewhere"}])
    code = job_status(audit_job.main, ["--run", str(hand_run["run"]), "--gold", other, "--output", str(hand_run["tmp"] / "x")])
    assert code == 2 and "labels none of the 120 curated pairs" in capsys.readouterr().err
    code = job_status(audit_job.main, ["--run", str(hand_run["tmp"]), "--gold", hand_run["gold"],
                           "--output", str(hand_run["tmp"] / "y")])
    assert code == 2 and "no summary.json" in capsys.readouterr().err


def test_a_run_with_a_missing_pair_is_not_conserved(hand_run):
    run = write_run(hand_run["tmp"] / "short", hand_run["rows"])
    summary = json.loads((run / "summary.json").read_text())
    summary["pairs"]["total"] += 1       # the summary knows of a pair the folders do not hold
    (run / "summary.json").write_text(json.dumps(summary))
    report = audit_run(str(run), hand_run["gold"])
    assert not report["pairs"]["conserved"]


def test_scores_that_do_not_fit_the_experts_are_an_error(hand_run):
    summary = json.loads((hand_run["run"] / "summary.json").read_text())
    summary["experts"] = ["e1", "e2"]
    (hand_run["run"] / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ValueError, match="holds 3 scores, the run has 2 experts"):
        audit_run(str(hand_run["run"]), hand_run["gold"])
