"""Memory a model needs, in bytes: pure arithmetic over a ModelShape and the configured limits.

Inference (vLLM or transformers):
    weights      params x dtype bytes
    KV cache     2 x layers x kv_heads x head_dim x dtype bytes per token, for batch x max_length tokens
    activations  one layer's transient tensors for the tokens in one forward pass: (4 x hidden +
                 2 x intermediate) x dtype bytes per token, plus fp32 logits of the last positions

vLLM pages its KV cache and admits only the sequences that fit, so a vLLM model *runs* once its weights
and one max-length sequence fit; the full batch at max length is what it needs to run at the configured
batch. A transformers model holds every row of its batch at once (scorers run without a KV cache).

Training (Ray Train + TRL), `sharding: none` (data parallel: each worker holds the whole model):
    weights of every parameter, gradients and two AdamW moments (kept in the parameters' dtype) of the
    trainable ones, a frozen reference copy for DPO without LoRA, and activations of one micro-batch
    (with gradient checkpointing, the input of every layer plus one layer recomputed), plus the fp32
    logits the loss reads.

Training, `sharding: fsdp` (FSDP2, `sharded_training_footprint`): the same states divided by the world
size, plus what is gathered whole while in use (a few decoder layers, the output head, and DPO's
reference for its forward) and the same activations.
"""
from __future__ import annotations

from dataclasses import dataclass

from carevl.planning.shapes import ModelShape

FP32 = 4


@dataclass(frozen=True)
class Footprint:
    """Bytes one replica (or one training worker) needs; `minimum` is what it needs to run at all."""

    weights: float
    cache: float        # KV cache of the full batch (inference) or optimizer state + grads (training)
    activations: float
    minimum: float      # weights + the smallest working set (one sequence for a paged vLLM cache)

    @property
    def total(self) -> float:
        return self.weights + self.cache + self.activations


def activation_bytes(shape: ModelShape, tokens: int, dtype_bytes: int) -> float:
    """Transient tensors of one decoder layer over `tokens` tokens."""
    return float(tokens) * (4 * shape.hidden + 2 * shape.intermediate) * dtype_bytes


def inference_footprint(shape: ModelShape, dtype_bytes: int, batch: int, max_length: int,
                        paged_kv: bool, kv_cache: bool = True) -> Footprint:
    """A serving replica: weights, KV cache for `batch` sequences of `max_length`, activations.

    `paged_kv`: vLLM (runs with a single sequence's cache). `kv_cache` False: a scorer forward without
    any cache (transformers reward models), whose activations cover the whole batch.
    """
    weights = float(shape.params) * dtype_bytes
    per_sequence = float(shape.kv_bytes_per_token(dtype_bytes)) * max_length
    logits = float(batch) * shape.vocab * FP32
    if not kv_cache:
        act = activation_bytes(shape, batch * max_length, dtype_bytes)
        return Footprint(weights, 0.0, act, weights + act)
    # vLLM prefills in chunks of at most one sequence's length; transformers runs the whole batch.
    act = activation_bytes(shape, max_length if paged_kv else batch * max_length, dtype_bytes) + logits
    cache = per_sequence * batch
    minimum = weights + (per_sequence + activation_bytes(shape, max_length, dtype_bytes) if paged_kv
                         else cache + act)
    return Footprint(weights, cache, act, minimum)


def training_footprint(shape: ModelShape, dtype_bytes: int, micro_batch: int, max_length: int,
                       trainable: int, reference_copy: bool, gradient_checkpointing: bool) -> Footprint:
    """One data-parallel training worker (the whole model on one GPU)."""
    weights = float(shape.params) * dtype_bytes * (2 if reference_copy else 1)
    states = float(trainable) * dtype_bytes * 3          # gradient + AdamW first and second moments
    tokens = micro_batch * max_length
    layer = activation_bytes(shape, tokens, dtype_bytes)
    kept = (shape.layers * tokens * shape.hidden * dtype_bytes + layer) if gradient_checkpointing \
        else shape.layers * layer
    act = kept + float(tokens) * shape.vocab * FP32
    total = weights + states + act
    return Footprint(weights, states, act, total)


