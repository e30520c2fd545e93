"""Where the judgements come from: a judge loaded in-process (Ray Data actor pool over `JudgeModel`)
or the running judge service (through `carevl.client`).

Both take judge requests (see `judgements.judge_requests`) and yield lists of answers as they finish:
{key, verdict ("A" | "B" | None, in the order shown), p_a (float | None), status, text}.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import ray

from carevl import ledger
from carevl.config import CarevlConfig, ModelSpec
from carevl.evaluation.judgements import (
    STATUS_ERROR,
    STATUS_NO_PREFERENCE,
    STATUS_OK,
    STATUS_UNPARSEABLE,
    sample_seed,
)
from carevl.judge.calibration import CALIBRATION_FILE, load_calibration
from carevl.judge.model import JudgeModel
from carevl.judge_format import parse_verdict
from carevl.models.loading import resolve_model_path
from carevl.models.specs import judge_spec
from carevl.planning import PlacementError
from carevl.planning.nodes import node_types
from carevl.planning.placement import Need, place, placement_errors
from carevl.ray_utils import pool_args

log = logging.getLogger(__name__)

STATUS_EXCEPTION = "judge_exception"
REQUEST_COLUMNS = ("key", "run", "question", "response_a", "response_b", "image_path", "image_bytes")


def judge_answer(mode: str, p_a: float | None, winner: str | None, judgement: str | None,
                 status: str | None) -> dict[str, Any]:
    """One judge output -> {verdict, p_a, status, text}, whatever produced it.

    Verdict mode reads p_a (a forward pass, no text; p_a exactly 0.5 is `no_preference`). Explain mode
    reads the generated text strictly with `parse_verdict`; a text without a readable verdict line is
    `unparseable` (scored wrong, never replaced by a guess). Any other judge status is kept as the reason.
    """
    if status not in (None, STATUS_OK):
        return {"verdict": None, "p_a": None, "status": str(status), "text": judgement}
    if mode == "verdict":
        if p_a is None or not np.isfinite(p_a):
            return {"verdict": None, "p_a": None, "status": STATUS_ERROR, "text": judgement}
        verdict = winner if winner in ("A", "B") else None
        return {"verdict": verdict, "p_a": float(p_a), "status": STATUS_OK if verdict else STATUS_NO_PREFERENCE,
                "text": judgement}
    verdict = parse_verdict(judgement)
    return {"verdict": verdict, "p_a": None, "status": STATUS_OK if verdict else STATUS_UNPARSEABLE,
            "text": judgement}


class EvalJudgeActor:
    """Ray Data actor: one `JudgeModel` per actor; maps a batch of judge requests to answers.

    Rows of different runs are judged with different sampling seeds, so k explain-mode runs are k
    samples when the judge samples (temperature > 0; paper A.2).
    """

    def __init__(self, spec: dict, model_cache: str, mode: str, max_new_tokens: int | None, seed: int,
                 calibrated: bool = True) -> None:
        model_spec = ModelSpec.model_validate(spec)
        self.mode, self.seed = mode, seed
        self.judge = JudgeModel(model_spec, model_cache, default_mode=mode, max_new_tokens=max_new_tokens,
                                temperature=model_spec.generation.temperature, num_samples=1,
                                calibrated=calibrated)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        missing = [c for c in REQUEST_COLUMNS if c not in batch]
        if missing:
            raise KeyError(f"evaluation batch is missing column(s) {missing}")
        runs = [int(r) for r in batch["run"]]
        answers: list[dict[str, Any] | None] = [None] * len(runs)
        for run in sorted(set(runs)):
            rows = [i for i, r in enumerate(runs) if r == run]
            sub = {c: [_cell(batch[c][i]) for i in rows] for c in REQUEST_COLUMNS}
            sub["mode"] = [self.mode] * len(rows)
            self.judge.seed = sample_seed(self.seed, "run", run, "all")
            for j, answer in enumerate(self._judge(sub)):
                answers[rows[j]] = answer
        if any(a is None for a in answers):
            raise RuntimeError("the judge returned fewer rows than it was given")
        return {
            "key": list(batch["key"]),
            "verdict": [a["verdict"] for a in answers],
            "p_a": [np.nan if a["p_a"] is None else a["p_a"] for a in answers],
            "status": [a["status"] for a in answers],
            "text": [a["text"] for a in answers],
        }


    def _judge(self, sub: dict[str, list]) -> list[dict[str, Any]]:
        """Answers for `sub`; if the judge raises on the batch, rows are retried one at a time so one
        bad row is recorded as a `judge_exception` (scored wrong) instead of failing the evaluation."""
        try:
            out = self.judge(sub)
        except Exception as exc:  # noqa: BLE001  (any failure of one row must not sink the others)
            n = len(sub["question"])
            if n == 1:
                log.warning("judge failed on one row: %s", exc)
                return [{"verdict": None, "p_a": None, "status": STATUS_EXCEPTION,
                         "text": f"{type(exc).__name__}: {exc}"[:500]}]
            return [a for i in range(n) for a in self._judge({c: v[i:i + 1] for c, v in sub.items()})]
        return [judge_answer(self.mode, None if np.isnan(p) else float(p), w, t, st)
                for p, w, t, st in zip(out["p_a"], out["winner"], out["judgement"], out["judge_status"])]


def _cell(value: Any) -> Any:
    """Ray Data hands an all-null column over as a float array of NaN: make those cells None again."""
    if isinstance(value, (float, np.floating)) and np.isnan(value):
        return None
    return value


def ray_judge(config: CarevlConfig, judge: str, mode: str, requests: list[dict[str, Any]],
              calibrated: bool = True) -> Iterator[list[dict[str, Any]]]:
    """Judge `requests` in a Ray Data actor pool sized by the judge's `resources`; yields answer lists.
    `calibrated=False`: raw p_a (the model folder's calibration.json not applied)."""
    spec = judge_spec(config, judge, backbone=config.evaluation.judge_model)
    if spec.backend != "transformers":
        raise ValueError(f"in-process evaluation runs the transformers backend; '{judge}' uses "
                         f"'{spec.backend}' (serve it and pass the service URL as --judge)")
    model_cache = config.paths.model_cache_dir()
    check_judge_placement(config, spec, "evaluate")  # fail in seconds when the judge fits no node
    resolve_model_path(spec, model_cache)  # build a tiny model once here, not in every actor at once
    res = spec.resources
    ds = ray.data.from_items([{c: r[c] for c in REQUEST_COLUMNS} for r in requests])
    ds = ds.map_batches(
        EvalJudgeActor,
        fn_constructor_kwargs={"spec": spec.model_dump(mode="json"), "model_cache": str(model_cache),
                               "mode": mode, "max_new_tokens": config.evaluation.max_new_tokens,
                               "seed": config.evaluation.seed, "calibrated": calibrated},
        **pool_args(res, spec.backend, batch_format="numpy"),
    )
    for batch in ds.iter_batches(batch_size=res.batch_size, batch_format="pyarrow"):
        yield [
            {"key": row["key"], "verdict": row["verdict"] if row["verdict"] in ("A", "B") else None,
             "p_a": None if row["p_a"] is None or np.isnan(row["p_a"]) else float(row["p_a"]),
             "status": row["status"], "text": row["text"]}
            for row in batch.to_pylist()
        ]


def model_label(judge: str) -> str:
    """A short printable name of the judge for reports."""
    return judge if "://" in judge or judge.startswith("tiny:") else Path(judge).name or judge


def judge_fingerprint(spec: ModelSpec, model_cache: str | Path, calibrated: bool = True) -> dict[str, Any]:
    """What identifies the judge's outputs for a run ledger: its weights' files and the calibration
    temperature it applies (calibration.json itself is left out of the file digest, so fitting a new
    temperature changes one readable value, and a raw run is not affected by it at all)."""
    folder = Path(resolve_model_path(spec, Path(model_cache))[0])
    if not folder.is_dir():
        return {"model": spec.path, "calibration": "none"}
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != CALIBRATION_FILE
                   and not any(part.startswith((".", "_")) for part in p.relative_to(folder).parts))
    digests = {str(p.relative_to(folder)): ledger.input_fingerprint(str(p))["digest"] for p in files}
    temperature = load_calibration(folder).temperature if calibrated else "raw"
    return {"model": str(folder), "files": digests, "calibration": temperature}


def check_judge_placement(config: CarevlConfig, spec: ModelSpec, stage: str) -> None:
    """Fail in seconds when the judge fits no node of the cluster (carevl.planning, as every job checks
    its models before loading them)."""
    res = spec.resources
    gpus = float(res.tensor_parallel_size) if res.tensor_parallel_size > 1 else res.num_gpus
    nodes = node_types(config)
    need = place(Need(stage, "judge", spec.path, spec, gpus=gpus, cpus=res.num_cpus, tp=res.tensor_parallel_size),
                 nodes, config)
    errors = placement_errors([need], nodes, config)
    if errors:
        raise PlacementError("placement check failed:\n  " + "\n  ".join(errors))
