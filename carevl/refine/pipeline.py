"""The refinement job (paper 3.4-3.5, second loop of Algorithm 1) on Ray Data.

    low-confidence pairs -> m critiques (SFT model pool) -> rubric scores (scorer pool)
        -> negative sampling (refine.strategy) -> DPO rows

Work is cut into units of `refine.unit_rows` input rows per file. The driver streams results back and, once
every row of a unit has arrived, stages the unit's files and publishes them with its manifest in
`_units/` (the run ledger, `carevl.ledger`). A re-run with the same pairs, SFT model, settings and code
skips units with a manifest and deletes what a killed run left of the others, so every input pair is
accounted for exactly once; a re-run with anything changed (another strategy, say) is refused rather
than mixing units of two runs. Output folder (PAIRS_DIR):

    dpo/        DPO rows: image, question, answers, chosen/rejected critiques, their scores and flags
    critiques/  one row per input pair: all critiques, verdicts, scores, the selection or skip reason
    _units/     one manifest per finished unit
    summary.json
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from collections import Counter, defaultdict
from typing import Any

import pyarrow as pa
import ray

from carevl import ledger
from carevl.config import CarevlConfig
from carevl.data import io as dio
from carevl.ledger import RunLedger, WorkUnit, read_unit_rows
from carevl.models.specs import judge_spec
from carevl.ray_utils import actor_threads, init_ray, pool_args
from carevl.refine.critiques import ADDED_TYPES, CritiqueSampler, CritiqueScorer, as_table, with_columns
from carevl.refine.negatives import select_pairs
from carevl.planning import check_placement

log = logging.getLogger(__name__)
OUTPUT_CLASSES = ("dpo", "critiques")

CRITIQUE_SCHEMA = pa.schema(
    [(name, pa.string()) for name in ("pair_id", "item_id", "label", "low_reason")]
    + [(name, ADDED_TYPES[name]) for name in ("critiques", "verdicts", "correct", "scores", "score_status",
                                              "score_replies", "chosen_index", "rejected_indices", "skip_reason")]
)
DPO_SCHEMA = pa.schema([
    ("pair_id", pa.string()), ("item_id", pa.string()), ("question", pa.string()),
    ("image_path", pa.string()), ("image_bytes", pa.binary()), ("caption", pa.string()),
    ("response_a", pa.string()), ("response_b", pa.string()), ("label", pa.string()),
    ("low_reason", pa.string()), ("strategy", pa.string()),
    ("chosen", pa.string()), ("rejected", pa.string()),
    ("chosen_index", pa.int32()), ("rejected_index", pa.int32()),
    ("chosen_score", pa.float64()), ("rejected_score", pa.float64()),
    ("rejected_correct", pa.bool_()), ("rejected_verdict", pa.string()),
])


def apply_strategy(batch: pa.Table | dict[str, Any], strategy: str) -> pa.Table:
    """Negative sampling per pair (paper 3.5 / 4.5.2): adds `chosen_index`, `rejected_indices` and
    the skip reason of pairs that yield no DPO row."""
    table = as_table(batch, ("correct", "scores", "skip_reason"), "apply_strategy")
    rows = table.to_pylist()
    for row in rows:
        row.update(chosen_index=None, rejected_indices=[])
        if row["skip_reason"] is not None:
            continue
        selection = select_pairs(strategy, row["correct"], row["scores"])
        row["skip_reason"] = selection.skip_reason
        if selection.skip_reason is None:
            row.update(chosen_index=selection.chosen, rejected_indices=list(selection.rejected))
    return with_columns(table, rows, ("chosen_index", "rejected_indices", "skip_reason"), "apply_strategy")


def dpo_rows(pair: dict[str, Any], strategy: str) -> list[dict[str, Any]]:
    """One DPO row per (chosen, rejected) of a selected pair."""
    c = pair["chosen_index"]
    if c is None:
        return []
    keep = {k: pair.get(k) for k in ("pair_id", "item_id", "question", "image_path", "image_bytes", "caption",
                                     "response_a", "response_b", "label", "low_reason")}
    return [{**keep, "strategy": strategy, "chosen": pair["critiques"][c], "rejected": pair["critiques"][r],
             "chosen_index": c, "rejected_index": r, "chosen_score": pair["scores"][c],
             "rejected_score": pair["scores"][r], "rejected_correct": pair["correct"][r],
             "rejected_verdict": pair["verdicts"][r]} for r in pair["rejected_indices"]]


def _read_unit(unit: dict[str, Any]) -> pa.Table:
    rows = read_unit_rows(unit)
    table = pa.Table.from_pylist(rows)
    return table.append_column("unit_id", pa.array([unit["unit_id"]] * len(rows), pa.string()))


def _read_units(batch: dict[str, Any]) -> pa.Table:
    units = pa.table(batch).to_pylist() if not isinstance(batch, pa.Table) else batch.to_pylist()
    return pa.concat_tables([_read_unit(u) for u in units], promote_options="permissive")


def unit_stats(pairs: list[dict[str, Any]], dpo_count: int) -> dict[str, Any]:
    """A finished unit's counters (summed over units into summary.json)."""
    return {"pairs": len(pairs), "dpo_rows": dpo_count,
            "skipped": dict(Counter(p["skip_reason"] for p in pairs if p["skip_reason"] is not None)),
            "used_pairs": sum(1 for p in pairs if p["chosen_index"] is not None),
            "critiques": sum(len(p["critiques"]) for p in pairs),
            "correct_critiques": sum(sum(p["correct"]) for p in pairs),
            "unparseable_verdicts": sum(v is None for p in pairs for v in p["verdicts"]),
            "score_status": dict(Counter(s for p in pairs for s in p["score_status"]))}


