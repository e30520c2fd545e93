"""Materialising training examples once, on the driver, as a `datasets` folder the workers memory-map.

Rows are read from Parquet in batches, turned into examples by a pure builder, given their image
(validated by decoding, stored as the original encoded bytes) and written with `save_to_disk`. A
marker file written last records the counts; a re-run finds it and reuses the folder. Rows that
yield no example are counted by reason, never dropped silently.
"""
from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator

import datasets

from carevl.config import InputLimits
from carevl.data import io as dio
from carevl.data.images import ImageError, decode_image, read_image_bytes

MARKER = "carevl_examples.json"

_MESSAGES = datasets.List({
    "role": datasets.Value("string"),
    "content": datasets.List({"type": datasets.Value("string"), "text": datasets.Value("string")}),
})

# Column types of the prepared datasets (TRL's vision prompt-completion and preference formats).
SFT_FEATURES = datasets.Features({
    "pair_id": datasets.Value("string"), "swapped": datasets.Value("bool"),
    "prompt": _MESSAGES, "completion": _MESSAGES, "images": datasets.List(datasets.Image()),
})
DPO_FEATURES = datasets.Features({
    "pair_id": datasets.Value("string"),
    "prompt": _MESSAGES, "chosen": _MESSAGES, "rejected": _MESSAGES, "images": datasets.List(datasets.Image()),
})

# Builder: one input row -> (example without image, skip_reason).
Builder = Callable[[dict[str, Any]], tuple[dict[str, Any] | None, str | None]]


def image_bytes_of(row: dict[str, Any], limits: InputLimits) -> bytes:
    """The row's encoded image, checked to decode within `limits` (raises ImageError)."""
    data = read_image_bytes(row.get("image_path"), row.get("image_bytes"), limits, allow_remote=True)
    decode_image(data, limits)
    return data


def _examples(input_uri: str, build: Builder, limits: InputLimits, counts: Counter,
              batch_size: int = 256) -> Iterator[dict[str, Any]]:
    for batch in dio.iter_batches(input_uri, "parquet", batch_size=batch_size):
        for row in batch.to_pylist():
            counts["rows"] += 1
            example, reason = build(row)
            if example is None:
                counts[f"skipped:{reason}"] += 1
                continue
            try:
                data = image_bytes_of(row, limits)
            except ImageError as exc:
                counts[f"skipped:{exc.reason}"] += 1
                continue
            counts["examples"] += 1
            yield {**example, "images": [{"bytes": data, "path": None}]}


def prepare_examples(input_uri: str, out_dir: Path, build: Builder, features: datasets.Features,
                     limits: InputLimits) -> dict[str, Any]:
    """Build and save the examples of `input_uri` (idempotent); returns the counts.

    Raises ValueError when no row yields an example (training on nothing is a mistake, not a no-op).
    """
    marker = out_dir / MARKER
    if marker.is_file():
        return json.loads(marker.read_text())
    if out_dir.exists():
        shutil.rmtree(out_dir)  # an unfinished earlier attempt
    counts: Counter = Counter()
    rows = list(_examples(input_uri, build, limits, counts))
    if not rows:
        raise ValueError(f"{input_uri}: no usable training rows ({dict(counts)})")
    dataset = datasets.Dataset.from_list(rows, features=features)
    dataset.save_to_disk(str(out_dir))
    summary = {"rows": counts.pop("rows", 0), "examples": counts.pop("examples", 0),
               "skipped": {k.removeprefix("skipped:"): v for k, v in sorted(counts.items())}}
    marker.write_text(json.dumps(summary, indent=1))
    return summary


def load_examples(out_dir: Path) -> datasets.Dataset:
    """The prepared examples (memory-mapped)."""
    if not (out_dir / MARKER).is_file():
        raise FileNotFoundError(f"{out_dir}: prepared examples are missing or incomplete")
    return datasets.load_from_disk(str(out_dir))
