"""Column contracts between stages: input items, curated pairs, DPO rows.

An *item* is one image-question pair with its candidate responses (paper 3.1). Images travel as a
reference (`image_path`: local path, cloud URI, http(s) URL or data URL) or as raw bytes
(`image_bytes`); exactly one of the two is set.
"""
from __future__ import annotations

import pyarrow as pa

# Optional strong-judge verdicts shipped with the input: one struct per judged pair of response
# indices, `choice` is "A" (response index a) or "B" (response index b).
GIVEN_JUDGEMENT = pa.struct([
    ("a", pa.int32()),
    ("b", pa.int32()),
    ("choice", pa.string()),
    ("explanation", pa.string()),
])

ITEM_SCHEMA = pa.schema([
    ("item_id", pa.string()),
    ("image_path", pa.string()),
    ("image_bytes", pa.binary()),
    ("question", pa.string()),
    ("responses", pa.list_(pa.string())),
    ("response_models", pa.list_(pa.string())),
    ("judgements", pa.list_(GIVEN_JUDGEMENT)),
    # Synthetic data only: a known quality per response (higher is better) for held-out evaluation.
    ("gold_scores", pa.list_(pa.float64())),
    ("category", pa.string()),
    # Optional: a description of the image shipped with the data (`curation.caption_backend: column`).
    ("caption", pa.string()),
])

ITEM_REQUIRED = ("item_id", "question")

# One curated pair (paper 3.2): columns every downstream stage may rely on.
PAIR_SCHEMA = pa.schema([
    ("item_id", pa.string()),
    ("pair_id", pa.string()),
    ("question", pa.string()),
    ("image_path", pa.string()),
    ("image_bytes", pa.binary()),
    ("caption", pa.string()),
    ("response_a", pa.string()),
    ("response_b", pa.string()),
    ("judge_choice", pa.string()),          # "A", "B" or null (missing / unparseable)
    ("judge_explanation", pa.string()),
    ("judge_status", pa.string()),          # ok | missing | unparseable | error
    ("expert_scores_a", pa.list_(pa.float64())),   # in config order of curation.experts
    ("expert_scores_b", pa.list_(pa.float64())),
    ("votes_a", pa.int32()),
    ("votes_b", pa.int32()),
    ("confidence", pa.string()),            # high | low
    ("low_reason", pa.string()),            # null | judge_disagrees | split_vote | no_judge
    ("label", pa.string()),                 # "A", "B" or null
    ("category", pa.string()),
])

QUARANTINE_COLUMNS = ("item_id", "reason", "row_json")


def pair_id(item_id: str, index_a: int, index_b: int) -> str:
    """Stable id of the pair (response index_a, response index_b) of an item."""
    return f"{item_id}:{index_a}-{index_b}"
