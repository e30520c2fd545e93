"""The scoring job submitted with `ray job submit` to a head started by `ray start --head`, token
authentication on, as on a cluster (the curation job's test shows the same path)."""
from __future__ import annotations

import json

import pytest

from carevl.testing.items import write_jsonl

from tests.jobs import submit_to_fresh_head
from tests.scoring.conftest import group_rows, pair_rows

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_score_through_ray_job_submit(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", pair_rows(3) + group_rows(1))
    run_dir = tmp_path / "run"
    log = submit_to_fresh_head(["ray_jobs.score", "--input", str(path), "--output", str(run_dir),
                                "--judge", "tiny:vlm_micro", "--set", "score.unit_rows=2",
                                "--set", "score.method=copeland"], "csj")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rows_conserved"] and (summary["pairs"], summary["groups"]) == (3, 1)
    assert summary["method"] == "copeland" and summary["judgements"] == 3 * 2 + 6
    # The driver joined the head instead of starting a Ray of its own.
    assert "Started a local Ray instance" not in log
