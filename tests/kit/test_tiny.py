"""The tiny model kit: every role builds, loads through the Auto classes and runs; builds are
idempotent and deterministic; the SmolLM2 roles carry the real GGUF weights; the trained roles are
competent but imperfect on held-out data. Build-mechanics tests use the quick recipe (a few steps)."""
from __future__ import annotations

import hashlib
import json

import pytest
import torch
from PIL import Image
from transformers import (
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoModelForSequenceClassification,
    AutoProcessor,
    AutoTokenizer,
)

from carevl.config import ModelSpec
from carevl.data.synth import CATEGORIES
from carevl.kit import builders, tiny
from carevl.kit.competence import kit_report
from carevl.kit.vocab import SPECIAL_TOKENS, train_bpe_tokenizer
from carevl.models.loading import resolve_model_path

REWARD_ROLES = list(tiny.EXPERT_ROLES)
CONVERSATION = [
    {"role": "system", "content": "Judge the answer."},
    {"role": "user", "content": [{"type": "text", "text": "How many red circles are there?"}]},
]


def _snapshot(folder):
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.iterdir())}


def test_every_role_has_a_finished_folder(model_cache):
    for role in tiny.ROLES:
        folder = model_cache / role
        assert tiny.is_built(folder, role), role
        assert (folder / "config.json").is_file()
        assert json.loads((folder / tiny.MARKER).read_text())["role"] == role


def test_second_build_rewrites_nothing(tmp_path):
    roles = ["vlm_micro", "rm_llama", "rm_gemma2"]
    first = tiny.build_tiny_models(tmp_path, roles, recipe="quick")
    before = {role: _snapshot(folder) for role, folder in first.items()}
    second = tiny.build_tiny_models(tmp_path, roles, recipe="quick")
    assert second == first
    assert {role: _snapshot(folder) for role, folder in second.items()} == before


def test_parallel_groups_balance_the_cost_and_cover_every_role():
    roles = list(tiny.ROLES)
    groups = tiny.plan_groups(roles, 2)
    assert sorted(r for g in groups for r in g) == sorted(roles)
    assert len(groups) == 2
    # The micro LLaVA, the longest build, shares its process with none of the experts.
    assert not set(next(g for g in groups if "vlm_micro" in g)) & set(tiny.EXPERT_ROLES), groups
    loads = [sum(tiny.BUILD_COST[r] for r in g) for g in groups]
    assert max(loads) - min(loads) <= max(tiny.BUILD_COST.values())
    assert tiny.plan_groups(["rm_llama"], 2) == [["rm_llama"]]
    assert tiny.plan_groups(roles, 1) == [roles]


def test_parallel_build_gives_the_serial_folders(tmp_path):
    roles = ["rm_llama", "rm_qwen3"]
    folders = tiny.build_tiny_models_parallel(tmp_path / "p", roles, recipe="quick", processes=2)
    serial = tiny.build_tiny_models(tmp_path / "s", roles, recipe="quick")
    for role in roles:
        assert tiny.is_built(folders[role], role, "quick")
        a = AutoModelForSequenceClassification.from_pretrained(folders[role]).state_dict()
        b = AutoModelForSequenceClassification.from_pretrained(serial[role]).state_dict()
        assert a.keys() == b.keys()
        assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4


def test_the_roles_a_config_names_are_built_before_loading(tmp_path):
    """What every job and the judge service do first: build the `tiny:<role>` models they name (hub
    ids and folders are left alone), after which loading resolves them."""
    built = tiny.build_referenced(tmp_path, ["tiny:rm_qwen2", "org/some-model", "tiny:rm_qwen2"])
    assert list(built) == ["rm_qwen2"]
    path, _ = resolve_model_path(ModelSpec(path="tiny:rm_qwen2", kind="reward"), tmp_path)
    assert path == str(tmp_path / "rm_qwen2") and (tmp_path / "rm_qwen2" / "config.json").is_file()


def test_folder_without_marker_is_rebuilt(tmp_path):
    folder = tiny.build_tiny_models(tmp_path, ["rm_qwen2"], recipe="quick")["rm_qwen2"]
    (folder / tiny.MARKER).unlink()  # as if the build was killed before finishing
    (folder / "model.safetensors").write_bytes(b"truncated")
    tiny.build_tiny_models(tmp_path, ["rm_qwen2"], recipe="quick")
    assert tiny.is_built(folder, "rm_qwen2", "quick") and not tiny.is_built(folder, "rm_qwen2")
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    assert model.config.num_labels == 1


