"""The pipeline's console: which job output lines count as progress, and how often they are shown."""
from __future__ import annotations

import io

import pytest

from carevl.progress import StageProgress, fit_width, progress_message, wrap

# Lines as the stage jobs print them (a curation and an SFT job of the demo).
CURATION = [
    "2026-12-04 04:00:21,022\tINFO worker.py:1841 -- Connecting to existing Ray cluster at address: 10.0.0.2:38255...",
    "2026-12-04 04:00:21,978 INFO carevl.curation: curation: 40 input rows in 3 units, 0 already done, 3 to run",
    "2026-12-04 04:00:22,680\tINFO logging_progress.py:231 -- MapBatches(read_and_validate): 0/1",
    "Loading weights: 100%|██████████| 81/81 [00:00<00:00, 26490.34it/s]",
    "2026-12-04 04:00:36,957 INFO carevl.curation: curation: 1/3 units, 16 rows, 79 pairs, 5.3 pairs/s",
]
TRAINING = [
    "Tokenizing train dataset:  57%|█████▋    | 1514/2663 [00:01<00:00, 1527.76 examples/s]",
    "\x1b[36m(RayTrainWorker pid=11063)\x1b[0m {'loss': '7.947', 'grad_norm': '16.25', 'learning_rate': '0.0002667'}",
    "  5%|▌         | 14/288 [00:06<05:19,  1.13s/it]",
    "\x1b[36m(PlacementGroupCleaner pid=11033)\x1b[0m Failed to query Ray Train Controller actor state.",
]


def test_only_carevl_progress_and_the_trainers_steps_and_loss_count():
    assert [progress_message(line) for line in CURATION] == [
        None, "curation: 40 input rows in 3 units, 0 already done, 3 to run", None, None,
        "curation: 1/3 units, 16 rows, 79 pairs, 5.3 pairs/s"]
    assert [progress_message(line) for line in TRAINING] == [None, "loss 7.947", "step 14/288", None]


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> _Clock:
    fake = _Clock()
    monkeypatch.setattr("carevl.progress.time.monotonic", fake)
    return fake


def test_a_file_gets_a_progress_line_per_interval_and_one_headline(clock):
    out = io.StringIO()
    progress = StageProgress("train_sft", out=out, interval_s=10)
    for second in range(100):             # one trainer line a second for 100 s
        clock.now = float(second)
        progress.feed(f"  {second}%|#  | {second}/100 [00:01<00:00, 1.0it/s]")
    clock.now = 100.0
    assert progress.done("100 steps on 20 examples") == 100.0
    lines = out.getvalue().splitlines()
    assert len(lines) == 10 and lines[-1] == "✓ train_sft 100s  100 steps on 20 examples"
    assert lines[0] == "  train_sft   10s  step 10/100"


def test_a_quiet_stage_still_shows_that_it_runs_but_less_often(clock):
    out = io.StringIO()
    progress = StageProgress("refine", out=out, interval_s=10)
    progress.feed(CURATION[1])            # one message, then only chatter for 95 s
    for second in range(1, 96):
        clock.now = float(second)
        progress.feed(CURATION[0])
    shown = out.getvalue().splitlines()
    assert len(shown) == 3                # at 10 s (the new message), then every 30 s unchanged: 40 s, 70 s
    assert all("curation: 40 input rows" in line for line in shown)


def test_output_lines_fit_the_screen():
    assert fit_width("x" * 30, 10) == "x" * 9 + "…"
    folded = wrap("label audit: " + "judge 0.717 (n=180), " * 8, width=60).splitlines()
    assert len(folded) > 1 and all(len(line) <= 60 for line in folded)
    assert all(line.startswith("    ") for line in folded[1:])


def test_a_streaming_job_shows_the_first_operator_that_has_not_finished():
    table = ["2026-12-04 04:13:22,716\tINFO logging_progress.py:231 -- MapBatches(_read_units): 109/109",
             "2026-12-04 04:13:22,717\tINFO logging_progress.py:231 -- MapBatches(CritiqueSampler): 43/129",
             "2026-12-04 04:13:22,717\tINFO logging_progress.py:231 -- MapBatches(CritiqueScorer): 0/1"]
    out = io.StringIO()
    progress = StageProgress("refine", out=out, interval_s=0)
    for line in table:
        progress.feed(line)
    assert out.getvalue().splitlines()[-1].endswith("CritiqueSampler 43/129 rows")
    progress.feed(table[1].replace("43/129", "129/129"))
    assert out.getvalue().splitlines()[-1].endswith("CritiqueScorer waiting")
