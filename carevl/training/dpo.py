"""DPO of the SFT judge on refined low-confidence pairs (paper 3.6), on Ray Train with TRL's DPOTrainer.

Each DPO row written by the refinement job becomes one preference example: the judge prompt for the
pair (in the pair's own A/B order, the order the critiques were sampled in), the chosen critique and
the rejected critique. With `dpo.both_orders` it becomes two: the second shows the answers swapped,
with both critiques re-told for that order (`judge_format.swap_judgement`), so the preference is taught
the same way whichever answer comes first. The policy starts from the SFT model and the reference is
that same model, frozen (paper 3.6); the training path is the one shared with SFT in
`carevl.training.run`.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from trl import DPOConfig, DPOTrainer

from carevl.config import CarevlConfig
from carevl.data import io as dio
from carevl.judge_format import judge_messages, swap_judgement
from carevl.planning import check_placement
from carevl.training.examples import DPO_FEATURES
from carevl.training.run import Recipe, run_training

NO_CRITIQUE = "empty_critique"
SAME_TEXT = "chosen_equals_rejected"


def _assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]


def _example(row: dict[str, Any], chosen: str, rejected: str, swapped: bool) -> dict[str, Any]:
    first, second = row["response_a"], row["response_b"]
    if swapped:
        first, second = second, first
        chosen, rejected = swap_judgement(chosen), swap_judgement(rejected)
    return {"pair_id": row["pair_id"], "swapped": swapped,
            "prompt": judge_messages(row["question"], first, second, with_image=True),
            "chosen": _assistant(chosen), "rejected": _assistant(rejected)}


def dpo_example(row: dict[str, Any], both_orders: bool = False):
    """(example, skip_reason) for one refinement DPO row (image attached later); with `both_orders`, a
    list of two examples, the second in the swapped answer order."""
    chosen, rejected = (row.get("chosen") or "").strip(), (row.get("rejected") or "").strip()
    if not chosen or not rejected:
        return None, NO_CRITIQUE
    if chosen == rejected:
        return None, SAME_TEXT  # identical texts carry no preference signal
    if both_orders:
        return [_example(row, chosen, rejected, False), _example(row, chosen, rejected, True)], None
    return _example(row, chosen, rejected, False), None


def dpo_recipe(config: CarevlConfig) -> Recipe:
    build = partial(dpo_example, both_orders=config.dpo.both_orders)
    return Recipe("dpo", DPOConfig, DPOTrainer, build, DPO_FEATURES, frozen_reference=True)


def run_dpo(config: CarevlConfig, input_uri: str, sft_model: str, output: str) -> dict[str, Any]:
    """Train the SFT judge at `sft_model` with DPO on `input_uri` (refinement rows) into `output`."""
    check_placement(config, "dpo")  # an impossible request fails before any input is read
    model_dir = Path(sft_model).expanduser().resolve()
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"--model {sft_model}: no trained model there (config.json missing)")
    # The refinement job's output folder holds the rows under dpo/ (next to critiques/).
    rows_uri = dio.join(input_uri, "dpo") if Path(input_uri, "dpo").is_dir() else input_uri
    return run_training(config, dpo_recipe(config), rows_uri, output, start_model=str(model_dir),
                        summary_extra={"input": input_uri, "base_model": str(model_dir)})