def _write_unit(led: RunLedger, unit: WorkUnit, pairs: list[dict[str, Any]], strategy: str) -> dict[str, Any]:
    """Stage a finished unit's files, then publish them with the unit's manifest; returns its stats."""
    rows = [r for p in pairs for r in dpo_rows(p, strategy)]
    name = f"{unit.unit_id}-{uuid.uuid4().hex[:12]}.parquet"
    critiques = pa.Table.from_pylist([{k: p.get(k) for k in CRITIQUE_SCHEMA.names} for p in pairs],
                                     schema=CRITIQUE_SCHEMA)
    files = []
    for cls, table in (("dpo", pa.Table.from_pylist(rows, schema=DPO_SCHEMA)), ("critiques", critiques)):
        path = led.staged(cls, name)
        dio.write_table(table, path)
        files.append({"class": cls, "path": path, "rows": table.num_rows})
    stats = unit_stats(pairs, len(rows))
    led.publish(unit, files, stats)
    return stats


def build_dataset(config: CarevlConfig, units: list, sft_model: str):
    """The streaming Ray Data plan over the pending units."""
    ref, cache = config.refine, str(config.paths.model_cache_dir())
    critic = judge_spec(config, sft_model)
    scorer = config.models[ref.scorer_model]
    light = dict(batch_format="pyarrow", num_cpus=0)  # I/O and bookkeeping: never wait behind model actors
    ds = ray.data.from_items([u.to_dict() for u in units], override_num_blocks=len(units))
    ds = ds.map_batches(_read_units, batch_size=1, **light)
    ds = ds.map_batches(CritiqueSampler, fn_constructor_kwargs=dict(
        spec=critic, model_cache=cache, num_samples=ref.num_samples, temperature=ref.temperature,
        max_new_tokens=ref.max_new_tokens, seed=config.seed, limits=config.curation.limits,
        allow_remote_images=config.curation.allow_remote_images,
        num_threads=actor_threads(critic.resources)), **pool_args(critic.resources, critic.backend))
    ds = ds.map_batches(CritiqueScorer, fn_constructor_kwargs=dict(spec=scorer, model_cache=cache,
                                                                   num_threads=actor_threads(scorer.resources),
                                                                   strategy=ref.strategy),
                        **pool_args(scorer.resources, scorer.backend))
    return ds.map_batches(apply_strategy, fn_kwargs={"strategy": ref.strategy}, **light)


