"""Helpers for curation tests: small hand-made items with real PNG images."""
from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from PIL import Image


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


def write_jsonl(path: Path, rows: list) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def jsonl_writer(tmp_path):
    def write(rows: list, name: str = "items.jsonl") -> Path:
        folder = tmp_path / "items"
        folder.mkdir(exist_ok=True)
        return write_jsonl(folder / name, rows)
    return write


def synth_rows(n: int, seed: int = 3, captions: bool = False) -> list[dict]:
    """n synthetic items (2-4 responses, noisy shipped verdicts, optionally their true captions) as
    JSONL-ready dicts."""
    from carevl.data.synth import SynthSpec, make_item

    spec = SynthSpec(min_responses=2, max_responses=4, judge_accuracy=0.8, with_captions=captions)
    rows = []
    for i in range(n):
        row = make_item(seed, i, spec)
        row["image_bytes"] = base64.b64encode(row["image_bytes"]).decode()
        rows.append(row)
    return rows


MICRO_EXPERTS = "[rm_llama, rm_qwen2, rm_gemma2, rm_mistral]"  # M = 4 architectures, tau = 3


def tiny_overrides(unit_items: int) -> list[str]:
    """Fast settings: short captions, four of the five micro experts (M = 4, tau = 3), small work units."""
    return ["models.vlm.generation.max_new_tokens=8", f"curation.experts={MICRO_EXPERTS}",
            f"curation.unit_items={unit_items}",
            "curation.progress_interval_s=2"]


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
