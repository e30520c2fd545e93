"""The one rule for naming a judge model: a key in `models`, a checkpoint folder, or `tiny:<role>`.

Training (the SFT/DPO starting point), refinement (the critic), evaluation (an in-process judge) and
serving all resolve a judge through `judge_spec`, so a name means the same model everywhere.
"""
from __future__ import annotations

from pathlib import Path

from carevl.config import CarevlConfig, ModelSpec


def judge_spec(config: CarevlConfig, judge: str | Path | None = None, backbone: str | None = None,
               text_only_ok: bool = False) -> ModelSpec:
    """The judge's ModelSpec (a copy: callers may adjust it).

    - `judge` None: the backbone entry itself;
    - `judge` a key in `models`: that entry;
    - anything else (a trained checkpoint folder, `tiny:<role>`): the backbone's settings (dtype,
      max_length, generation, backend, resources) with `judge` as the path; the backbone's GGUF file
      and revision do not carry over, since a trained folder holds plain weights of one version.

    `backbone` is a key in `models` (default `sft.judge_model`, the model SFT and DPO train). Raises
    ValueError when the backbone is undefined or when the model is not a vision-language model (a
    causal LM is accepted as a text-only judge where `text_only_ok`: the judge service).
    """
    backbone = backbone or config.sft.judge_model
    if judge is not None and str(judge) in config.models:
        name, spec = str(judge), config.models[str(judge)].model_copy(deep=True)
    elif backbone not in config.models:
        raise ValueError(f"judge backbone '{backbone}' is not defined under 'models'")
    else:
        name, spec = backbone, config.models[backbone].model_copy(deep=True)
        if judge is not None:
            spec = spec.model_copy(update={"path": str(judge), "gguf_file": None, "revision": None})
    if spec.kind != "vlm" and not (text_only_ok and spec.kind == "causal"):
        raise ValueError(f"judge model '{name}' has kind '{spec.kind}'; a judge is a vision-language model (vlm)")
    return spec
