"""Benchmark loaders: every benchmark becomes the same list of evaluation items.

An evaluation item is a plain dict in the benchmark's own A/B order (before any shuffling):

    {id, category, question, response_a, response_b, label ("A" | "B" | "tie"),
     image_path (str | None), image_bytes (bytes | None)}

Rows that cannot become an item are not dropped silently: each loader returns them as quarantine
rows `{id, reason}` next to the items, and the runner writes them out and counts them.
"""
from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable


from carevl.data import io as dio

LABELS = ("A", "B", "tie")
_IMAGE_PLACEHOLDER = re.compile(r"[ \t]*<image>[ \t]*\n?")
VL_REWARDBENCH_CATEGORIES = ("general", "hallucination", "reasoning")

# Id prefixes -> category, the benchmark's own rule (see shared/data/vl_rewardbench/SOURCE.md).
# Ids matching none of them (the VLFeedback sources) are "general".
_VLRB_PREFIXES = (
    ("wildvision", "general"),
    ("hallucination", "hallucination"),
    ("rlaif", "hallucination"),
    ("rlhf", "hallucination"),
    ("mathverse", "reasoning"),
    ("mmmu", "reasoning"),
)


@dataclass
class LoadedBenchmark:
    """Items ready for evaluation, plus the rows that were set aside with a reason."""

    items: list[dict[str, Any]]
    quarantine: list[dict[str, Any]] = field(default_factory=list)
    has_images: bool = False


def vl_rewardbench_category(item_id: str) -> str:
    """Category of a VL-RewardBench item from its id prefix (paper 4.1, Table 1 columns)."""
    lowered = item_id.lower()
    for prefix, category in _VLRB_PREFIXES:
        if lowered.startswith(prefix):
            return category
    return "general"


