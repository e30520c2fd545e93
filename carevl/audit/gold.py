"""Gold for the label audit: read a gold source and give each curated pair its gold label.

Two kinds of gold source are understood (one file or a folder, Parquet or JSONL, local or cloud):

- **scores**: item rows (ITEM_SCHEMA) whose `gold_scores` give a known quality per response, as the
  synthetic items carry. A curated pair's response indices come from its pair_id
  (`<item_id>:<a>-<b>`); when those do not point at the pair's texts, the texts are looked up instead
  (compared stripped, as curation compares responses).
- **labels**: one row per judged pair with `item_id` (or `id`), `response_a`, `response_b` and `label`
  in A / B / tie, as a human-labelled preference set or the held-out synthetic pairs have. The label is
  stored for both orders, so a gold pair written the other way round still matches.

An item id repeated in a scores source keeps its first row, as curation does with repeated ids.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterator, Literal, Sequence

import pyarrow.parquet as pq

from carevl.audit.metrics import GOLD_LABELS, GoldLabel, gold_preference
from carevl.curation.pairs import response_key
from carevl.data import io as dio

_WANTED = ("item_id", "id", "responses", "gold_scores", "response_a", "response_b", "label")
_PAIR_INDICES = re.compile(r"(\d+)-(\d+)")
_FLIP = {"A": "B", "B": "A", "tie": "tie"}


class GoldError(ValueError):
    """A gold source that cannot be read as gold, or that matches no curated pair."""


@dataclass
class Gold:
    """A gold source in memory: per-item response scores, or per-pair labels keyed both ways round."""

    source: str
    kind: Literal["scores", "labels"]
    rows: int = 0
    items: dict[str, tuple[list[str], list[float | None]]] = field(default_factory=dict)
    pairs: dict[tuple[str, str, str], GoldLabel] = field(default_factory=dict)


def _file_rows(file: str) -> Iterator[dict[str, Any]]:
    """The gold-relevant columns of each row of one file (never the images)."""
    if dio.detect_format(file) == "parquet":
        fs, path = dio.resolve(file)
        columns = [c for c in _WANTED if c in pq.read_schema(path, filesystem=fs).names]
        for batch in dio.iter_batches(file, "parquet", columns=columns):
            yield from batch.to_pylist()
    else:
        for row in dio.iter_jsonl_rows(file):
            yield {k: row[k] for k in _WANTED if k in row}


def _row_kind(row: dict[str, Any], where: str) -> str:
    if "label" in row and "response_a" in row and "response_b" in row:
        return "labels"
    if "gold_scores" in row:
        return "scores"
    raise GoldError(f"{where}: a gold row needs `gold_scores` (with `responses`) or `label` with "
                    f"`response_a` and `response_b`; found columns {sorted(row)}")


def normalize_label(value: Any, where: str) -> GoldLabel:
    """'A' / 'B' / 'tie' from a gold label cell (case and surrounding space ignored)."""
    text = value.strip() if isinstance(value, str) else value
    for label in GOLD_LABELS:
        if isinstance(text, str) and text.lower() == label.lower():
            return label  # type: ignore[return-value]
    raise GoldError(f"{where}: label must be one of {GOLD_LABELS}, got {value!r}")


def _add_item(gold: Gold, row: dict[str, Any], where: str) -> None:
    item_id, responses, scores = row.get("item_id"), row.get("responses"), row.get("gold_scores")
    if not isinstance(item_id, str):
        raise GoldError(f"{where}: item_id must be a string, got {item_id!r}")
    if item_id in gold.items or scores is None:
        return
    if responses is None or len(responses) != len(scores):
        raise GoldError(f"{where}: item {item_id!r} has {len(scores)} gold scores for "
                        f"{0 if responses is None else len(responses)} responses")
    gold.items[item_id] = (list(responses), [None if s is None else float(s) for s in scores])


def _add_pair(gold: Gold, row: dict[str, Any], where: str) -> None:
    pair_item = row.get("item_id") if row.get("item_id") is not None else row.get("id")
    response_a, response_b = row.get("response_a"), row.get("response_b")
    if not isinstance(pair_item, str) or not isinstance(response_a, str) or not isinstance(response_b, str):
        raise GoldError(f"{where}: a gold pair needs string item_id (or id), response_a and response_b")
    label = normalize_label(row.get("label"), where)
    a, b = response_key(response_a), response_key(response_b)
    for key, value in (((pair_item, a, b), label), ((pair_item, b, a), _FLIP[label])):
        if gold.pairs.setdefault(key, value) != value:
            raise GoldError(f"{where}: item {pair_item!r} has this pair labelled twice, differently")


def read_gold(uri: str) -> Gold:
    """Read a gold source (see the module docstring); raises GoldError naming the file for bad rows."""
    gold: Gold | None = None
    for file in dio.list_data_files(uri):
        for index, row in enumerate(_file_rows(file)):
            where = f"{file} row {index}"
            kind = _row_kind(row, where)
            if gold is None:
                gold = Gold(source=uri, kind=kind)  # type: ignore[arg-type]
            elif kind != gold.kind:
                raise GoldError(f"{where}: mixes per-pair labels and per-response gold scores")
            (_add_item if kind == "scores" else _add_pair)(gold, row, where)
            gold.rows += 1
    if gold is None:
        raise GoldError(f"{uri}: the gold source has no rows")
    return gold


def pair_indices(pair_id: str, item_id: str) -> tuple[int, int] | None:
    """The response indices (a, b) named by a pair_id `<item_id>:<a>-<b>` (carevl.schema.pair_id)."""
    prefix = f"{item_id}:"
    if not pair_id.startswith(prefix):
        return None
    found = _PAIR_INDICES.fullmatch(pair_id[len(prefix):])
    return (int(found.group(1)), int(found.group(2))) if found else None


def item_pair_gold(responses: Sequence[str], scores: Sequence[float | None], pair_id: str, item_id: str,
                   response_a: str, response_b: str) -> GoldLabel | None:
    """Gold label of one curated pair from its item's gold scores: by pair_id indices when they point at
    the pair's texts, else by looking the (stripped) texts up; None when a text is not found."""
    keys = [response_key(r) for r in responses]
    wanted = (response_key(response_a), response_key(response_b))
    indices = pair_indices(pair_id, item_id)
    if indices is None or not all(0 <= i < len(keys) for i in indices) or \
            (keys[indices[0]], keys[indices[1]]) != wanted:
        if wanted[0] not in keys or wanted[1] not in keys:
            return None
        indices = (keys.index(wanted[0]), keys.index(wanted[1]))
    return gold_preference(scores[indices[0]], scores[indices[1]])


