"""`ScoreJudge`: the judge as a Ray Data actor over `ROW_SCHEMA` records (one result row per record).

Each record's image is decoded once; its ordered comparisons (a pair's two orders, a group's 2k or
k(k-1) comparisons) are flattened with the rest of the batch into one `JudgeModel` call, which batches
forward passes by the model's `resources.batch_size`, checks each comparison (prompt length, control
tokens) and applies the model folder's calibration. The same class runs on a dict-free pyarrow batch in
a unit test with no cluster.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image

from carevl.config import InputLimits, ModelSpec
from carevl.data.images import ImageError
from carevl.judge.model import STATUS_OK, JudgeModel
from carevl.ray_utils import use_threads
from carevl.scoring.rows import PAIR, RESULT_SCHEMA, comparisons_of, group_result, pair_result, quarantine_json

log = logging.getLogger(__name__)

_PASS_THROUGH = ("unit_id", "row_index", "id", "kind", "label", "category", "reason", "row_json")


class ScoreJudge:
    """Loads the judge once; maps a batch of records to a batch of results, row for row."""

    def __init__(self, spec: dict | ModelSpec, model_cache: str, method: str, tie_on_disagreement: bool = True,
                 limits: InputLimits | None = None, allow_remote_images: bool = False,
                 num_threads: int | None = None) -> None:
        use_threads(num_threads)
        model_spec = spec if isinstance(spec, ModelSpec) else ModelSpec.model_validate(spec)
        self.judge = JudgeModel(model_spec, model_cache, default_mode="verdict", image_limits=limits,
                                allow_remote_images=allow_remote_images)
        self.method, self.tie = method, tie_on_disagreement

    def __call__(self, batch: pa.Table) -> pa.Table:
        records = batch.to_pylist() if isinstance(batch, pa.Table) else pa.table(batch).to_pylist()
        images: dict[int, Image.Image | None] = {}
        for n, record in enumerate(records):
            if record["reason"] is None:
                try:
                    images[n] = self._image(record)
                except ImageError as exc:
                    record["reason"] = exc.reason
        plans = {n: comparisons_of(r, self.method) for n, r in enumerate(records) if r["reason"] is None}
        judged = self._judge(records, images, plans)
        out = []
        for n, record in enumerate(records):
            row = {name: record[name] for name in _PASS_THROUGH}
            if n in judged:
                row.update(self._result(record, plans[n], *judged[n]))
            if row.get("reason") is not None:
                row["row_json"] = row["row_json"] or _record_json(record)
            out.append(row)
        if len(out) != len(records):
            raise RuntimeError("the scoring judge returned fewer rows than it was given")
        return pa.Table.from_pylist(out, schema=RESULT_SCHEMA)

    def _image(self, record: dict[str, Any]) -> Image.Image | None:
        if record["image_bytes"]:
            return self.judge.resolve_image(record["image_bytes"])
        return self.judge.resolve_image(record["image_ref"])

    def _judge(self, records: list[dict], images: dict[int, Image.Image | None],
               plans: dict[int, tuple[list[str], list[tuple[int, int]]]]) -> dict[int, tuple[list, list]]:
        """(p_first, statuses) per record, from one judge call over all their comparisons."""
        columns: dict[str, list] = {"question": [], "image": [], "response_a": [], "response_b": []}
        owner: list[int] = []
        for n, (answers, comparisons) in plans.items():
            for i, j in comparisons:
                columns["question"].append(records[n]["question"])
                columns["image"].append(images[n])
                columns["response_a"].append(answers[i])
                columns["response_b"].append(answers[j])
                owner.append(n)
        if not owner:
            return {}
        p_a, status = self._call(columns)
        judged: dict[int, tuple[list, list]] = {n: ([], []) for n in plans}
        for n, p, s in zip(owner, p_a, status):
            judged[n][0].append(None if s != STATUS_OK or not np.isfinite(p) else float(p))
            judged[n][1].append(s)
        return judged

    def _call(self, columns: dict[str, list]) -> tuple[list[float], list[str]]:
        """The judge on every comparison; if it raises on the batch, halves are retried down to single
        comparisons, so one pathological comparison is marked `judge_exception`, not the whole batch."""
        try:
            out = self.judge(columns)
            return list(out["p_a"]), list(out["judge_status"])
        except Exception as exc:  # noqa: BLE001 - isolated below; a broken model fails every single call too
            n = len(columns["question"])
            if n == 1:
                log.warning("judge failed on one comparison: %s", exc)
                return [float("nan")], ["judge_exception"]
            half = n // 2
            left = self._call({k: v[:half] for k, v in columns.items()})
            right = self._call({k: v[half:] for k, v in columns.items()})
            return left[0] + right[0], left[1] + right[1]

    def _result(self, record: dict[str, Any], plan: tuple[list[str], list[tuple[int, int]]],
                p_first: list, statuses: list) -> dict[str, Any]:
        _, comparisons = plan
        if record["kind"] == PAIR:
            return pair_result(p_first, statuses, self.tie)
        k = len(record["responses"])
        return {"k": k, **group_result(k, self.method, comparisons, p_first, statuses, self.tie)}


def _record_json(record: dict[str, Any]) -> str:
    keep = {k: record[k] for k in ("id", "kind", "question", "responses", "reference", "image_ref")}
    return quarantine_json(keep)
