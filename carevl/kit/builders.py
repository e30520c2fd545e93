"""Recipes for the tiny model roles (see `carevl.kit.tiny` for the roles and the build cache), and
where the SmolLM2 weights they reuse come from.

Every micro model has attention heads of size 32, the smallest vLLM's CPU attention runs. The trained
roles follow `KitRecipe`: `FULL` for the kit every job uses, `QUICK` (a few steps) for tests of the
build mechanics, which need real folders, not competent models.
"""
from __future__ import annotations

import copy
import sys
import zlib
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

from carevl.kit.alignment import AlignmentRecipe, align
from carevl.kit.expert_training import ExpertRecipe, train_expert
from carevl.kit.vocab import train_bpe_tokenizer
from carevl.models import templates
from carevl.models.loading import find_smollm_gguf


def log_progress(message: str) -> None:
    print(f"[tiny-models] {message}", file=sys.stderr, flush=True)


SMOLLM_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
GENERIC_SYSTEM = "You are a helpful assistant."

# Vision tower: 64x64 images cut into 16x16 patches -> 16 image tokens (the CLS token is dropped by
# the "default" feature-select strategy, matched by num_additional_image_tokens=1 in the processor).
IMAGE_SIZE, PATCH_SIZE = 64, 16
NUM_IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2

# Per-family chat format: template, special tokens. All micro families share one trained vocabulary.
_MICRO_FAMILIES = {
    "llama": dict(template=templates.llama3_template(), bos="<|begin_of_text|>", eos="<|eot_id|>", pad="<pad>"),
    "qwen2": dict(template=templates.chatml_template(GENERIC_SYSTEM, False), bos=None, eos="<|im_end|>",
                  pad="<|endoftext|>"),
    "gemma2": dict(template=templates.gemma_template(), bos="<bos>", eos="<end_of_turn>", pad="<pad>"),
    "mistral": dict(template=templates.mistral_template(), bos="<s>", eos="</s>", pad="<pad>"),
    "qwen3": dict(template=templates.chatml_template(None, False), bos=None, eos="<|im_end|>", pad="<|endoftext|>"),
    "chatml_vlm": dict(template=templates.chatml_template(GENERIC_SYSTEM, True), bos=None, eos="<|im_end|>",
                       pad="<|endoftext|>"),
}
# Heads of 32 everywhere (vLLM's CPU attention needs head_dim >= 32).
REWARD_DIMS = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                   num_key_value_heads=1, head_dim=32, max_position_embeddings=2048)
VLM_TEXT_DIMS = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
                     num_key_value_heads=2, head_dim=32, max_position_embeddings=2048)
_FAMILY_EXTRA = {"gemma2": dict(query_pre_attn_scalar=32, sliding_window=256)}

# The five experts differ in architecture, seed, data, label noise, caption noise and question mix
# (category weights in `carevl.data.synth.CATEGORIES` order), so that their errors differ.
EXPERT_RECIPES = {
    "rm_llama": ("llama", ExpertRecipe(seed=11, items=900, label_noise=0.05, caption_noise=0.10)),
    "rm_qwen2": ("qwen2", ExpertRecipe(seed=12, items=900, label_noise=0.05, caption_noise=0.05,
                                       category_weights=(0.5, 1.0, 1.0, 1.0), learning_rate=1e-3)),
    "rm_gemma2": ("gemma2", ExpertRecipe(seed=13, label_noise=0.10, caption_noise=0.20,
                                         category_weights=(1.0, 0.5, 1.0, 1.0))),
    "rm_mistral": ("mistral", ExpertRecipe(seed=14, label_noise=0.20, caption_noise=0.10,
                                           category_weights=(1.0, 1.0, 0.5, 1.0))),
    "rm_qwen3": ("qwen3", ExpertRecipe(seed=15, label_noise=0.10, caption_noise=0.15,
                                       category_weights=(1.0, 1.0, 1.0, 0.5))),
}


