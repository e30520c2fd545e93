"""A scoring request that cannot run fails before Ray or any model starts, naming what is wrong."""
from __future__ import annotations

import pytest

from carevl.config import load_config
from carevl.scoring import pipeline
from carevl.scoring.pipeline import ScoreRequest, run_scoring


def test_a_missing_judge_folder_or_input_is_named(tmp_path, monkeypatch):
    started = []  # Ray may already run in this test session: record whether the job asks for it
    monkeypatch.setattr(pipeline, "init_ray", lambda config: started.append(config))
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"question": "q", "response_a": "a", "response_b": "b"}\n')
    config = load_config()
    with pytest.raises(FileNotFoundError, match="no model folder"):
        run_scoring(config, ScoreRequest(str(rows), str(tmp_path / "nojudge"), str(tmp_path / "out")))
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        run_scoring(config, ScoreRequest(str(tmp_path / "missing.jsonl"), "tiny:vlm_micro", str(tmp_path / "out")))
    with pytest.raises(ValueError, match="backend 'openai'|endpoint"):
        run_scoring(load_config(overrides=["models.judge.backend=openai", "models.judge.endpoint=http://x/v1"]),
                    ScoreRequest(str(rows), "judge", str(tmp_path / "out")))
    assert started == []
