"""What the pipeline shows while a stage job runs: one progress line per stage, drawn from the job's
own output, whose every line goes to the stage's log file instead of the console.

A job's output mixes what a user needs (CAREVL's own progress lines, the trainer's step counter and
losses) with what only a debugging session does (Ray's scheduling chatter, weight-loading bars, per
operator tables). `progress_message` picks the first kind out of one output line; `StageProgress`
shows the latest pick: rewritten in place on a terminal; when the output goes to a file or a CI log,
as a new line at most every `interval_s` seconds when it changed, and every `3 * interval_s` seconds
when it did not (so a quiet stage still shows that it runs).
"""
from __future__ import annotations

import re
import shutil
import sys
import textwrap
import time
from typing import TextIO

# "2026-12-04 04:00:36,957 INFO carevl.curation: curation: 1/3 units, ..." (carevl.cli.LOG_FORMAT)
_CAREVL_LOG = re.compile(r"\b(?:INFO|WARNING|ERROR) carevl\.[\w.]+: (?P<message>.+)$")
# tqdm's step counter as the trainer prints it, with no label (weight-loading and tokenizing bars have
# one): " 14%|#4        | 40/288 [00:31<03:10, ...]", possibly after Ray's "(RayTrainWorker pid=..)"
_TRAINER_STEP = re.compile(r"^(?:\([^)]*\)\s*)?\d+%\|[^|]*\|\s*(?P<done>\d+)/(?P<total>\d+) \[")
# the trainer's logged metrics: "{'loss': '0.6538', 'grad_norm': ...}"
_TRAINER_LOSS = re.compile(r"\{'loss': '?(?P<loss>[-\d.e+]+)'?")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Ray Data's per-operator line of its periodic progress table: "-- MapBatches(CritiqueSampler): 43/129"
_DATASET_OPERATOR = re.compile(r"logging_progress\.py:\d+ -- (?:MapBatches|Map|Filter|FlatMap)\((?P<name>\w+)\): "
                               r"(?P<done>\d+)/(?P<total>\d+|\?)$")


def progress_message(line: str) -> str | None:
    """The progress a job's output line reports, in a few words, or None for a line that reports none.

    CAREVL's own log lines are shown as logged; the trainer's tqdm counter becomes "step 40/288" and
    its metrics line "loss 0.654". Weight-loading and tokenizing bars are counters too, but not of
    training steps: they carry a label, and only bars without one count as steps.
    """
    text = _ANSI.sub("", line).strip()
    if match := _CAREVL_LOG.search(text):
        return match["message"].strip()
    if match := _TRAINER_STEP.search(text):
        return f"step {match['done']}/{match['total']}"
    if match := _TRAINER_LOSS.search(text):
        return f"loss {float(match['loss']):.3f}"
    return None


def dataset_operator(line: str) -> tuple[str, int, int | None] | None:
    """(operator, rows done, rows expected or None) from one line of Ray Data's progress table."""
    match = _DATASET_OPERATOR.search(_ANSI.sub("", line).strip())
    if match is None:
        return None
    total = None if match["total"] == "?" else int(match["total"])
    return match["name"], int(match["done"]), total


def dataset_frontier(operators: dict[str, tuple[int, int | None]]) -> str | None:
    """The first operator, in pipeline order, that has not finished its rows: where a streaming job is.
    Ray Data counts "0/1" before an operator has seen its input."""
    for name, (done, total) in operators.items():
        if total is None or done < total:
            return f"{name} {done}/{total if total is not None else '?'} rows" if done else f"{name} waiting"
    return None


def screen_width() -> int:
    """The terminal's width (COLUMNS when set), 100 when the output is not a terminal."""
    return shutil.get_terminal_size((100, 24)).columns


def wrap(line: str, width: int | None = None) -> str:
    """A long line folded to the screen width, continuation lines indented."""
    return textwrap.fill(line, width=width or screen_width(), subsequent_indent="    ", break_on_hyphens=False,
                         break_long_words=False)


def fit_width(text: str, width: int) -> str:
    """`text` cut to `width` characters (an ellipsis marks the cut)."""
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


class StageProgress:
    """The live progress line of one stage; `feed` every output line, `done` when the stage ends."""

    def __init__(self, name: str, out: TextIO | None = None, interval_s: float = 15.0) -> None:
        out = sys.stdout if out is None else out  # read when the stage starts: stdout may be redirected
        self.name, self.out, self.interval_s = name, out, interval_s
        self.live = out.isatty()
        self.start = time.monotonic()
        self.last_shown = self.start
        self.step: str | None = None
        self.message: str | None = None
        self.operators: dict[str, tuple[int, int | None]] = {}
        self.pending = False

    def _line(self) -> str:
        parts = [p for p in (self.step, dataset_frontier(self.operators), self.message) if p]
        return f"  {self.name} {time.monotonic() - self.start:4.0f}s  {' | '.join(parts)}"

    def feed(self, line: str) -> None:
        message = progress_message(line)
        if (operator := dataset_operator(line)) is not None:
            name, done, total = operator
            if self.operators.get(name) != (done, total):
                self.operators[name], self.pending = (done, total), True
        if message is not None:
            if message.startswith("step "):
                self.step = message
            else:
                self.message = message
            self.pending = True
        if self.step is None and self.message is None and not self.operators:
            return
        now = time.monotonic()
        if self.live and (message is not None or operator is not None):
            self.out.write("\r\x1b[K" + fit_width(self._line(), screen_width() - 1))
            self.out.flush()
        elif not self.live and now - self.last_shown >= self.interval_s * (1 if self.pending else 3):
            self.out.write(fit_width(self._line(), screen_width()) + "\n")
            self.out.flush()
            self.last_shown, self.pending = now, False

    def done(self, headline: str) -> float:
        """Replace the progress line with the stage's one-line result; returns the stage's seconds."""
        seconds = time.monotonic() - self.start
        if self.live:
            self.out.write("\r\x1b[K")
        self.out.write(wrap(f"✓ {self.name} {seconds:.0f}s  {headline}") + "\n")
        self.out.flush()
        return seconds