def summarize(led: RunLedger, units: list[WorkUnit], config: CarevlConfig, seconds: float) -> dict[str, Any]:
    """Totals over every unit manifest; input pairs = used + skipped."""
    done = led.completed_units()
    totals: Counter = Counter()
    skipped: Counter = Counter()
    score_status: Counter = Counter()
    for unit in units:
        stats = done[unit.unit_id]["stats"]
        totals.update({k: v for k, v in stats.items() if isinstance(v, int)})
        skipped.update(stats["skipped"])
        score_status.update(stats["score_status"])
    summary = {"input_pairs": sum(u.rows for u in units), **dict(totals), "skipped": dict(skipped),
               "score_status": dict(score_status), "strategy": config.refine.strategy,
               "num_samples": config.refine.num_samples, "scorer_model": config.refine.scorer_model,
               "seconds": round(seconds, 3), "config_hash": config.config_hash()}
    if summary["input_pairs"] != summary.get("used_pairs", 0) + sum(skipped.values()):
        raise RuntimeError(f"pair accounting does not add up: {summary}")
    return summary


def run_fingerprint(config: CarevlConfig, input_uri: str, sft_model: str) -> dict[str, Any]:
    """What a resumed refinement must share with the run it continues: the pairs, the SFT model's files,
    the refine settings (strategy included), the critic and scorer specs, seed, limits and code."""
    models = {"critic": judge_spec(config, sft_model), "scorer": config.models[config.refine.scorer_model]}
    settings = {"refine": config.refine.model_dump(), "seed": config.seed,
                "models": {k: m.model_dump(exclude={"resources", "http"}) for k, m in models.items()},
                "limits": config.curation.limits.model_dump(),
                "allow_remote_images": config.curation.allow_remote_images}
    inputs = {"pairs": ledger.input_fingerprint(input_uri), "sft_model": ledger.input_fingerprint(sft_model)}
    return ledger.run_fingerprint(inputs, settings)


def run_refine(config: CarevlConfig, input_uri: str, sft_model: str, output: str) -> dict[str, Any]:
    """Refine the low-confidence pairs at `input_uri` with the SFT model into DPO rows at `output`."""
    check_placement(config, "refine")  # fail in seconds when a model fits no node
    start = time.perf_counter()
    led = RunLedger(output, "refine")
    led.claim(run_fingerprint(config, input_uri, sft_model))
    units = ledger.parquet_units(input_uri, config.refine.unit_rows)
    done = set(led.completed_units())
    led.remove_unfinished(done, OUTPUT_CLASSES)
    todo = [u for u in units if u.unit_id not in done]
    log.info("refine: %d units, %d already done", len(units), len(units) - len(todo))
    if todo:
        init_ray(config)
        expected = {u.unit_id: u for u in todo}
        buffers: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for batch in build_dataset(config, todo, sft_model).iter_batches(batch_format="pyarrow", batch_size=None):
            for row in batch.to_pylist():
                unit_id = row["unit_id"]
                buffers[unit_id].append(row)
                if len(buffers[unit_id]) == expected[unit_id].rows:
                    stats = _write_unit(led, expected[unit_id], buffers.pop(unit_id), config.refine.strategy)
                    log.info("refine: unit %s done: %s", unit_id, stats)
        if buffers:
            raise RuntimeError(f"units ended incomplete: { {u: len(r) for u, r in buffers.items()} }")
    summary = summarize(led, units, config, time.perf_counter() - start)
    ledger.write_text_atomic(dio.join(output, "summary.json"), json.dumps(summary, indent=1))
    led.mark_complete()
    return summary