def read_records(uri: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSONL or Parquet dataset (one file, or a folder of part files; local path or URI).

    A JSONL line that is not a JSON object comes back as {"_error", "_source"}, to be quarantined.
    """
    uri = str(uri)
    if dio.dataset_format(uri) == "parquet":
        return dio.read_table(uri, "parquet").to_pylist()
    return list(dio.iter_jsonl_rows(uri, bad_lines="mark"))


def image_from_column(value: Any) -> tuple[str | None, bytes | None]:
    """An image column as (reference, bytes): a path/URL/data-URL string, raw bytes, or the
    {bytes, path} struct that Hugging Face parquet files use."""
    if value is None:
        return None, None
    if isinstance(value, (bytes, bytearray)):
        return None, bytes(value)
    if isinstance(value, dict):
        raw = value.get("bytes")
        if raw:
            return None, bytes(raw)
        return value.get("path") or None, None
    if isinstance(value, str):
        return value or None, None
    raise TypeError(f"unsupported image value of type {type(value).__name__}")


def resolve_image_path(ref: str | None, base_dir: Path | None) -> str | None:
    """Relative file paths are taken relative to `base_dir`; URLs and data URLs pass through."""
    if ref is None or base_dir is None or "://" in ref or ref.startswith("data:"):
        return ref
    path = Path(ref)
    return str(path if path.is_absolute() else base_dir / path)


def strip_image_placeholder(text: str) -> str:
    """Drop the `<image>` markers some source datasets leave in the question text (449 VL-RewardBench
    queries). The judge prompt places the image itself; a literal marker would be read as a second
    image slot by LLaVA-style processors, and means nothing in text-only mode."""
    return _IMAGE_PLACEHOLDER.sub("", text).strip()


def _vlrb_item(row: dict[str, Any], images_dir: Path | None) -> dict[str, Any]:
    """One VL-RewardBench row -> item. Raises ValueError naming the broken field."""
    responses, ranking = row.get("response"), row.get("human_ranking")
    if not isinstance(responses, list) or len(responses) != 2:
        raise ValueError("field 'response' must be a list of two answers")
    if not isinstance(ranking, list) or len(ranking) != 2:
        raise ValueError("field 'human_ranking' must be a list of two ranks")
    if not isinstance(row.get("query"), str):
        raise ValueError("field 'query' must be a string")
    # human_ranking holds ranks, 0 = better (SOURCE.md).
    label = "tie" if ranking[0] == ranking[1] else ("A" if ranking[0] < ranking[1] else "B")
    image_path, image_bytes = image_from_column(row.get("image"))
    if image_bytes is None and images_dir is not None:
        rel = row.get("image_path") or image_path
        if not rel:
            raise ValueError("field 'image_path' is empty but --images was given")
        candidate = images_dir / rel
        if not candidate.is_file():
            candidate = images_dir / Path(rel).name
        if not candidate.is_file():
            raise ValueError(f"image not found under {images_dir}: {rel}")
        image_path = str(candidate)
    elif image_bytes is None and image_path is not None and not Path(image_path).is_file():
        image_path = None  # a parquet path reference without the file is no image at all
    return {
        "id": str(row["id"]),
        "category": vl_rewardbench_category(str(row["id"])),
        "question": strip_image_placeholder(row["query"]),
        "response_a": str(responses[0]),
        "response_b": str(responses[1]),
        "label": label,
        "image_path": image_path,
        "image_bytes": image_bytes,
    }


def _collect(rows: Iterable[dict[str, Any]], make_item, number_repeats: bool = False) -> LoadedBenchmark:
    """Apply `make_item` to each row; failures go to quarantine with the reason.

    A repeated id is quarantined, unless `number_repeats`: then the n-th repeat (n >= 1) becomes its own
    item with id `<id>#<n>` (VL-RewardBench reuses 18 reasoning ids for different answer pairs).
    """
    items: list[dict[str, Any]] = []
    quarantine: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for index, row in enumerate(rows):
        if "_error" in row:  # a line of the file that is not a JSON object
            quarantine.append({"id": f"<{row['_source']}>", "reason": row["_error"]})
            continue
        row_id = row.get("id")
        if row_id is None or str(row_id) == "":
            quarantine.append({"id": f"<row {index}>", "reason": "missing field 'id'"})
            continue
        row_id = str(row_id)
        repeat = seen.get(row_id, 0)
        if repeat and not number_repeats:
            quarantine.append({"id": row_id, "reason": "duplicate id"})
            continue
        try:
            item = make_item(row)
        except (ValueError, TypeError, KeyError) as exc:
            quarantine.append({"id": row_id if not repeat else f"{row_id}#{repeat}", "reason": str(exc)})
            seen[row_id] = repeat + 1
            continue
        seen[row_id] = repeat + 1
        if repeat:
            item["id"] = f"{row_id}#{repeat}"
        items.append(item)
    has_images = any(it["image_path"] or it["image_bytes"] for it in items)
    return LoadedBenchmark(items=items, quarantine=quarantine, has_images=has_images)


def load_vl_rewardbench(path: str | Path, images_dir: str | Path | None = None) -> LoadedBenchmark:
    """VL-RewardBench (paper 4.1) from its JSONL annotations or its parquet (images embedded).

    Without `images_dir` and without embedded images the items carry no image: text-only mode.
    Ids are not unique in the benchmark (18 reasoning ids name two different pairs); every row is an
    item, repeats get the id `<id>#<n>`, so all 1,250 pairs are judged.
    """
    images = Path(images_dir) if images_dir else None
    if images is not None and not images.is_dir():
        raise FileNotFoundError(f"--images folder not found: {images}")
    return _collect(read_records(path), lambda row: _vlrb_item(row, images), number_repeats=True)


def _pairwise_item(row: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """One generic pairwise row -> item. Raises ValueError naming the broken field."""
    for name in ("question", "response_a", "response_b"):
        if not isinstance(row.get(name), str):
            raise ValueError(f"field '{name}' must be a string")
    raw_label = row.get("label")
    label = {"a": "A", "b": "B", "tie": "tie"}.get(str(raw_label).strip().lower()) if raw_label else None
    if label is None:
        raise ValueError(f"field 'label' must be one of A, B, tie (got {raw_label!r})")
    image_path, image_bytes = image_from_column(row.get("image", row.get("image_path")))
    if image_bytes is None and row.get("image_bytes"):
        image_bytes = bytes(row["image_bytes"])
    return {
        "id": str(row["id"]),
        "category": str(row.get("category") or "all"),
        "question": row["question"],
        "response_a": row["response_a"],
        "response_b": row["response_b"],
        "label": label,
        "image_path": resolve_image_path(image_path, base_dir),
        "image_bytes": image_bytes,
    }


def load_pairwise(path: str | Path) -> LoadedBenchmark:
    """Generic pairwise JSONL/Parquet: {id, image, question, response_a, response_b, label, category}.

    `label` is A, B or tie (MLLM-as-a-Judge's pair settings, paper Table 2). `path` is a file or a folder
    of part files (e.g. `ray_jobs.synth_data --eval-pairs`). A relative image path is read relative to
    the data file's folder (or the given folder).
    """
    local = Path(path)
    base_dir = local.resolve() if local.is_dir() else local.resolve().parent
    return pairwise_from_rows(read_records(path), base_dir)


def pairwise_from_rows(rows: Iterable[dict[str, Any]], base_dir: Path | None = None) -> LoadedBenchmark:
    """Rows already in the pairwise format (e.g. held-out synthetic pairs) -> items."""
    return _collect(rows, lambda row: _pairwise_item(row, base_dir or Path.cwd()))


def image_as_data_url(item: dict[str, Any]) -> str | None:
    """The item's image as something the judge service accepts (data URL); None when text-only."""
    ref, raw = item.get("image_path"), item.get("image_bytes")
    if raw is None and ref is not None and not ref.startswith("data:") and "://" not in ref:
        raw = Path(ref).read_bytes()
    if raw is not None:
        mime = next((m for magic, m in _MIME_BY_MAGIC if raw.startswith(magic)), "application/octet-stream")
        return f"data:{mime};base64," + base64.b64encode(raw).decode("ascii")
    return ref


_MIME_BY_MAGIC = ((b"\x89PNG", "image/png"), (b"\xff\xd8", "image/jpeg"), (b"GIF8", "image/gif"),
                  (b"RIFF", "image/webp"), (b"BM", "image/bmp"))
