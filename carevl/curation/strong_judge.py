"""The strong LVLM's verdict and explanation for every pair (paper 3.2).

Backends (config `curation.strong_judge.backend`):
- `column`: verdicts shipped with the input, read at validation (`carevl.curation.pairs.column_choice`);
- `openai`: an OpenAI-compatible endpoint (the paper uses GPT-4o), see `carevl.models.backends.openai`;
- `local`: an LVLM through the generation backend its model spec names.
Both model backends send the prompt of `carevl.judge_format` and parse the answer strictly with its
`parse_verdict`; every pair records a status: ok, unparseable (an answer without a verdict line) or
error (the request failed for good). No verdict is ever guessed.
"""
from __future__ import annotations

from pathlib import Path

from carevl.config import ModelSpec
from carevl.config.stages import InputLimits
from carevl.curation.columns import ItemStage, active_rows, load_row_images
from carevl.curation.pairs import JUDGE_ERROR, JUDGE_OK, JUDGE_UNPARSEABLE
from carevl.judge_format import judge_messages, parse_explanation, parse_verdict
from carevl.models.backends import make_generator


def read_judgement(text: str | None) -> tuple[str | None, str | None, str]:
    """(choice, explanation, status) from one raw judge answer; None means the request failed."""
    if text is None:
        return None, None, JUDGE_ERROR
    choice = parse_verdict(text)
    explanation = parse_explanation(text) or None
    return (choice, explanation, JUDGE_OK) if choice else (None, text.strip() or None, JUDGE_UNPARSEABLE)


class StrongJudge(ItemStage):
    """Fills `judge_choices`, `judge_explanations`, `judge_statuses` (one entry per pair of the item)."""

    required = ("question", "responses", "pairs_a", "pairs_b", "image_path", "image_bytes")

    def __init__(self, spec: ModelSpec, model_cache: str, limits: InputLimits, allow_remote_images: bool = False,
                 request_cache: str | None = None, seed: int = 0):
        self.spec, self.limits, self.allow_remote, self.seed = spec, limits, allow_remote_images, seed
        self.generator = make_generator(spec, Path(model_cache), request_cache)

    def process(self, columns: dict[str, list]) -> dict[str, list]:
        n = len(columns["responses"])
        for name in ("judge_choices", "judge_explanations", "judge_statuses"):
            columns[name] = list(columns.get(name) or [None] * n)
        columns["judge_cached"] = [0] * n
        rows = active_rows(columns)
        images = load_row_images(columns, rows, self.limits, self.allow_remote)
        requests = [(i, k, a, b) for i in rows if i in images
                    for k, (a, b) in enumerate(zip(columns["pairs_a"][i], columns["pairs_b"][i]))]
        if not requests:
            return columns
        messages = [judge_messages(columns["question"][i], columns["responses"][i][a], columns["responses"][i][b])
                    for i, _, a, b in requests]
        outputs = self.generator.generate(messages, [images[i] for i, *_ in requests],
                                          temperature=self.spec.generation.temperature,
                                          max_new_tokens=self.spec.generation.max_new_tokens, seed=self.seed)
        results = getattr(self.generator, "last_results", None)
        per_row: dict[int, list] = {}
        for r, ((i, k, _, _), out) in enumerate(zip(requests, outputs)):
            per_row.setdefault(i, [[None] * len(columns["pairs_a"][i]) for _ in range(3)])
            choice, explanation, status = read_judgement(out[0] if out is not None else None)
            per_row[i][0][k], per_row[i][1][k], per_row[i][2][k] = choice, explanation, status
            if results is not None and results[r].cached:
                columns["judge_cached"][i] += 1
        for i, (choices, explanations, statuses) in per_row.items():
            columns["judge_choices"][i] = choices
            columns["judge_explanations"][i] = explanations
            columns["judge_statuses"][i] = statuses
        return columns
