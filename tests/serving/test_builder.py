"""Builder args and serve configs, without starting Ray."""
from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from carevl.serving.builder import JudgeAppArgs, deployment_options, resolve_model_spec, resolve_settings

SERVE_CONFIGS = ["serve_configs/judge_local.yaml", "serve_configs/judge.yaml"]


@pytest.mark.parametrize("name", SERVE_CONFIGS)
def test_serve_configs_are_valid_for_ray_and_for_the_builder(repo_root, name):
    from ray.serve.schema import ServeDeploySchema

    tree = yaml.safe_load((repo_root / name).read_text())
    ServeDeploySchema.model_validate(tree)  # what `serve run` / `serve deploy` check
    (app,) = tree["applications"]
    assert app["import_path"] == "carevl.serving.app:build_app"
    settings, config = resolve_settings(JudgeAppArgs.model_validate(app["args"]))
    spec = resolve_model_spec(settings, config)
    assert spec.kind == "vlm" and spec.backend == settings.backend
    assert spec.resources.batch_size == settings.max_batch_size
    options = deployment_options(settings, spec)
    assert options["max_ongoing_requests"] >= settings.max_batch_size


def test_gpu_config_autoscales_on_gpus(repo_root):
    app = yaml.safe_load((repo_root / "serve_configs/judge.yaml").read_text())["applications"][0]
    settings, config = resolve_settings(JudgeAppArgs.model_validate(app["args"]))
    options = deployment_options(settings, resolve_model_spec(settings, config))
    assert options["ray_actor_options"]["num_gpus"] == 1
    assert "num_replicas" not in options and options["autoscaling_config"]["max_replicas"] == 8
    assert settings.api_token_env == "CAREVL_JUDGE_TOKEN"
    assert settings.backend == "vllm"


def test_args_override_the_config_serve_section_field_by_field():
    settings, _ = resolve_settings(JudgeAppArgs.model_validate(
        {"overrides": ["serve.max_batch_size=24", "serve.limits.max_candidates=5"],
         "limits": {"max_batch_items": 3}}))
    assert settings.max_batch_size == 24                     # from the config override
    assert settings.limits.max_candidates == 5               # nested config value kept...
    assert settings.limits.max_batch_items == 3              # ...next to the nested arg
    assert settings.default_mode == "explain"                # tiny.yaml default


def test_unknown_or_invalid_args_are_refused():
    with pytest.raises(ValidationError, match="max_batch"):
        JudgeAppArgs.model_validate({"max_batch": 8})
    with pytest.raises(ValidationError, match="max_batch_size"):
        JudgeAppArgs.model_validate({"max_batch_size": 1})  # a swap-checked pair needs 2 slots
    with pytest.raises(ValidationError, match="either num_replicas or autoscaling_config"):
        JudgeAppArgs.model_validate({"num_replicas": 2, "autoscaling_config": {"max_replicas": 4}})


def test_model_key_of_wrong_kind_is_refused():
    settings, config = resolve_settings(JudgeAppArgs.model_validate({"model": "rm_llama"}))
    with pytest.raises(ValueError, match="kind 'reward'; a judge is a vision-language model"):
        resolve_model_spec(settings, config)


def test_a_checkpoint_path_inherits_the_backbone_settings_and_takes_explicit_resources():
    settings, config = resolve_settings(JudgeAppArgs.model_validate(
        {"model": "/ckpt/judge", "num_gpus": 0.5, "num_cpus": 2, "max_batch_size": 8}))
    spec = resolve_model_spec(settings, config)
    backbone = config.models[config.sft.judge_model]
    assert (spec.path, spec.kind, spec.resources.num_gpus, spec.resources.batch_size) == ("/ckpt/judge", "vlm", 0.5, 8)
    assert (spec.dtype, spec.max_length, spec.generation) == (backbone.dtype, backbone.max_length, backbone.generation)
    assert deployment_options(settings, spec)["ray_actor_options"] == {"num_cpus": 2.0, "num_gpus": 0.5}


def test_paper_checkpoint_is_served_with_transformers_in_bfloat16():
    settings, config = resolve_settings(JudgeAppArgs.model_validate(
        {"config": "configs/paper.yaml", "model": "/ckpt/dpo/model"}))
    spec = resolve_model_spec(settings, config)
    assert (spec.backend, spec.dtype, spec.resources.num_gpus) == ("transformers", "bfloat16", 1)


def test_api_token_comes_from_the_named_variable(monkeypatch):
    settings, _ = resolve_settings(JudgeAppArgs.model_validate({"api_token_env": "CAREVL_T_TOKEN"}))
    monkeypatch.delenv("CAREVL_T_TOKEN", raising=False)
    with pytest.raises(ValueError, match="unset or empty"):
        settings.api_token()
    monkeypatch.setenv("CAREVL_T_TOKEN", " s3cret ")
    assert settings.api_token() == "s3cret"
    assert resolve_settings(JudgeAppArgs())[0].api_token() is None
