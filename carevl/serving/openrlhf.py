"""OpenRLHF's remote reward-model protocol, answered by the judge (`POST /v1/openrlhf/get_reward`).

OpenRLHF (`--remote_rm_url`) posts `{"query": [...], "prompts": [...], "labels": [...]}` and reads
`rewards` (and `scores`, falling back to `rewards`, and `extra_logs`) from the JSON answer, one value
per query, in order. Its single-turn executor sends one sample per request; older versions batch.

- `query[n]` is the policy's prompt and response decoded together (special tokens kept); `prompts[n]`
  is that prompt as the dataset gave it. The response is `query[n]` with `prompts[n]` removed from its
  start and end-of-turn markers (`END_MARKERS`) removed from its end. A query that does not start with
  its prompt is refused (422 on `query.n`) rather than guessed at.
- `labels[n]` (the dataset column `--label_key` names) carries what the query cannot: either a plain
  string, the reference answer; or a JSON object (or its string) with optional `question` (what the
  judge is told the prompt is; default `prompts[n]`, which must then be free of the judge's control
  tokens: a chat-templated prompt is, so put the raw question here), `image` (data URL or base64; a URL
  or path only when the service allows remote images) and `reference`.
- Samples with the same question, image and reference form one group, in query order. The method
  comes from the URL (`?method=reference|bradley_terry|copeland`, default the service's); a
  within-group method needs a prompt's samples in one request (a group of one is a 422).
- OpenRLHF cannot take a null reward, so a completion the judge cannot score fails the request with
  the reason and the query it belongs to (413 `prompt_too_long`, 422 `reserved_token` /
  `response_too_long`, 500 `judge_error`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from carevl.serving.schemas import FieldLimitError

ROUTE = "/v1/openrlhf/get_reward"
# End-of-sequence and end-of-turn markers of common chat templates, removed from the end of a response
# (OpenRLHF decodes with skip_special_tokens=False, so the policy's EOS token is part of the query).
END_MARKERS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>", "<end_of_turn>", "<|end|>",
               "</s>", "<eos>", "<|eos|>")
LABEL_KEYS = frozenset({"question", "image", "reference"})
FAILURE_STATUS = {"prompt_too_long": 413, "reserved_token": 422, "response_too_long": 422}


class OpenRLHFRequest(BaseModel):
    """The body OpenRLHF posts. Fields it may add later are ignored, as OpenRLHF's own server does."""

    model_config = ConfigDict(extra="ignore")

    query: list[str] = Field(min_length=1)
    prompts: list[str]
    labels: list[Any] | None = None


class OpenRLHFResult(BaseModel):
    rewards: list[float]
    scores: list[float]
    extra_logs: dict[str, list[float]] = Field(default_factory=dict)


@dataclass(frozen=True)
class Sample:
    """One query split into what the judge needs; `question_field` names where the question came from."""

    question: str
    question_field: str
    image: str | None
    reference: str | None
    response: str


def response_of(query: str, prompt: str, n: int) -> str:
    """The response part of `query` (prompt + response, decoded together)."""
    if not query.startswith(prompt):
        raise FieldLimitError(f"query.{n}", f"does not start with prompts.{n}, so the response cannot be "
                                            "told from the prompt")
    response = query[len(prompt):].rstrip()
    while True:
        marker = next((m for m in END_MARKERS if response.endswith(m)), None)
        if marker is None:
            return response
        response = response[:-len(marker)].rstrip()


def parse_label(label: Any, n: int) -> dict[str, str | None]:
    """question / image / reference from one label (a reference string, or a JSON object)."""
    if label is None or (isinstance(label, str) and not label.strip()):
        return {}
    if isinstance(label, str) and label.lstrip().startswith("{"):
        try:
            label = json.loads(label)
        except json.JSONDecodeError as exc:
            raise FieldLimitError(f"labels.{n}", f"looks like a JSON object but does not parse: {exc}") from None
    if isinstance(label, str):
        return {"reference": label}
    if not isinstance(label, dict):
        raise FieldLimitError(f"labels.{n}", f"must be a reference string or an object with {sorted(LABEL_KEYS)}")
    unknown = sorted(set(label) - LABEL_KEYS)
    if unknown:
        raise FieldLimitError(f"labels.{n}.{unknown[0]}", f"unknown key; a label object takes {sorted(LABEL_KEYS)}")
    for key, value in label.items():
        if value is not None and not isinstance(value, str):
            raise FieldLimitError(f"labels.{n}.{key}", "must be a string")
    return dict(label)


def samples_of(request: OpenRLHFRequest) -> list[Sample]:
    """One `Sample` per query; raises FieldLimitError (422) naming the field that cannot be read."""
    if len(request.prompts) != len(request.query):
        raise FieldLimitError("prompts", f"has {len(request.prompts)} entries for {len(request.query)} queries")
    labels = request.labels if request.labels is not None else [None] * len(request.query)
    if len(labels) != len(request.query):
        raise FieldLimitError("labels", f"has {len(labels)} entries for {len(request.query)} queries")
    samples = []
    for n, (query, prompt, label) in enumerate(zip(request.query, request.prompts, labels)):
        fields = parse_label(label, n)
        question = fields.get("question")
        samples.append(Sample(question=question or prompt,
                              question_field=f"labels.{n}.question" if question else f"prompts.{n}",
                              image=fields.get("image"), reference=fields.get("reference"),
                              response=response_of(query, prompt, n)))
    return samples


def group_samples(samples: list[Sample]) -> list[list[int]]:
    """Indices of samples sharing question, image and reference, groups in order of first appearance."""
    groups: dict[tuple, list[int]] = {}
    for n, s in enumerate(samples):
        groups.setdefault((s.question, s.image, s.reference), []).append(n)
    return list(groups.values())
