"""Saved judge checkpoints in the weight names vLLM's loader expects, still loadable by transformers.

transformers 5.x saves a LLaVA's CLIP vision tower without the `vision_model.` level
(`vision_tower.embeddings.*`); vLLM's LLaVA builds the tower as a `CLIPVisionModel` and accepts only
`vision_tower.vision_model.*` (the names of the original LLaVA checkpoints), failing with "no module
or parameter named 'vision_tower.embeddings'". transformers reads both spellings, so training writes
the one both can load (`rewrite_for_vllm`, called after every `save_pretrained` of a trained judge).

Only architectures whose mismatch was seen are listed; every other folder is left as transformers
wrote it.
"""
from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file

# model_type -> (prefix transformers writes, prefix vLLM's loader reads)
PREFIX_RENAMES: dict[str, tuple[tuple[str, str], ...]] = {
    "llava": (("vision_tower.", "vision_tower.vision_model."),),
}
INDEX_FILE = "model.safetensors.index.json"


def vllm_name(name: str, model_type: str) -> str:
    """The weight name vLLM's loader for `model_type` reads for a name transformers wrote."""
    for old, new in PREFIX_RENAMES.get(model_type, ()):
        if name.startswith(old) and not name.startswith(new):
            return new + name[len(old):]
    return name


def rewrite_for_vllm(folder: str | Path) -> int:
    """Rename the weights of the safetensors checkpoint in `folder` in place; returns how many changed.

    Idempotent: names already in vLLM's spelling stay as they are.
    """
    folder = Path(folder)
    if not (folder / "config.json").is_file():  # a LoRA adapter saved alone: no base weights to rename
        return 0
    model_type = json.loads((folder / "config.json").read_text()).get("model_type", "")
    if model_type not in PREFIX_RENAMES:
        return 0
    changed = 0
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        renamed = {vllm_name(name, model_type): tensor for name, tensor in tensors.items()}
        moved = sum(vllm_name(name, model_type) != name for name in tensors)
        if moved:
            tmp = path.with_name(f".{path.name}.tmp")
            save_file(renamed, str(tmp), metadata={"format": "pt", **metadata})
            tmp.replace(path)
            changed += moved
    index = folder / INDEX_FILE
    if changed and index.is_file():
        data = json.loads(index.read_text())
        data["weight_map"] = {vllm_name(k, model_type): v for k, v in data["weight_map"].items()}
        index.write_text(json.dumps(data, indent=2))
    return changed
