"""The refinement job (paper 3.4-3.5, second loop of Algorithm 1) on Ray Data.

    low-confidence pairs -> m critiques (SFT model pool) -> rubric scores (scorer pool)
        -> negative sampling (refine.strategy) -> DPO rows

Work is cut into units of `refine.unit_rows` input rows per file. The driver streams results back and, once
every row of a unit has arrived, writes the unit's files atomically and then its manifest in `_units/`
(the commit point). A re-run skips units with a manifest and deletes what a killed run left of the
others, so every input pair is accounted for exactly once. Output folder (PAIRS_DIR):

    dpo/        DPO rows: image, question, answers, chosen/rejected critiques, their scores and flags
    critiques/  one row per input pair: all critiques, verdicts, scores, the selection or skip reason
    _units/     one manifest per finished unit
    summary.json
"""
from __future__ import annotations

import json
import logging
import time
from collections import Counter, defaultdict
from typing import Any

import pyarrow as pa
import pyarrow.fs  # noqa: F401  (pa.fs)
import pyarrow.parquet as pq

from carevl.config import CarevlConfig
from carevl.data import io as dio
from carevl.refine.critiques import ADDED_TYPES, CritiqueSampler, CritiqueScorer, as_table, with_columns
from carevl.refine.negatives import select_pairs
from carevl.planning import check_placement

log = logging.getLogger(__name__)

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


def plan_units(input_uri: str, unit_rows: int) -> list:
    """Work units over the input Parquet files, in file order (row counts from file metadata)."""
    from carevl.curation.units import WorkUnit

    units = []
    first_global = 0
    for f_index, file in enumerate(dio.list_data_files(input_uri, "parquet")):
        fs, path = dio.resolve(file)
        with fs.open_input_file(path) as handle:
            rows = pq.ParquetFile(handle).metadata.num_rows
        for start in range(0, rows, unit_rows):
            stop = min(start + unit_rows, rows)
            units.append(WorkUnit(f"u{f_index:05d}-{start:010d}", file, "parquet", start, stop, first_global + start))
        first_global += rows
    return units


def _read_unit(unit: dict[str, Any]) -> pa.Table:
    from carevl.curation.units import read_unit_rows

    rows = read_unit_rows(unit)
    table = pa.Table.from_pylist(rows)
    return table.append_column("unit_id", pa.array([unit["unit_id"]] * len(rows), pa.string()))


def _read_units(batch: dict[str, Any]) -> pa.Table:
    units = pa.table(batch).to_pylist() if not isinstance(batch, pa.Table) else batch.to_pylist()
    return pa.concat_tables([_read_unit(u) for u in units], promote_options="permissive")


def _write_unit(output: str, unit, pairs: list[dict[str, Any]], strategy: str) -> dict[str, Any]:
    """Write a finished unit's files, then its manifest; returns the unit's stats."""
    from carevl.curation.units import write_text_atomic

    rows = [r for p in pairs for r in dpo_rows(p, strategy)]
    name = f"{unit.unit_id}.parquet"
    dio.write_table(pa.Table.from_pylist(rows, schema=DPO_SCHEMA), dio.join(output, "dpo", name))
    critiques = pa.Table.from_pylist([{k: p.get(k) for k in CRITIQUE_SCHEMA.names} for p in pairs],
                                     schema=CRITIQUE_SCHEMA)
    dio.write_table(critiques, dio.join(output, "critiques", name))
    stats = {"pairs": len(pairs), "dpo_rows": len(rows),
             "skipped": dict(Counter(p["skip_reason"] for p in pairs if p["skip_reason"] is not None)),
             "used_pairs": sum(1 for p in pairs if p["chosen_index"] is not None),
             "critiques": sum(len(p["critiques"]) for p in pairs),
             "correct_critiques": sum(sum(p["correct"]) for p in pairs),
             "unparseable_verdicts": sum(v is None for p in pairs for v in p["verdicts"]),
             "score_status": dict(Counter(s for p in pairs for s in p["score_status"]))}
    manifest = {"unit_id": unit.unit_id, "file": unit.file, "start": unit.start, "stop": unit.stop,
                "rows": unit.rows, "stats": stats}
    write_text_atomic(dio.join(output, "_units", f"{unit.unit_id}.json"), json.dumps(manifest))
    return stats


def _remove_unfinished(output: str, done: set[str]) -> None:
    """Delete files of units without a manifest and temporary files (a killed run's leftovers)."""
    for folder in ("dpo", "critiques", "_units"):
        uri = dio.join(output, folder)
        dio.remove_temp_files(uri)
        fs, path = dio.resolve(uri)
        if fs.get_file_info(path).type != pa.fs.FileType.Directory:
            continue
        for info in fs.get_file_info(pa.fs.FileSelector(path)):
            if folder != "_units" and info.base_name.split(".", 1)[0] not in done:
                fs.delete_file(info.path)


def build_dataset(config: CarevlConfig, units: list, sft_model: str):
    """The streaming Ray Data plan over the pending units."""
    import ray.data

    from carevl.curation.pipeline import actor_threads, pool_args
    from carevl.training.common import judge_spec

    ref, cache = config.refine, str(config.paths.model_cache_dir())
    critic = judge_spec(config, sft_model)
    scorer = config.models[ref.scorer_model]
    light = dict(batch_format="pyarrow", num_cpus=0)  # I/O and bookkeeping: never wait behind model actors
    ds = ray.data.from_items([u.to_dict() for u in units], override_num_blocks=len(units))
    ds = ds.map_batches(_read_units, batch_size=1, **light)
    ds = ds.map_batches(CritiqueSampler, fn_constructor_kwargs=dict(
        spec=critic, model_cache=cache, num_samples=ref.num_samples, temperature=ref.temperature,
        max_new_tokens=ref.max_new_tokens, seed=config.seed, limits=config.curation.limits,
        num_threads=actor_threads(critic.resources)), **pool_args(critic.resources, critic.backend))
    ds = ds.map_batches(CritiqueScorer, fn_constructor_kwargs=dict(spec=scorer, model_cache=cache,
                                                                   num_threads=actor_threads(scorer.resources)),
                        **pool_args(scorer.resources, scorer.backend))
    return ds.map_batches(apply_strategy, fn_kwargs={"strategy": ref.strategy}, **light)


def summarize(output: str, units: list, config: CarevlConfig, seconds: float) -> dict[str, Any]:
    """Totals over every unit manifest; input pairs = used + skipped."""
    from carevl.curation.units import completed_units

    done = completed_units(output)
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


def run_refine(config: CarevlConfig, input_uri: str, sft_model: str, output: str) -> dict[str, Any]:
    """Refine the low-confidence pairs at `input_uri` with the SFT model into DPO rows at `output`."""
    from carevl.curation.units import completed_units
    from carevl.ray_utils import init_ray

    check_placement(config, "refine")  # fail in seconds when a model fits no node
    start = time.perf_counter()
    units = plan_units(input_uri, config.refine.unit_rows)
    done = set(completed_units(output))
    _remove_unfinished(output, done)
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
                    stats = _write_unit(output, expected[unit_id], buffers.pop(unit_id), config.refine.strategy)
                    log.info("refine: unit %s done: %s", unit_id, stats)
        if buffers:
            raise RuntimeError(f"units ended incomplete: { {u: len(r) for u, r in buffers.items()} }")
    summary = summarize(output, units, config, time.perf_counter() - start)
    from carevl.curation.units import write_text_atomic

    write_text_atomic(dio.join(output, "summary.json"), json.dumps(summary, indent=1))
    return summary
