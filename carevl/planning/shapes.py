"""What a model is made of, as far as memory and compute go: layer count, widths, heads, vocabulary and
parameter count, read from the model's own config.

Sources, in order: the config.json of a local folder or of the hub cache (`AutoConfig.from_pretrained`
with local files only, so a machine without the hub fails fast instead of retrying for a minute), then
the committed table `hub_models.yaml` for the paper's hub ids, then the hub itself. A local folder with
safetensors files also gives the exact parameter count (read from the file headers, no weights loaded).
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import yaml
from transformers import AutoConfig

from carevl.config import ModelSpec

TABLE = Path(__file__).with_name("hub_models.yaml")
DTYPE_BYTES = {"float32": 4, "fp32": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2, "half": 2}
HEADS = ("lm", "tied", "score", "score_mlp")


class ShapeUnknown(LookupError):
    """No config could be read for a model (not built yet, not in the table, hub unreachable)."""


@dataclass(frozen=True)
class ModelShape:
    """The decoder's dimensions plus the vision tower's size; all counts are plain integers."""

    name: str
    family: str          # model_type of the text decoder: llama, qwen2, gemma2, mistral, ...
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    head: str            # one of HEADS
    vision_params: int = 0
    exact_params: int | None = None   # counted from the checkpoint when one is at hand
    source: str = ""

    @property
    def params(self) -> int:
        """All parameters: the exact count when known, else the decoder arithmetic plus the vision tower."""
        return self.exact_params if self.exact_params is not None else decoder_params(self) + self.vision_params

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        """Key and value vectors of one token in every layer."""
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes

    def forward_flops_per_token(self, context: int, generate: bool) -> float:
        """Forward FLOPs of one text token attending to `context` tokens: 2 per weight it multiplies
        (the input embedding is a lookup), plus QK^T and AV (2 x 2 x context x attention width per layer),
        plus the vocabulary projection when the model generates (Kaplan et al. 2020, eq. 2.2)."""
        weights = decoder_params(self) - self.embedding_params - _head_params(self)
        attention = 4 * self.layers * context * self.heads * self.head_dim
        logits = 2 * self.hidden * self.vocab if generate else 2 * _head_params(self)
        return 2.0 * weights + attention + logits

    def vision_flops_per_token(self) -> float:
        """Forward FLOPs per image token through the vision tower and projector (2 per weight)."""
        return 2.0 * self.vision_params


def _head_params(shape: ModelShape) -> int:
    h = shape.hidden
    return {"lm": shape.vocab * h, "tied": 0, "score": h, "score_mlp": h * h + h + h + 1}[shape.head]


def decoder_params(shape: ModelShape) -> int:
    """Parameters of a gated-MLP decoder (Llama, Qwen2, Gemma 2, Mistral) and its head.

    Per layer: Q and O projections (hidden x heads*head_dim each), K and V (hidden x kv_heads*head_dim
    each; Qwen2 adds biases to Q, K and V), a gated MLP (3 x hidden x intermediate) and its RMSNorm
    weights (2 per layer; Gemma 2 has 4; Qwen3 adds a per-head RMSNorm on Q and on K, head_dim each).
    Plus the embedding, the final norm and the head.
    """
    h, q, kv = shape.hidden, shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    attention = 2 * h * q + 2 * h * kv + (q + 2 * kv if shape.family == "qwen2" else 0)
    norms = (4 if shape.family == "gemma2" else 2) * h + (2 * shape.head_dim if shape.family == "qwen3" else 0)
    per_layer = attention + 3 * h * shape.intermediate + norms
    return shape.layers * per_layer + shape.embedding_params + h + _head_params(shape)


def dtype_bytes(spec: ModelSpec, default: str = "bfloat16") -> int:
    """Bytes per weight of a spec's dtype (`auto`: the checkpoint's own, assumed bf16 for hub models)."""
    name = spec.dtype if spec.dtype != "auto" else default
    if name not in DTYPE_BYTES:
        raise ValueError(f"model '{spec.path}': dtype '{spec.dtype}' is not one of {sorted(DTYPE_BYTES)}")
    return DTYPE_BYTES[name]


@lru_cache(maxsize=1)
def hub_table() -> dict[str, dict]:
    return yaml.safe_load(TABLE.read_text())


def shape_from_table(path: str) -> ModelShape:
    row = hub_table().get(path)
    if row is None:
        raise ShapeUnknown(path)
    fields = {k: row[k] for k in ("family", "layers", "hidden", "heads", "kv_heads", "head_dim",
                                  "intermediate", "vocab", "head", "vision_params")}
    return ModelShape(name=path, source=f"{TABLE.name}: {row['source']}", **fields)


def shape_from_config(config, name: str, kind: str, source: str) -> ModelShape:
    """A ModelShape from a transformers config (composite configs: the text part is the decoder)."""
    text = config.get_text_config()
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    if kind == "reward":
        head = "score"
    else:
        tied = getattr(text, "tie_word_embeddings", None)
        head = "tied" if (tied if tied is not None else getattr(config, "tie_word_embeddings", False)) else "lm"
    return ModelShape(
        name=name, family=text.model_type, layers=text.num_hidden_layers, hidden=text.hidden_size,
        heads=heads, kv_heads=getattr(text, "num_key_value_heads", None) or heads, head_dim=head_dim,
        intermediate=text.intermediate_size, vocab=text.vocab_size, head=head, source=source)


def safetensors_params(folder: Path) -> int | None:
    """Exact parameter count of a local checkpoint from its safetensors headers (no weights read)."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for file in files:
        with open(file, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        for key, entry in header.items():
            if key != "__metadata__":
                count = 1
                for dim in entry["shape"]:
                    count *= dim
                total += count
    return total


def local_folder(spec: ModelSpec, model_cache: Path) -> Path | None:
    """The folder a spec loads from when it is on this machine (`tiny:<role>` once built)."""
    if spec.path.startswith("tiny:"):
        folder = Path(model_cache).expanduser() / spec.path[len("tiny:"):]
        return folder if (folder / "config.json").is_file() else None
    folder = Path(spec.path).expanduser()
    return folder if (folder / "config.json").is_file() else None


def model_shape(spec: ModelSpec, model_cache: Path) -> ModelShape:
    """The shape of a (non-endpoint) model spec; raises ShapeUnknown when no source has it."""
    folder = local_folder(spec, model_cache)
    if folder is not None:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=spec.trust_remote_code)
        shape = shape_from_config(config, spec.path, spec.kind, f"{folder}/config.json")
        exact = safetensors_params(folder)
        if exact is not None:
            vision = max(0, exact - decoder_params(shape))
            return replace(shape, exact_params=exact, vision_params=vision)
        return shape
    if spec.path.startswith("tiny:"):
        raise ShapeUnknown(f"{spec.path} is not built yet under {model_cache}")
    try:
        config = AutoConfig.from_pretrained(spec.path, revision=spec.revision, local_files_only=True,
                                            trust_remote_code=spec.trust_remote_code)
    except (OSError, ValueError):
        config = None
    if config is not None:
        return _with_table_vision(shape_from_config(config, spec.path, spec.kind, "hub cache config.json"))
    try:
        return shape_from_table(spec.path)
    except ShapeUnknown:
        pass
    try:
        config = AutoConfig.from_pretrained(spec.path, revision=spec.revision,
                                            trust_remote_code=spec.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ShapeUnknown(f"{spec.path}: no local config, not in {TABLE.name}, hub unreachable ({exc})") from None
    return shape_from_config(config, spec.path, spec.kind, "hub config.json")


def _with_table_vision(shape: ModelShape) -> ModelShape:
    """A config read from the hub cache has no weights to count: take the vision tower from the table."""
    row = hub_table().get(shape.name)
    return replace(shape, vision_params=row["vision_params"]) if row else shape
