"""Training examples streamed once to a `datasets` folder that every training worker memory-maps.

Rows are read from Parquet in small batches, turned into examples by a pure builder, given their image
(validated by decoding, stored as the original encoded bytes) and written batch by batch through
`datasets.Dataset.from_generator`, so memory stays flat whatever the input size. A marker file written
last records the counts; a re-run of the same run finds it and reuses the folder. Rows that yield no
example are counted by reason, never dropped silently.
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
WRITER_BATCH_ROWS = 64  # examples (with their images) held in memory before an Arrow batch is written

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
    "pair_id": datasets.Value("string"), "swapped": datasets.Value("bool"),
    "prompt": _MESSAGES, "chosen": _MESSAGES, "rejected": _MESSAGES, "images": datasets.List(datasets.Image()),
})

# Builder: one input row -> (example without image, or a list of them; skip_reason).
Builder = Callable[[dict[str, Any]], tuple[dict[str, Any] | list[dict[str, Any]] | None, str | None]]


def image_bytes_of(row: dict[str, Any], limits: InputLimits, allow_remote: bool = False) -> bytes:
    """The row's encoded image, checked to decode within `limits` (raises ImageError). Remote references
    (http(s), cloud URIs) are fetched only when `allow_remote` (config `curation.allow_remote_images`)."""
    data = read_image_bytes(row.get("image_path"), row.get("image_bytes"), limits, allow_remote=allow_remote)
    decode_image(data, limits)
    return data


def iter_examples(input_uri: str, build: Builder, limits: InputLimits, counts: Counter,
                  allow_remote: bool = False, batch_size: int = 64) -> Iterator[dict[str, Any]]:
    """The examples of `input_uri`, one at a time (Parquet read in small batches); `counts` tallies rows,
    examples and skip reasons as they go."""
    for batch in dio.iter_batches(input_uri, "parquet", batch_size=batch_size):
        for row in batch.to_pylist():
            counts["rows"] += 1
            example, reason = build(row)
            if example is None:
                counts[f"skipped:{reason}"] += 1
                continue
            try:
                data = image_bytes_of(row, limits, allow_remote)
            except ImageError as exc:
                counts[f"skipped:{exc.reason}"] += 1
                continue
            for one in example if isinstance(example, list) else [example]:
                counts["examples"] += 1
                yield {**one, "images": [{"bytes": data, "path": None}]}


def prepare_examples(input_uri: str, out_dir: Path, build: Builder, features: datasets.Features,
                     limits: InputLimits, allow_remote: bool = False) -> dict[str, Any]:
    """Stream the examples of `input_uri` to disk (idempotent); returns the counts.

    `datasets.Dataset.from_generator` writes them in small Arrow batches as they are built, so the
    driver never holds more than one batch of images, however large the input. Raises ValueError when
    no row yields an example (training on nothing is a mistake, not a no-op).
    """
    marker = out_dir / MARKER
    if marker.is_file():
        return json.loads(marker.read_text())
    if out_dir.exists():
        shutil.rmtree(out_dir)  # an unfinished earlier attempt
    counts: Counter = Counter()
    scratch = out_dir.parent / f".{out_dir.name}.build"
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        dataset = datasets.Dataset.from_generator(
            iter_examples, features=features, cache_dir=str(scratch), writer_batch_size=WRITER_BATCH_ROWS,
            gen_kwargs={"input_uri": input_uri, "build": build, "limits": limits, "counts": counts,
                        "allow_remote": allow_remote})
        if counts["examples"] == 0:
            raise ValueError(f"{input_uri}: no usable training rows ({dict(counts)})")
        dataset.save_to_disk(str(out_dir))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    summary = {"rows": counts.pop("rows", 0), "examples": counts.pop("examples", 0),
               "skipped": {k.removeprefix("skipped:"): v for k, v in sorted(counts.items())}}
    marker.write_text(json.dumps(summary, indent=1))
    return summary


def load_examples(out_dir: Path) -> datasets.Dataset:
    """The prepared examples (memory-mapped)."""
    if not (out_dir / MARKER).is_file():
        raise FileNotFoundError(f"{out_dir}: prepared examples are missing or incomplete")
    return datasets.load_from_disk(str(out_dir))