@dataclass(frozen=True)
class KitRecipe:
    """How much the trained roles learn: `name` is recorded in each folder's marker."""

    name: str
    alignment: AlignmentRecipe = field(default_factory=AlignmentRecipe)
    expert_items: int | None = None       # None: each expert recipe's own size
    expert_epochs: float | None = None

    def expert(self, role: str) -> tuple[str, ExpertRecipe]:
        family, recipe = EXPERT_RECIPES[role]
        changes = {k: v for k, v in (("items", self.expert_items), ("epochs", self.expert_epochs)) if v is not None}
        return family, replace(recipe, **changes)


FULL = KitRecipe("full")
QUICK = KitRecipe("quick", AlignmentRecipe(vision_steps=3, projector_steps=3, instruction_steps=3),
                  expert_items=8, expert_epochs=1.0)
RECIPES = {r.name: r for r in (FULL, QUICK)}


class Sources:
    """Inputs shared by several roles, each produced at most once per build."""

    def __init__(self) -> None:
        self._smollm: tuple[torch.nn.Module, object] | None = None
        self._bpe = None

    def smollm(self):
        """(LlamaForCausalLM with a clean config, a fresh copy of its tokenizer) from the GGUF.

        The model is a weight source for saving and copying: it is built on the meta device, so its
        non-persistent buffers (rotary frequencies) are not materialised and it cannot run as is.
        """
        if self._smollm is None:
            folder, name = find_smollm_gguf()
            log_progress(f"reading {name}")
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
            gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
            # Re-home the weights in a model whose config carries no GGUF quantization entry, so the
            # saved folder loads with a plain `from_pretrained(folder)`.
            config = _plain_config(gguf_model.config)
            with torch.device("meta"):
                model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
            model.load_state_dict(gguf_model.state_dict(), assign=True)
            model.tie_weights()
            self._smollm = (model.eval(), tokenizer)
        model, tokenizer = self._smollm
        return model, copy.deepcopy(tokenizer)

    def micro_tokenizer(self, family: str) -> PreTrainedTokenizerFast:
        """The locally trained BPE vocabulary dressed in one family's chat format."""
        if self._bpe is None:
            self._bpe = train_bpe_tokenizer()
        fmt = _MICRO_FAMILIES[family]
        return PreTrainedTokenizerFast(
            tokenizer_object=self._bpe, bos_token=fmt["bos"], eos_token=fmt["eos"], pad_token=fmt["pad"],
            chat_template=fmt["template"], model_max_length=2048, padding_side="left",
        )


def _plain_config(config):
    """A copy of a GGUF-loaded config without the quantization entry and loader bookkeeping."""
    data = config.to_dict()
    for key in ("quantization_config", "_name_or_path", "transformers_version", "architectures"):
        data.pop(key, None)
    return AutoConfig.for_model(data.pop("model_type"), **data)


def _smollm_tokenizer(tokenizer, allow_images: bool):
    """SmolLM2's tokenizer with our multimodal-capable chat template and a dedicated pad token."""
    if allow_images:
        tokenizer.add_special_tokens({"additional_special_tokens": [templates.IMAGE_TOKEN]})
    # The GGUF pads with <|im_end|> (the end-of-turn token); a separate pad token keeps padding
    # distinguishable from the turn end the models must learn to emit.
    tokenizer.pad_token = "<|endoftext|>"
    tokenizer.padding_side = "left"
    tokenizer.chat_template = templates.chatml_template(SMOLLM_SYSTEM, allow_images)
    return tokenizer


def _vision_config() -> CLIPVisionConfig:
    return CLIPVisionConfig(
        image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, hidden_size=64, intermediate_size=128,
        num_hidden_layers=2, num_attention_heads=2, projection_dim=64,
    )


def _llava_processor(tokenizer) -> LlavaProcessor:
    # Resize straight to the square input instead of CLIP's shortest-edge resize + centre crop, which
    # would cut off the sides of wide images (and shapes drawn there).
    square = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    image_processor = CLIPImageProcessorPil(size=square, crop_size=square, do_center_crop=False)
    return LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=tokenizer.chat_template, image_token=templates.IMAGE_TOKEN,
    )


def _llava(text_config, tokenizer) -> LlavaForConditionalGeneration:
    config = LlavaConfig(
        vision_config=_vision_config(), text_config=text_config,
        image_token_index=tokenizer.convert_tokens_to_ids(templates.IMAGE_TOKEN),
        image_seq_length=NUM_IMAGE_TOKENS, vision_feature_select_strategy="default", vision_feature_layer=-2,
    )
    return LlavaForConditionalGeneration(config)


