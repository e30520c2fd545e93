"""Model loading: path resolution for tiny roles, local folders and hub ids; Auto-class loaders."""
from __future__ import annotations

import pytest
import torch

from carevl.config import ModelSpec, Resources
from carevl.models.loading import (
    _placement_kwargs,
    choose_device,
    load_causal_lm,
    load_reward_model,
    load_vlm,
    resolve_model_path,
)


def test_tiny_spec_resolves_to_its_built_folder(model_cache):
    path, kwargs = resolve_model_path(ModelSpec(path="tiny:rm_llama", kind="reward", dtype="float32"), model_cache)
    assert path == str(model_cache / "rm_llama")
    assert kwargs == {"dtype": torch.float32}


def test_an_unbuilt_tiny_role_names_the_command_that_builds_it(tmp_path):
    (tmp_path / "rm_qwen2").mkdir()  # an interrupted build: a folder without the marker written last
    with pytest.raises(FileNotFoundError, match=r"prepare_models --roles rm_qwen2"):
        resolve_model_path(ModelSpec(path="tiny:rm_qwen2", kind="reward"), tmp_path)


def test_hub_id_passes_revision_gguf_and_remote_code(tmp_path):
    spec = ModelSpec(path="org/some-model", kind="causal", revision="abc123", gguf_file="m.Q4.gguf",
                     dtype="bfloat16", trust_remote_code=True)
    path, kwargs = resolve_model_path(spec, tmp_path)
    assert path == "org/some-model"
    assert kwargs == {"dtype": torch.bfloat16, "revision": "abc123", "gguf_file": "m.Q4.gguf",
                      "trust_remote_code": True}


def test_local_folder_is_used_as_is(model_cache):
    folder = model_cache / "scorer"
    path, kwargs = resolve_model_path(ModelSpec(path=str(folder), kind="causal"), model_cache)
    assert path == str(folder) and kwargs["dtype"] == "auto"


@pytest.mark.parametrize("spec, match", [
    (ModelSpec(path="x/y", kind="causal", dtype="float8"), "dtype"),
    (ModelSpec(path="gpt-4o", kind="vlm", backend="openai", endpoint="http://localhost:1"), "openai"),
])
def test_bad_specs_fail_clearly(spec, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        resolve_model_path(spec, tmp_path)


def test_device_comes_from_argument_or_resources():
    cpu_spec = ModelSpec(path="x/y", kind="causal")
    assert choose_device(cpu_spec) == "cpu"
    assert choose_device(cpu_spec, "meta") == "meta"
    gpu_spec = ModelSpec(path="x/y", kind="causal", resources=Resources(num_gpus=1))
    assert choose_device(gpu_spec) == ("cuda" if torch.cuda.is_available() else "cpu")
    wide_spec = ModelSpec(path="x/y", kind="causal", resources=Resources(num_gpus=4))
    assert _placement_kwargs(wide_spec, None) == ({"device_map": "auto"} if torch.cuda.is_available() else {})
    assert _placement_kwargs(wide_spec, "cpu") == {} and _placement_kwargs(gpu_spec, None) == {}


def test_loaders_check_the_model_kind(model_cache):
    with pytest.raises(ValueError, match="kind"):
        load_vlm(ModelSpec(path="tiny:rm_llama", kind="reward"), model_cache)


def test_loaders_return_eval_models_with_left_padding_for_generation(model_cache, tiny_config):
    model, processor = load_vlm(tiny_config.models["vlm"], model_cache)
    assert not model.training and processor.tokenizer.padding_side == "left"
    assert processor.tokenizer.model_max_length == tiny_config.models["vlm"].max_length
    model, tokenizer = load_causal_lm(tiny_config.models["scorer"], model_cache)
    assert not model.training and tokenizer.padding_side == "left" and model.dtype == torch.float32
    model, tokenizer = load_reward_model(tiny_config.models["rm_gemma2"], model_cache)
    assert not model.training and model.config.pad_token_id == tokenizer.pad_token_id