def test_an_edited_expert_recipe_rebuilds_that_expert_only(tmp_path, monkeypatch):
    from dataclasses import replace

    from carevl.kit import builders

    folders = tiny.build_tiny_models(tmp_path, ["rm_qwen2", "rm_gemma2"], recipe="quick")
    family, recipe = builders.EXPERT_RECIPES["rm_qwen2"]
    edited = {**builders.EXPERT_RECIPES, "rm_qwen2": (family, replace(recipe, label_noise=recipe.label_noise + 0.01))}
    monkeypatch.setattr(builders, "EXPERT_RECIPES", edited)
    assert not tiny.is_built(folders["rm_qwen2"], "rm_qwen2", "quick")
    assert tiny.is_built(folders["rm_gemma2"], "rm_gemma2", "quick")


def test_builds_are_deterministic(tmp_path):
    digests = []
    for sub in ("a", "b"):
        folder = tiny.build_tiny_models(tmp_path / sub, ["rm_mistral"], recipe="quick")["rm_mistral"]
        digests.append({name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
                        for name in ("model.safetensors", "tokenizer.json")})
    assert digests[0] == digests[1]


def test_concurrent_builds_of_one_role_agree(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda _: tiny.build_tiny_models(tmp_path, ["rm_llama"], recipe="quick"), range(3)))
    assert all(r == results[0] for r in results)
    assert tiny.is_built(tmp_path / "rm_llama", "rm_llama", "quick")
    assert not list(tmp_path.glob(".*.partial"))


def test_unknown_role_or_recipe_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="rm_nope"):
        tiny.build_tiny_models(tmp_path, ["rm_nope"])
    with pytest.raises(ValueError, match="slow"):
        tiny.build_tiny_models(tmp_path, ["rm_llama"], recipe="slow")


def test_trained_vocabulary_is_small_and_lossless():
    tokenizer = train_bpe_tokenizer()
    assert 2000 <= tokenizer.get_vocab_size() <= 4096
    text = "A purple star at the top right; naïve café, 3½ shapes!"
    assert tokenizer.decode(tokenizer.encode(text).ids) == text
    for token in SPECIAL_TOKENS:
        assert tokenizer.encode(token).ids == [tokenizer.token_to_id(token)]


@pytest.mark.parametrize("role", ["vlm", "vlm_micro"])
def test_vlm_forward_and_generate_with_image(model_cache, role, shape_image):
    folder = model_cache / role
    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder).eval()
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert prompt.count("<image>") == 1 and prompt.endswith("<|im_start|>assistant\n")
    inputs = processor(text=[prompt], images=[shape_image], return_tensors="pt")
    # The processor expands <image> to exactly as many tokens as the vision tower emits features.
    n_image_tokens = int((inputs["input_ids"] == model.config.image_token_id).sum())
    assert n_image_tokens == builders.NUM_IMAGE_TOKENS == model.config.image_seq_length
    with torch.no_grad():
        features = model.get_image_features(pixel_values=inputs["pixel_values"])
        logits = model(**inputs).logits
    pooled = features.pooler_output if hasattr(features, "pooler_output") else features
    assert sum(f.shape[0] for f in pooled) == n_image_tokens
    assert logits.shape[:2] == inputs["input_ids"].shape and torch.isfinite(logits).all()
    out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]


def test_vlm_processor_keeps_the_whole_width_of_wide_images(model_cache):
    processor = AutoProcessor.from_pretrained(model_cache / "vlm_micro")
    image = Image.new("RGB", (200, 50), "black")
    image.paste((255, 0, 0), (0, 0, 30, 50))  # a red strip along the left edge
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Where is red?"}]}],
        add_generation_prompt=True, tokenize=False)
    pixels = processor(text=[prompt], images=[image], return_tensors="pt")["pixel_values"]  # (1, 3, H, W)
    assert pixels.shape[-2:] == (builders.IMAGE_SIZE, builders.IMAGE_SIZE)
    red = pixels[0, 0]
    assert red[:, 0].mean() > 1.0 > -1.0 > red[:, -1].mean()  # left edge red, right edge black


