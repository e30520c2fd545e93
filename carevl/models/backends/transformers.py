"""The transformers backend: batched chat generation, next-token scoring and reward scoring in process.

`VLMGenerator` (image + chat) serves the caption model, candidate generation, the local strong judge
and critique sampling; `TextGenerator` (chat only) serves the critique scorer. Both take a list of
conversations in transformers' message format and return one list of `num_samples` strings per
conversation. Temperature 0 means greedy decoding. A conversation whose last message is from the
assistant is continued from that message (a pre-filled reply start such as "Score:"); only the
continuation is returned. `RewardScorer` scores rendered conversations with a sequence classifier
in token-budget, length-sorted batches (the curation experts, paper 3.2).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from carevl.config import ModelSpec
from carevl.models.loading import load_causal_lm, load_reward_model, load_vlm
from carevl.models.templates import continuation_kwargs


MIN_SHARED_PREFIX = 32  # tokens: below this, a prefix cache saves less than it costs


def shared_prefix_length(rows: list[list[int]]) -> int:
    """Length of the longest token prefix common to every row, leaving each row at least one token."""
    if not rows:
        return 0
    shortest = min(len(r) for r in rows)
    n = 0
    while n < shortest - 1 and all(r[n] == rows[0][n] for r in rows):
        n += 1
    return n


class _ChatGenerator:
    """Shared batching, sampling and scoring; subclasses turn conversations into model inputs."""

    model: torch.nn.Module
    tokenizer: object  # decodes outputs and encodes candidates
    chat: object  # renders conversations: the processor for a VLM, the tokenizer for a text LM

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.batch_size = spec.resources.batch_size
        self._cached_prefix: list[int] | None = None  # token ids whose key/values `_prefix_kv` holds
        self._prefix_kv = None

    def _encode(self, texts: list[str], images: list[Image.Image | None]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _prompts(self, messages: list[list[dict]], assistant_prefix: str) -> list[str]:
        return [self.chat.apply_chat_template(m, tokenize=False, **continuation_kwargs(m)) + assistant_prefix
                for m in messages]

    def _batches(self, messages, images, assistant_prefix: str = ""):
        """Yield encoded model inputs of at most `batch_size` rows, checking prompt lengths."""
        if len(messages) != len(images):
            raise ValueError(f"got {len(messages)} conversations but {len(images)} images")
        for start in range(0, len(messages), self.batch_size):
            rows = slice(start, start + self.batch_size)
            encoded = self._encode(self._prompts(messages[rows], assistant_prefix), images[rows])
            lengths = encoded["attention_mask"].sum(dim=1)
            for offset, length in enumerate(lengths.tolist()):
                if length > self.spec.max_length:
                    raise ValueError(f"row {start + offset}: prompt has {length} tokens, more than the model's "
                                     f"max_length {self.spec.max_length}")
            yield {k: v.to(self.model.device) for k, v in encoded.items()}

    @torch.inference_mode()
    def _generate(self, messages, images, temperature: float, max_new_tokens: int, num_samples: int,
                  seed: int | None) -> list[list[str]]:
        if num_samples < 1 or max_new_tokens < 1 or temperature < 0:
            raise ValueError("need num_samples >= 1, max_new_tokens >= 1 and temperature >= 0")
        greedy = temperature == 0
        sampling = dict(do_sample=False) if greedy else dict(
            do_sample=True, temperature=temperature, top_p=self.spec.generation.top_p, top_k=0)
        tokenizer = self.tokenizer
        results: list[list[str]] = []
        # A private RNG stream: a seeded call repeats exactly and leaves the caller's RNG untouched.
        with torch.random.fork_rng(devices=[self.model.device] if self.model.device.type == "cuda" else []):
            if seed is not None:
                torch.manual_seed(seed)
            if self._use_prefix_cache(images, num_samples):
                return self._generate_prefix_cached(messages, sampling, max_new_tokens)
            for batch in self._batches(messages, images):
                out = self.model.generate(
                    **batch, max_new_tokens=max_new_tokens, num_return_sequences=1 if greedy else num_samples,
                    pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, **sampling,
                )  # (rows * samples, prompt + new)
                texts = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
                texts = [t.strip() for t in texts]
                per_row = 1 if greedy else num_samples
                for i in range(0, len(texts), per_row):
                    # Greedy decoding is deterministic, so its samples are copies of one decode.
                    results.append(texts[i:i + per_row] * (num_samples if greedy else 1))
        return results

    def _use_prefix_cache(self, images, num_samples: int) -> bool:
        return self.spec.generation.prefix_cache and num_samples == 1 and all(i is None for i in images)

    def _generate_prefix_cached(self, messages, sampling: dict, max_new_tokens: int) -> list[list[str]]:
        """One row at a time on top of the cached key/values of the prefix all rows share."""
        rows = [self._encode([p], [None])["input_ids"][0].tolist() for p in self._prompts(messages, "")]
        for i, ids in enumerate(rows):
            if len(ids) > self.spec.max_length:
                raise ValueError(f"row {i}: prompt has {len(ids)} tokens, more than the model's "
                                 f"max_length {self.spec.max_length}")
        shared = shared_prefix_length(rows)
        prefix = self._prefix_cache(rows[0][:shared]) if shared >= MIN_SHARED_PREFIX else None
        results = []
        for ids in rows:
            input_ids = torch.tensor([ids], device=self.model.device)
            cache = {"past_key_values": copy.deepcopy(prefix)} if prefix is not None else {}
            out = self.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                      max_new_tokens=max_new_tokens, pad_token_id=self.tokenizer.pad_token_id,
                                      eos_token_id=self.tokenizer.eos_token_id, **sampling, **cache)
            results.append([self.tokenizer.decode(out[0, len(ids):], skip_special_tokens=True).strip()])
        return results

    def _prefix_cache(self, prefix: list[int]):
        """The key/value cache of `prefix`, computed once and kept while calls share the same prefix."""
        if self._cached_prefix != prefix:
            ids = torch.tensor([prefix], device=self.model.device)
            self._prefix_kv = self.model(input_ids=ids, use_cache=True, logits_to_keep=1).past_key_values
            self._cached_prefix = prefix
        return self._prefix_kv

    def _candidate_token_ids(self, candidates: list[str], assistant_prefix: str) -> list[int]:
        """First token of each candidate as it is tokenized right after `assistant_prefix`."""
        tokenizer = self.tokenizer
        prefix_ids = tokenizer.encode(assistant_prefix, add_special_tokens=False)
        ids = []
        for candidate in candidates:
            full = tokenizer.encode(assistant_prefix + candidate, add_special_tokens=False)
            if len(full) <= len(prefix_ids) or full[:len(prefix_ids)] != prefix_ids:
                full = prefix_ids + tokenizer.encode(candidate, add_special_tokens=False)
            ids.append(full[len(prefix_ids)])
        if len(set(ids)) != len(ids):
            raise ValueError(f"candidates {candidates} do not start with distinct tokens")
        return ids

    @torch.inference_mode()
    def _score_next_token(self, messages, images, candidates: list[str], assistant_prefix: str) -> np.ndarray:
        if not candidates:
            raise ValueError("score_next_token needs at least one candidate")
        token_ids = torch.tensor(self._candidate_token_ids(candidates, assistant_prefix))
        rows = []
        for batch in self._batches(messages, images, assistant_prefix):
            # Left padding puts the next token last; only that position's logits are computed.
            logits = self.model(**batch, logits_to_keep=1).logits[:, -1, :]  # (rows, vocab)
            log_probs = torch.log_softmax(logits.float(), dim=-1)
            rows.append(log_probs[:, token_ids.to(log_probs.device)].cpu())
        return torch.cat(rows).numpy() if rows else np.zeros((0, len(candidates)), dtype=np.float32)


class VLMGenerator(_ChatGenerator):
    """Chat generation with an optional image per conversation (`images[i] is None`: text only)."""

    def __init__(self, spec: ModelSpec, model_cache: Path, device: str | torch.device | None = None) -> None:
        super().__init__(spec)
        self.model, self.processor = load_vlm(spec, model_cache, device=device)
        self.tokenizer, self.chat = self.processor.tokenizer, self.processor

    def _encode(self, texts, images):
        pil = []
        for i, image in enumerate(images):
            wanted = texts[i].count(self.processor.image_token)
            if wanted != (0 if image is None else 1):
                raise ValueError(f"row {i}: the conversation has {wanted} image part(s) but "
                                 f"{'no image' if image is None else 'one image'} was given")
            if image is not None:
                pil.append(image.convert("RGB"))
        return self.processor(text=texts, images=pil or None, padding=True, return_tensors="pt",
                              add_special_tokens=False)

    def generate(self, messages: list[list[dict]], images: list[Image.Image | None], temperature: float,
                 max_new_tokens: int, num_samples: int = 1, seed: int | None = None) -> list[list[str]]:
        """One list of `num_samples` continuations per conversation."""
        return self._generate(messages, images, temperature, max_new_tokens, num_samples, seed)

    def score_next_token(self, messages: list[list[dict]], images: list[Image.Image | None],
                         candidates: list[str], assistant_prefix: str = "") -> np.ndarray:
        """Log-probs, shape (rows, len(candidates)), of each candidate's first token as the next token
        after the generation prompt plus `assistant_prefix` (e.g. `judge_format.VERDICT_PREFIX`)."""
        return self._score_next_token(messages, images, candidates, assistant_prefix)


class TextGenerator(_ChatGenerator):
    """Chat generation for a text-only causal LM (the critique scorer)."""

    def __init__(self, spec: ModelSpec, model_cache: Path, device: str | torch.device | None = None) -> None:
        super().__init__(spec)
        self.model, self.tokenizer = load_causal_lm(spec, model_cache, device=device)
        self.chat = self.tokenizer

    def _encode(self, texts, images):
        return self.tokenizer(texts, padding=True, return_tensors="pt", add_special_tokens=False)

    def generate(self, messages: list[list[dict]], temperature: float, max_new_tokens: int,
                 num_samples: int = 1, seed: int | None = None) -> list[list[str]]:
        """One list of `num_samples` continuations per conversation."""
        return self._generate(messages, [None] * len(messages), temperature, max_new_tokens, num_samples, seed)

    def score_next_token(self, messages: list[list[dict]], candidates: list[str],
                         assistant_prefix: str = "") -> np.ndarray:
        """Log-probs, shape (rows, len(candidates)), of each candidate's first token after the prompt."""
        return self._score_next_token(messages, [None] * len(messages), candidates, assistant_prefix)


