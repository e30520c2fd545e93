"""Helpers for curation tests: small hand-made items with real PNG images."""
from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from PIL import Image

from carevl.testing.items import write_jsonl


def png_bytes(size: tuple[int, int] = (16, 16), colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def good_item(item_id: str, **overrides) -> dict:
    """A clean JSONL item: image as base64 bytes, three distinct responses, shipped verdicts."""
    item = {
        "item_id": item_id,
        "image_bytes": base64.b64encode(png_bytes()).decode(),
        "question": "What colour is the square?",
        "responses": ["It is red.", "It is blue.", "A green square."],
        "response_models": ["m1", "m2", "m3"],
        "judgements": [{"a": 0, "b": 1, "choice": "A", "explanation": "red is right"},
                       {"a": 0, "b": 2, "choice": "Verdict: A\nExplanation: red", "explanation": None},
                       {"a": 2, "b": 1, "choice": "B", "explanation": "swapped order"}],
        "category": "colour",
    }
    item.update(overrides)
    return item


@pytest.fixture
def jsonl_writer(tmp_path):
    def write(rows: list, name: str = "items.jsonl") -> Path:
        folder = tmp_path / "items"
        folder.mkdir(exist_ok=True)
        return write_jsonl(folder / name, rows)
    return write


def kill_processes_mentioning(marker: str) -> int:
    """SIGKILL the processes whose command line contains `marker` (a unique temp dir this test gave
    the Ray it started), by pid; returns how many were killed."""
    import psutil

    killed = 0
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(marker in part for part in proc.info["cmdline"] or []):
                proc.kill()
                killed += 1
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return killed
