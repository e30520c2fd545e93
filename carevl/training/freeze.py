"""Freezing the vision encoder of an LVLM during SFT and DPO (paper 4.3.2)."""
from __future__ import annotations

from torch import nn


def vision_encoder(model: nn.Module) -> nn.Module:
    """The image encoder of a vision-language model: `vision_tower` (LLaVA, LLaVA-OneVision),
    `visual` (Qwen2-VL) or `vision_model` (Mllama), found through transformers' own
    `get_encoder(modality="image")` lookup, which also looks inside the wrapped base model
    (`model.model.vision_tower` in transformers 5) and through a PEFT wrapper.

    Raises ValueError when the model has no separate image encoder.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    getter = getattr(base, "get_encoder", None)
    if getter is None:
        raise ValueError(f"{type(base).__name__} has no get_encoder(); is it a transformers model?")
    encoder = getter(modality="image")
    if encoder is base or encoder is getattr(base, "base_model", None):
        raise ValueError(f"{type(base).__name__} has no separate vision encoder to freeze")
    return encoder


def freeze_vision(model: nn.Module) -> int:
    """Stop gradients through the vision encoder; returns how many parameters were frozen.

    The multimodal projector and the language model stay trainable (paper 4.3.2 freezes only the
    vision encoder).
    """
    frozen = 0
    for param in vision_encoder(model).parameters():
        param.requires_grad_(False)
        frozen += param.numel()
    return frozen


def vision_parameter_names(model: nn.Module) -> set[str]:
    """Fully qualified names (as in `model.named_parameters()`) of the vision encoder's parameters."""
    encoder_ids = {id(p) for p in vision_encoder(model).parameters()}
    return {name for name, p in model.named_parameters() if id(p) in encoder_ids}