def token_budget_chunks(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Group row indices, sorted by length, into chunks whose padded size (rows x longest) fits `budget`.

    Sorting keeps padding small; a single row longer than the budget still forms its own chunk.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    chunks, current, longest = [], [], 0
    for i in order:
        longest_if_added = max(longest, lengths[i])
        if current and longest_if_added * (len(current) + 1) > budget:
            chunks.append(current)
            current, longest_if_added = [], lengths[i]
        current.append(i)
        longest = longest_if_added
    if current:
        chunks.append(current)
    return chunks


class RewardScorer:
    """One sequence-classification reward model (transformers): rendered texts in, one float score each.

    `forward_rows` counts the rows that actually went through the model's forward (a forward pre-hook),
    so callers and tests can check that nothing is scored twice.
    """

    def __init__(self, spec: ModelSpec, model_cache: Path, device: str | None = None):
        self.spec = spec
        self.model, self.tokenizer = load_reward_model(spec, Path(model_cache), device=device)
        # The score head reads the last token: on overflow keep the end of the answer, not the start.
        self.tokenizer.truncation_side = "left"
        self.budget = spec.resources.batch_size * spec.max_length
        self.forward_rows = 0
        self.forward_calls = 0
        self.model.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module, args, kwargs) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.forward_rows += int(ids.shape[0])
        self.forward_calls += 1

    def render(self, messages: list[dict]) -> str:
        """One conversation (user turn, then the answer as the assistant turn) in the model's template."""
        return self.tokenizer.apply_chat_template(messages, tokenize=False)

    @torch.inference_mode()
    def score(self, texts: list[str]) -> np.ndarray:
        """Scores, shape (len(texts),), float64."""
        if not texts:
            return np.zeros(0)
        encoded = self.tokenizer(texts, add_special_tokens=False, truncation=True, max_length=self.spec.max_length)
        lengths = [len(ids) for ids in encoded["input_ids"]]
        scores = np.zeros(len(texts))
        for chunk in token_budget_chunks(lengths, self.budget):
            batch = self.tokenizer.pad({"input_ids": [encoded["input_ids"][i] for i in chunk],
                                        "attention_mask": [encoded["attention_mask"][i] for i in chunk]},
                                       return_tensors="pt")
            batch = {k: v.to(self.model.device) for k, v in batch.items()}
            logits = self.model(**batch).logits  # (rows, num_labels)
            scores[chunk] = logits[:, 0].float().cpu().numpy()
        return scores
