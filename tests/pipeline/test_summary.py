"""The run summary puts the judge's synthetic accuracy next to what the answers' surface cues alone
would score on the same held-out pairs."""
from __future__ import annotations

import json

from carevl.data.synth import SynthSpec, surface_cue_accuracy, write_eval_pairs
from carevl.run_report import collect_summary, format_summary


def test_the_summary_reads_the_surface_cue_reference_of_the_runs_own_eval_pairs(tmp_path):
    run = tmp_path / "run"
    assert collect_summary(run)["surface_cue_reference"] is None        # no synthetic eval set, no figure
    spec = SynthSpec(max_responses=3, verbose_rate=0.6)
    write_eval_pairs(str(run / "data" / "eval"), 60, 5, spec)
    summary = collect_summary(run)
    assert summary["surface_cue_reference"] == surface_cue_accuracy(60, 5, spec)["all"]
    assert summary["surface_cue_reference"] != surface_cue_accuracy(60, 5)["all"]   # the set's own spec is used
    report = run / "eval" / "synthetic_sft" / "report.json"
    report.parent.mkdir(parents=True)
    report.write_text(json.dumps({"metrics": {"overall": 0.5}, "bias": {"position_consistency": {"rate": 0.75}}}))
    text = format_summary(collect_summary(run), run, width=72)
    assert all(len(line) <= 72 for line in text.splitlines() if "/" not in line)   # folded, not cut
    assert f"SFT 0.500 (position consistency SFT 0.75); surface cues alone would score " \
           f"{summary['surface_cue_reference']:.3f}" in " ".join(text.split())
    assert str(run / "pipeline_summary.json") in " ".join(text.split())
