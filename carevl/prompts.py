"""The caption model's instruction and the experts' conversation (paper 3.2), shared by curation and by
the tiny model kit that trains models to read them. The judge's own format is `carevl.judge_format`."""
from __future__ import annotations

CAPTION_PROMPT = (
    "Describe this picture thoroughly so that someone who cannot see it could answer questions about it: "
    "list every object with its colour, count, size and position, and copy any visible text."
)


def caption_messages(prompt: str = CAPTION_PROMPT) -> list[dict]:
    """Chat messages asking the caption model to describe the (single) image."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]


def expert_messages(caption: str | None, question: str, response: str) -> list[dict]:
    """The conversation an expert scores: image description and question, then the answer."""
    user = f"Image description:\n{caption or '(no description)'}\n\nQuestion:\n{question}"
    return [{"role": "user", "content": user}, {"role": "assistant", "content": response}]