def decoder_layer_params(shape: ModelShape) -> int:
    """Weights of one decoder layer: Q, K, V, O projections and the gated MLP (norms and biases left out)."""
    q, kv = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    return shape.hidden * (2 * q + 2 * kv) + 3 * shape.hidden * shape.intermediate


def sharded_training_footprint(shape: ModelShape, dtype_bytes: int, master_bytes: int, micro_batch: int,
                               max_length: int, trainable: int, reference_model: bool,
                               gradient_checkpointing: bool, world_size: int) -> Footprint:
    """One of `world_size` FSDP2 training workers (ZeRO-3: parameters, gradients, optimizer state sharded).

    Sharded, so divided by `world_size`:
        frozen weights              (params - trainable) x dtype_bytes
        trainable master weights    trainable x master_bytes  (accelerate keeps them in fp32 under bf16 mixed
                                    precision: master_bytes 4; else the parameters' own dtype)
        gradients + AdamW moments   trainable x master_bytes x 3
        DPO reference (no LoRA)     params x dtype_bytes
    Gathered whole while in use, not divided:
        2 decoder layers (the one computing and the one prefetched) x dtype_bytes, plus one layer's
        unsharded gradient x master_bytes before its reduce-scatter; the output head (vocab x hidden x
        dtype_bytes: kept gathered from the end of the forward to the start of the backward); and for DPO
        the whole reference (TRL shards it as one unit, gathered for its forward under no_grad, while the
        policy's activations are held).
    Activations as one unsharded worker's (`training_footprint`): each worker runs its own micro-batch.

    Returns Footprint(weights = sharded weights, cache = sharded gradients + moments,
    activations = activations + gathered working set, minimum = total). Paper 4.3.2 trains the 7B judge on
    80 GB GPUs: this is the rule by which `sharding: fsdp` fits it there.
    """
    n = float(world_size)
    frozen = float(shape.params - trainable) * dtype_bytes
    reference = float(shape.params) * dtype_bytes if reference_model else 0.0
    weights = (frozen + float(trainable) * master_bytes + reference) / n
    states = float(trainable) * master_bytes * 3 / n
    layer = float(decoder_layer_params(shape))
    gathered = 2 * layer * dtype_bytes + layer * master_bytes + float(shape.vocab * shape.hidden) * dtype_bytes
    if reference_model:
        gathered += float(shape.params) * dtype_bytes
    unsharded = training_footprint(shape, dtype_bytes, micro_batch, max_length, trainable, False,
                                   gradient_checkpointing)
    act = unsharded.activations + gathered
    total = weights + states + act
    return Footprint(weights, states, act, total)


def trainable_params(shape: ModelShape, freeze_vision: bool, lora_rank: int | None) -> int:
    """Parameters that get gradients: LoRA adapters on every decoder projection, else the whole model
    (without the vision tower when it is frozen; its projector is counted with it, a small share)."""
    if lora_rank:
        h, q, kv, inter = shape.hidden, shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim, shape.intermediate
        per_layer = lora_rank * ((h + q) * 2 + (h + kv) * 2 + (h + inter) * 3)
        return shape.layers * per_layer
    return shape.params - (shape.vision_params if freeze_vision else 0)


def tensor_parallel_needed(total_bytes: float, heads: int, gpu_bytes: float, max_gpus: int) -> int | None:
    """Smallest power-of-two tensor-parallel degree (dividing the attention heads, at most `max_gpus`)
    at which `total_bytes` split evenly fits `gpu_bytes` per GPU; None when none does."""
    tp = 1
    while tp <= max_gpus:
        if heads % tp == 0 and total_bytes / tp <= gpu_bytes:
            return tp
        tp *= 2
    return None
