"""What must be known of a judge's prompts before it runs: control tokens to refuse, prompt length.

`JudgePrompts` needs only the judge's processor (or, for a text-only judge, its tokenizer), so every
judge backend shares it: `JudgeModel` (transformers, in process) and the judge service's vLLM engine.
"""
from __future__ import annotations

from PIL import Image

from carevl.config import ModelSpec
from carevl.judge_format import VERDICT_PREFIX, judge_messages


IMAGE_NOT_SUPPORTED = "image_not_supported"  # an image sent to a text-only judge


class PromptTooLong(ValueError):
    """A pair whose prompt does not fit the judge's max_length."""


class ReservedToken(ValueError):
    """A text field holding one of the model's control tokens (an image placeholder, a turn marker):
    it would change the prompt's structure (a phantom image, a forged turn), so it is refused."""

    def __init__(self, field: str, token: str):
        super().__init__(f"{field} contains the model's reserved token {token!r}")
        self.field, self.token = field, token


class JudgePrompts:
    """Prompt checks of one judge. A `vlm` judge takes an image per pair; a `causal` judge (a text LM)
    judges text-only pairs and refuses images."""

    def __init__(self, spec: ModelSpec, processor) -> None:
        self.spec = spec
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.accepts_images = spec.kind == "vlm"
        self.image_tokens = self._measure_image_tokens() if self.accepts_images else 0
        self.reserved_tokens = reserved_tokens(processor)

    @property
    def name(self) -> str:
        return self.spec.path

    def _measure_image_tokens(self) -> int:
        """Prompt tokens one image adds (exact for fixed-resolution processors such as LLaVA's)."""
        text = self.processor.apply_chat_template(judge_messages("q", "a", "b"), add_generation_prompt=True,
                                                  tokenize=False)
        with_image = self.processor(text=[text], images=[Image.new("RGB", (32, 32))], add_special_tokens=False)
        plain = self.tokenizer(text, add_special_tokens=False)
        return len(with_image["input_ids"][0]) - len(plain["input_ids"]) + 1

    def prompt_length(self, question: str, response_a: str, response_b: str, with_image: bool) -> int:
        """Tokens of the verdict-mode prompt for one pair (image tokens included)."""
        text = self.processor.apply_chat_template(judge_messages(question, response_a, response_b, with_image),
                                                  add_generation_prompt=True, tokenize=False) + VERDICT_PREFIX
        n = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return n - 1 + self.image_tokens if with_image else n

    def check_text(self, question: str, response_a: str, response_b: str) -> None:
        """Raise ReservedToken when a field contains a control token of the judge's tokenizer."""
        for field, text in (("question", question), ("response_a", response_a), ("response_b", response_b)):
            for token in self.reserved_tokens:
                if token in text:
                    raise ReservedToken(field, token)

    def check_prompt_length(self, question: str, response_a: str, response_b: str, with_image: bool) -> None:
        """Raise PromptTooLong when the pair (plus room for an explanation) cannot fit max_length."""
        n = self.prompt_length(question, response_a, response_b, with_image)
        if n > self.spec.max_length:
            raise PromptTooLong(f"the judge prompt has {n} tokens, the model's max_length is "
                                f"{self.spec.max_length}")


def reserved_tokens(processor) -> tuple[str, ...]:
    """The processor's image placeholder and every special token of its tokenizer."""
    tokenizer = getattr(processor, "tokenizer", processor)
    tokens = set(getattr(tokenizer, "all_special_tokens", []) or [])
    for name in ("image_token", "video_token"):
        token = getattr(processor, name, None)
        if isinstance(token, str) and token:
            tokens.add(token)
    return tuple(sorted(t for t in tokens if t.strip()))