def _finish_config(model, tokenizer) -> None:
    """Align the special-token ids in model and generation configs with the tokenizer."""
    for cfg in (model.config, getattr(model.config, "text_config", None), getattr(model, "generation_config", None)):
        if cfg is None:
            continue
        cfg.pad_token_id = tokenizer.pad_token_id
        cfg.eos_token_id = tokenizer.eos_token_id
        cfg.bos_token_id = tokenizer.bos_token_id


def _build_vlm(out: Path, sources: Sources, recipe: KitRecipe) -> dict:
    smollm, tokenizer = sources.smollm()
    tokenizer = _smollm_tokenizer(tokenizer, allow_images=True)
    text_config = copy.deepcopy(smollm.config)
    model = _llava(text_config, tokenizer)
    model.model.language_model.load_state_dict(smollm.model.state_dict())
    # Room for <image>; new rows start at the mean embedding (tied with the output head).
    model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64)
    _finish_config(model, tokenizer)
    model.save_pretrained(out)
    _llava_processor(tokenizer).save_pretrained(out)
    return {}


def micro_llava(sources: Sources, **text_dims) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """A fresh (untrained) micro LLaVA and its processor; `text_dims` override `VLM_TEXT_DIMS`."""
    tokenizer = sources.micro_tokenizer("chatml_vlm")
    text_config = AutoConfig.for_model("llama", vocab_size=len(tokenizer), tie_word_embeddings=True,
                                       **{**VLM_TEXT_DIMS, **text_dims})
    model = _llava(text_config, tokenizer)
    _finish_config(model, tokenizer)
    return model, _llava_processor(tokenizer)


def _build_vlm_micro(out: Path, sources: Sources, recipe: KitRecipe) -> dict:
    """The micro LLaVA, aligned on synthetic scenes (`carevl.kit.alignment`): the kit's caption model
    and the judge backbone before any judge training."""
    model, processor = micro_llava(sources)
    log = align(model, processor, replace(recipe.alignment, image_size=IMAGE_SIZE), progress=log_progress)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return {"alignment": log}


def _build_micro_reward(role: str, out: Path, sources: Sources, recipe: KitRecipe) -> dict:
    """One expert: a micro sequence classifier of its family, trained with TRL's RewardTrainer."""
    family, expert = recipe.expert(role)
    tokenizer = sources.micro_tokenizer(family)
    config = AutoConfig.for_model(family, vocab_size=len(tokenizer), num_labels=1,
                                  pad_token_id=tokenizer.pad_token_id, **REWARD_DIMS, **_FAMILY_EXTRA.get(family, {}))
    torch.manual_seed(expert.seed)
    model = AutoModelForSequenceClassification.from_config(config)
    _finish_config(model, tokenizer)
    log = train_expert(model, tokenizer, expert)
    log_progress(f"{role}: {log}")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {"training": log}


def _build_scorer(out: Path, sources: Sources, recipe: KitRecipe) -> dict:
    smollm, tokenizer = sources.smollm()
    tokenizer = _smollm_tokenizer(tokenizer, allow_images=False)
    _finish_config(smollm, tokenizer)
    smollm.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {}


_BUILDERS = {"vlm": _build_vlm, "vlm_micro": _build_vlm_micro, "scorer": _build_scorer,
             **{role: partial(_build_micro_reward, role) for role in EXPERT_RECIPES}}
ROLE_NAMES = tuple(_BUILDERS)


def role_design(role: str) -> str | None:
    """What a finished build of `role` must have been built from beyond the kit version: an expert's
    recipe (editing one rebuilds that expert only); None for the other roles."""
    return f"{zlib.crc32(repr(EXPERT_RECIPES[role]).encode()):08x}" if role in EXPERT_RECIPES else None


def build_role(role: str, out: Path, sources: Sources, recipe: KitRecipe = FULL) -> dict:
    """Write `role` into the (empty) folder `out`; returns what its training logged. Random weights are
    seeded by the role name, so builds repeat."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(zlib.crc32(role.encode()))
        return _BUILDERS[role](out, sources, recipe)
