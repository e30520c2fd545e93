"""`JudgeModel`: the trained CAREVL judge as a batch-in, batch-out wrapper (paper 3.7).

Used by the judge service, refinement sampling (paper 3.4), evaluation and the scoring job, on the
transformers backend (CPU or GPU) or the vLLM backend (`backend: vllm`). Two ways to judge a pair:

- `verdict`: no generation. One forward pass over the judge prompt, the generation prompt and
  `VERDICT_PREFIX` ("Verdict:"); the next-token log-probabilities of " A" and " B", renormalised over
  the two, give `p_a`. This reads exactly the position the judge was trained to fill, because the
  training target (`judge_format.format_judgement`) puts the verdict line first.
- `explain`: generation in the training output format (verdict line, then explanation), the verdict
  read back with `judge_format.parse_verdict`.

Batch columns (dict of equal-length lists or arrays), as a Ray Data actor pool passes them:
  question, response_a, response_b     required strings
  image                                PIL image, encoded bytes, a reference string (data URL, base64,
                                       path, URI) or None; or instead the item columns
                                       image_path / image_bytes (carevl.schema)
  mode                                 optional per row: "verdict" or "explain" (default: `default_mode`)
`__call__` returns the input columns plus p_a, winner, judgement, explanation and judge_status
("ok", or a reason such as an image error code or "prompt_too_long" for rows it could not judge).

Calibration: a `calibration.json` in the model folder (carevl.judge.calibration) rescales every
verdict-mode p_a this wrapper returns (the judge service and the scoring job get it with no code of
their own). Explain-mode p_a is a share of sampled verdicts, not a logit, and is left as it is.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from carevl.config import InputLimits, ModelSpec, PathsConfig
from carevl.data.images import ImageError, load_image
from carevl.judge.calibration import Calibration, load_calibration
from carevl.judge.prompts import (  # noqa: F401 (PromptTooLong, ReservedToken re-exported)
    IMAGE_NOT_SUPPORTED, JudgePrompts, PromptTooLong, ReservedToken,
)
from carevl.judge.rules import p_a_from_samples, verdict_probability, winner_from_probability
from carevl.judge_format import VERDICT_PREFIX, judge_messages, parse_explanation, parse_verdict
from carevl.models.backends.transformers import TextGenerator, VLMGenerator
from carevl.models.backends.vllm import VLLMChatGenerator, VLLMTextGenerator
from carevl.models.loading import resolve_model_path

REQUIRED_COLUMNS = ("question", "response_a", "response_b")
# The verdict tokens as they follow "Verdict:" in the training target "Verdict: A".
VERDICT_CANDIDATES = (" A", " B")
STATUS_OK = "ok"
PROMPT_TOO_LONG = "prompt_too_long"


RESERVED_TOKEN = "reserved_token"


class JudgeModel:
    """Loads the judge once in `__init__`; `verdict` / `explain` / `__call__` map a batch to a batch."""

    def __init__(self, model: str | ModelSpec, model_cache: str | Path | None = None, device: str | None = None,
                 *, batch_size: int | None = None, max_new_tokens: int | None = None,
                 default_mode: str = "verdict", image_limits: InputLimits | None = None,
                 allow_remote_images: bool = False, temperature: float = 0.0, num_samples: int = 1,
                 seed: int | None = None, calibrated: bool = True) -> None:
        """`model`: a ModelSpec, or a checkpoint folder / `tiny:<role>` / hub id (loaded as kind vlm).
        A spec of kind `causal` is a text-only judge: it judges pairs without images.
        `calibrated=False` ignores the model folder's calibration.json (raw p_a, to fit a new one).

        `batch_size` caps rows per forward pass (default: the spec's resources.batch_size);
        temperature / num_samples / seed apply to explain rows in `__call__`.
        """
        spec = model if isinstance(model, ModelSpec) else ModelSpec(path=model, kind="vlm")
        if batch_size is not None:
            spec = spec.model_copy(deep=True)
            spec.resources.batch_size = batch_size
        if default_mode not in ("verdict", "explain"):
            raise ValueError(f"default_mode must be 'verdict' or 'explain', got {default_mode!r}")
        self.spec = spec
        self.model_cache = Path(model_cache).expanduser() if model_cache else PathsConfig().model_cache_dir()
        self.generator = _generator(spec, self.model_cache, device)
        self.prompts = JudgePrompts(spec, self.generator.prompts.chat if spec.backend == "vllm"
                                    else getattr(self.generator, "processor", self.generator.tokenizer))
        self.max_new_tokens = max_new_tokens or spec.generation.max_new_tokens
        self.default_mode = default_mode
        self.image_limits = image_limits or InputLimits()
        self.allow_remote_images = allow_remote_images
        self.temperature, self.num_samples, self.seed = temperature, num_samples, seed
        self.reserved_tokens = self.prompts.reserved_tokens
        folder = resolve_model_path(spec, self.model_cache)[0]
        self.calibration = load_calibration(folder) if calibrated else Calibration()

    @property
    def name(self) -> str:
        return self.spec.path

    @property
    def device(self) -> str:
        model = getattr(self.generator, "model", None)  # a vLLM engine places itself
        return str(model.device) if model is not None else "vllm"

    # ----- inputs -------------------------------------------------------------------------------
    def resolve_image(self, value: Any) -> Image.Image | None:
        """One image cell as an RGB PIL image (None stays None); raises ImageError."""
        if value is None or isinstance(value, Image.Image):
            return value.convert("RGB") if isinstance(value, Image.Image) else None
        if isinstance(value, dict):  # Ray Data / HF datasets image struct
            return self.resolve_image(value.get("bytes") or value.get("path"))
        if isinstance(value, (bytes, bytearray, memoryview)):
            return load_image(None, bytes(value), self.image_limits) if len(value) else None
        if isinstance(value, str):
            if not value.strip():
                return None
            return load_image(value, None, self.image_limits, allow_remote=self.allow_remote_images)
        raise ImageError("image_undecodable", f"unsupported image value of type {type(value).__name__}")

    def _images(self, batch: dict) -> list[Image.Image | None]:
        n = len(batch["question"])
        if "image" in batch:
            images = [self.resolve_image(v) for v in batch["image"]]
        else:
            paths = batch.get("image_path", [None] * n)
            blobs = batch.get("image_bytes", [None] * n)
            images = [None if _empty(p) and _empty(b) else
                      load_image(None if _empty(p) else p, None if _empty(b) else b, self.image_limits,
                                 allow_remote=self.allow_remote_images)
                      for p, b in zip(paths, blobs)]
        if not self.accepts_images and any(image is not None for image in images):
            raise ImageError(IMAGE_NOT_SUPPORTED, f"the judge '{self.name}' is text-only and takes no image")
        return images

    def _messages(self, batch: dict, images: Sequence[Image.Image | None]) -> list[list[dict]]:
        return [judge_messages(str(q), str(a), str(b), with_image=img is not None)
                for q, a, b, img in zip(batch["question"], batch["response_a"], batch["response_b"], images)]

    @property
    def accepts_images(self) -> bool:
        return self.prompts.accepts_images

    def prompt_length(self, question: str, response_a: str, response_b: str, with_image: bool) -> int:
        """Tokens of the verdict-mode prompt for one pair (image tokens included)."""
        return self.prompts.prompt_length(question, response_a, response_b, with_image)

    def check_text(self, question: str, response_a: str, response_b: str) -> None:
        """Raise ReservedToken when a field contains a control token of the judge's tokenizer."""
        self.prompts.check_text(question, response_a, response_b)

    def check_prompt_length(self, question: str, response_a: str, response_b: str, with_image: bool) -> None:
        """Raise PromptTooLong when the pair (plus room for an explanation) cannot fit max_length."""
        self.prompts.check_prompt_length(question, response_a, response_b, with_image)

    # ----- judging ------------------------------------------------------------------------------
    def verdict(self, batch: dict) -> tuple[np.ndarray, list[str]]:
        """p_a (float64, shape (rows,), calibrated) and winner ("A" / "B" / "tie") from one forward pass
        per batch."""
        _check_columns(batch)
        images = self._images(batch)
        messages = self._messages(batch, images)
        if self.spec.kind == "causal":
            log_probs = self.generator.score_next_token(messages, list(VERDICT_CANDIDATES), VERDICT_PREFIX)
        else:
            log_probs = self.generator.score_next_token(messages, images, list(VERDICT_CANDIDATES),
                                                        VERDICT_PREFIX)  # (rows, 2)
        raw = [verdict_probability(float(a), float(b)) for a, b in log_probs]
        p_a = np.array(self.calibration.apply_many(raw), dtype=np.float64)
        return p_a, [winner_from_probability(p) for p in p_a]

    def explain(self, batch: dict, temperature: float = 0.0, num_samples: int = 1,
                seed: int | None = None) -> list[list[str]]:
        """`num_samples` judgements per row in the training output format (verdict line, explanation)."""
        _check_columns(batch)
        images = self._images(batch)
        messages = self._messages(batch, images)
        if self.spec.kind == "causal":
            return self.generator.generate(messages, temperature, self.max_new_tokens, num_samples, seed)
        return self.generator.generate(messages, images, temperature, self.max_new_tokens, num_samples, seed)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Judge every row in its mode; rows that cannot be judged keep a reason in `judge_status`."""
        _check_columns(batch)
        n = len(batch["question"])
        out = {k: list(v) if not isinstance(v, np.ndarray) else v for k, v in batch.items()}
        p_a = np.full(n, np.nan)
        winner: list[str | None] = [None] * n
        judgement: list[str | None] = [None] * n
        explanation: list[str | None] = [None] * n
        status = [STATUS_OK] * n
        images = self._row_images(batch, status)
        modes = [str(m) for m in batch.get("mode", [self.default_mode] * n)]
        for i in range(n):
            if modes[i] not in ("verdict", "explain") and status[i] == STATUS_OK:
                status[i] = "bad_mode"
            if status[i] == STATUS_OK:
                texts = (str(batch["question"][i]), str(batch["response_a"][i]), str(batch["response_b"][i]))
                try:
                    self.check_text(*texts)
                    self.check_prompt_length(*texts, images[i] is not None)
                except ReservedToken:
                    status[i] = RESERVED_TOKEN
                except PromptTooLong:
                    status[i] = PROMPT_TOO_LONG
        for mode in ("verdict", "explain"):
            rows = [i for i in range(n) if status[i] == STATUS_OK and modes[i] == mode]
            if not rows:
                continue
            sub = {k: [batch[k][i] for i in rows] for k in REQUIRED_COLUMNS}
            sub["image"] = [images[i] for i in rows]
            if mode == "verdict":
                probs, winners = self.verdict(sub)
                for i, p, w in zip(rows, probs, winners):
                    p_a[i], winner[i] = p, w
                continue
            for i, texts in zip(rows, self.explain(sub, self.temperature, self.num_samples, self.seed)):
                verdicts = [parse_verdict(t) for t in texts]
                share = p_a_from_samples(verdicts)
                p_a[i] = np.nan if share is None else share
                winner[i] = None if share is None else winner_from_probability(share)
                judgement[i], explanation[i] = texts[0], parse_explanation(texts[0])
        out.update(p_a=p_a, winner=winner, judgement=judgement, explanation=explanation, judge_status=status)
        return out

    def _row_images(self, batch: dict, status: list[str]) -> list[Image.Image | None]:
        """Decode each row's image on its own, so one bad image marks one row, not the batch."""
        n = len(batch["question"])
        images: list[Image.Image | None] = [None] * n
        for i in range(n):
            row = {k: [batch[k][i]] for k in ("question", "image", "image_path", "image_bytes") if k in batch}
            try:
                images[i] = self._images(row)[0]
            except ImageError as exc:
                status[i] = exc.reason
        return images


def _generator(spec: ModelSpec, model_cache: Path, device: str | None):
    """The model behind the judge: transformers in this process (CPU or GPU), or the project's vLLM
    backend (`backend: vllm`, a GPU) with the same `generate` / `score_next_token` signatures."""
    if spec.backend == "vllm":
        return VLLMTextGenerator(spec, model_cache) if spec.kind == "causal" else VLLMChatGenerator(spec, model_cache)
    if spec.backend != "transformers":
        raise ValueError(f"judge '{spec.path}' uses backend '{spec.backend}'; a judge runs on transformers or vllm")
    if spec.kind == "causal":
        return TextGenerator(spec, model_cache, device=device)
    return VLMGenerator(spec, model_cache, device=device)


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or \
        (isinstance(value, (str, bytes)) and len(value) == 0)


def _check_columns(batch: dict) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in batch]
    if missing:
        raise KeyError(f"judge batch is missing column(s) {missing}; has {sorted(batch)}")
    lengths = {c: len(batch[c]) for c in batch if c in (*REQUIRED_COLUMNS, "image", "mode",
                                                        "image_path", "image_bytes")}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"judge batch columns differ in length: {lengths}")