def pair_gold(gold: Gold, item_id: str, pair_id: str, response_a: str, response_b: str) -> GoldLabel | None:
    """Gold label of one curated pair in its own A/B order, or None when the gold has none for it."""
    if gold.kind == "labels":
        return gold.pairs.get((item_id, response_key(response_a), response_key(response_b)))
    found = gold.items.get(item_id)
    if found is None:
        return None
    return item_pair_gold(found[0], found[1], pair_id, item_id, response_a, response_b)


def match_gold(gold: Gold, item_ids: Sequence[str], pair_ids: Sequence[str], responses_a: Sequence[str],
               responses_b: Sequence[str]) -> list[GoldLabel | None]:
    """Gold label per curated pair (parallel lists). A gold source that labels none of the pairs is an
    error: it is almost certainly the wrong file, and an audit over zero pairs would say nothing."""
    labels = [pair_gold(gold, *row) for row in zip(item_ids, pair_ids, responses_a, responses_b)]
    if item_ids and all(label is None for label in labels):
        known = sorted(gold.items if gold.kind == "scores" else {k[0] for k in gold.pairs})[:3]
        raise GoldError(f"{gold.source}: the gold ({gold.kind}, {gold.rows} rows) labels none of the "
                        f"{len(item_ids)} curated pairs; curated item ids look like {sorted(set(item_ids))[:3]}, "
                        f"gold ids like {known}")
    return labels