@pytest.mark.parametrize("role", REWARD_ROLES)
def test_reward_model_scores_chat_input(model_cache, role):
    folder = model_cache / role
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    assert model.config.num_labels == 1 and model.config.pad_token_id == tokenizer.pad_token_id
    texts = [tokenizer.apply_chat_template(CONVERSATION + [{"role": "assistant", "content": answer}],
                                           tokenize=False)
             for answer in ("Two.", "There are three red circles and one large blue square in the picture.")]
    assert all("How many red circles" in t and "Judge the answer." in t for t in texts)
    batch = tokenizer(texts, padding=True, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        scores = model(**batch).logits.squeeze(-1)  # (2,)
        single = model(**tokenizer(texts[:1], return_tensors="pt", add_special_tokens=False)).logits.squeeze(-1)
    assert torch.isfinite(scores).all()
    assert abs(float(scores[0] - scores[1])) > 1e-6
    # Padding must not change a row's score (the classifier pools the last real token).
    assert torch.allclose(scores[:1], single, atol=1e-4)


def test_reward_models_span_several_architectures(model_cache):
    classes = {AutoModelForSequenceClassification.from_pretrained(model_cache / r).__class__.__name__
               for r in REWARD_ROLES}
    assert len(classes) >= 3


def test_reward_templates_reject_images(model_cache):
    tokenizer = AutoTokenizer.from_pretrained(model_cache / "rm_gemma2")
    with pytest.raises(Exception, match="image"):
        tokenizer.apply_chat_template([{"role": "user", "content": [{"type": "image"}]}], tokenize=False)


def test_scorer_is_the_real_smollm2(model_cache):
    folder = model_cache / "scorer"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    inputs = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer


def test_smollm_backbones_share_the_gguf_weights(model_cache):
    scorer = AutoModelForCausalLM.from_pretrained(model_cache / "scorer")
    vlm = AutoModelForImageTextToText.from_pretrained(model_cache / "vlm")
    reference = scorer.model.layers[3].mlp.down_proj.weight
    assert torch.equal(vlm.model.language_model.layers[3].mlp.down_proj.weight, reference)
    vocab = scorer.config.vocab_size
    assert torch.equal(vlm.model.language_model.embed_tokens.weight[:vocab], scorer.model.embed_tokens.weight)


def test_every_micro_model_has_heads_of_32(model_cache):
    """vLLM's CPU attention runs head sizes of 32 and more."""
    for role in [*REWARD_ROLES, "vlm_micro"]:
        config = json.loads((model_cache / role / "config.json").read_text())
        for part in (config, config.get("text_config"), config.get("vision_config")):
            if part and "num_attention_heads" in part:   # the LLaVA wrapper itself has no attention
                head = part.get("head_dim") or part["hidden_size"] // part["num_attention_heads"]
                assert head >= 32, (role, part.get("model_type"), head)


def test_trained_roles_are_competent_but_imperfect(model_cache):
    """The issue's bars, on held-out scenes with model-written captions: captions name >= 80% of the
    objects right; each expert is right on 65-90% of pairs; no two experts agree on more than 90%."""
    report = kit_report(model_cache)
    assert report["caption"]["precision"] >= 0.8 and report["caption"]["recall"] >= 0.8, report["caption"]
    experts = report["experts"]
    assert set(experts["accuracy"]) == set(REWARD_ROLES)
    for name, accuracy in experts["accuracy"].items():
        assert 0.65 <= accuracy <= 0.9, (name, accuracy)
    assert max(experts["agreement"].values()) <= 0.9, experts["agreement"]
    # Alignment taught the base to answer questions about the image (an untrained model gets none
    # right; the kit's base answers about 0.7-0.9 of counting questions), and every category is measured.
    base = report["base_judge"]
    assert base["answer_accuracy"]["counting"] >= 0.5, base
    assert set(base["check_accuracy"]) == {"all", *CATEGORIES}, base


def test_trained_markers_record_what_training_did(model_cache):
    aligned = tiny.read_marker(model_cache / "vlm_micro")["alignment"]
    assert aligned["instructions"]["last_loss"] < aligned["instructions"]["first_loss"] / 4
    for role in REWARD_ROLES:
        training = tiny.read_marker(model_cache / role)["training"]
        assert training["pairs"] > 500 and training["steps"] > 0


@pytest.mark.slow
def test_scorer_logits_match_a_fresh_gguf_load(model_cache):
    folder, name = tiny.find_smollm_gguf()
    reference = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    scorer = AutoModelForCausalLM.from_pretrained(model_cache / "scorer").eval()
    ids = torch.tensor([[1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2]])
    with torch.no_grad():
        assert torch.allclose(scorer(ids).logits, reference(ids).logits, atol=1e-4)
