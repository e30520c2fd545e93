"""Small curation inputs: synthetic items as JSONL rows, a JSONL writer, and the settings that make a
curation run on the micro models fast."""
from __future__ import annotations

import base64
import json
from pathlib import Path

from carevl.data.synth import SynthSpec, make_item

MICRO_EXPERTS = "[rm_llama, rm_qwen2, rm_gemma2, rm_mistral]"  # M = 4 architectures, tau = 3


def write_jsonl(path: Path, rows: list) -> Path:
    """Write `rows` one per line: dicts as JSON, strings as they are (for malformed lines)."""
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def synth_rows(n: int, seed: int = 3, captions: bool = False) -> list[dict]:
    """n synthetic items (2-4 responses, noisy shipped verdicts, optionally their true captions) as
    JSONL-ready dicts."""
    spec = SynthSpec(min_responses=2, max_responses=4, judge_accuracy=0.8, with_captions=captions)
    rows = []
    for i in range(n):
        row = make_item(seed, i, spec)
        row["image_bytes"] = base64.b64encode(row["image_bytes"]).decode()
        rows.append(row)
    return rows


def tiny_overrides(unit_items: int) -> list[str]:
    """Fast settings: short captions, four of the five micro experts (M = 4, tau = 3), small work units."""
    return ["models.vlm.generation.max_new_tokens=8", f"curation.experts={MICRO_EXPERTS}",
            f"curation.unit_items={unit_items}",
            "curation.progress_interval_s=2"]
