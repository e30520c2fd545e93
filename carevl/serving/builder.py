"""Typed arguments of the judge application and their resolution against the project config.

`serve_configs/*.yaml` pass `args` to `carevl.serving.app:build_app`; Ray Serve validates them into
`JudgeAppArgs` (unknown keys are refused). Values not given in `args` come from the `serve` section
of the CAREVL config named by `config` (default configs/tiny.yaml), so one preset drives both the
batch jobs and the service.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from carevl.config import REPO_ROOT, CarevlConfig, ModelSpec, load_config
from carevl.config.stages import ServeConfig
from carevl.models.specs import judge_spec

DEPLOYMENT_NAME = "JudgeService"


class JudgeAppArgs(ServeConfig):
    """Builder args: any `ServeConfig` field, plus which CAREVL config supplies models and defaults."""

    config: str | None = Field(None, description="CAREVL config YAML (default configs/tiny.yaml)")
    overrides: list[str] = Field(default_factory=list, description="`a.b=c` overrides of that config")


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _config_path(path: str | None) -> Path | None:
    """A relative config path is read from the working directory, else from the repository root
    (so `configs/tiny.yaml` works wherever `serve run` / `serve deploy` builds the app)."""
    if path is None or Path(path).is_absolute() or Path(path).exists():
        return Path(path) if path else None
    return REPO_ROOT / path


def resolve_settings(args: JudgeAppArgs) -> tuple[ServeConfig, CarevlConfig]:
    """The effective service settings: the config's `serve` section updated by the args given."""
    config = load_config(_config_path(args.config), args.overrides)
    given = args.model_dump(exclude_unset=True, exclude={"config", "overrides"})
    settings = ServeConfig.model_validate(_deep_merge(config.serve.model_dump(), given))
    return settings, config


def resolve_model_spec(settings: ServeConfig, config: CarevlConfig) -> ModelSpec:
    """The judge's ModelSpec (`carevl.models.specs.judge_spec`): a `models` entry by key; else a
    checkpoint path (or `tiny:<role>`) that inherits dtype, max_length, generation and resources from
    the judge backbone it was trained from (`sft.judge_model`).

    The service runs the model on `serve.backend`, whatever backend the entry names. With
    transformers, rows per forward pass follow `max_batch_size`, so one dynamic batch is one model call.
    """
    spec = judge_spec(config, settings.model, text_only_ok=True)
    if spec.backend == "openai":
        raise ValueError(f"serve.model '{settings.model}' is an endpoint (backend openai); the judge needs "
                         "local weights")
    spec.backend = settings.backend
    spec.resources.batch_size = settings.max_batch_size
    if settings.num_cpus is not None:
        spec.resources.num_cpus = settings.num_cpus
    if settings.num_gpus is not None:
        spec.resources.num_gpus = settings.num_gpus
    return spec


def deployment_options(settings: ServeConfig, spec: ModelSpec) -> dict[str, Any]:
    """Ray Serve deployment options; resources come from the model spec, scaling from the settings."""
    options: dict[str, Any] = {
        "name": DEPLOYMENT_NAME,
        "max_ongoing_requests": settings.max_ongoing_requests,
        "max_queued_requests": settings.max_queued_requests,
        "ray_actor_options": {"num_cpus": spec.resources.num_cpus, "num_gpus": spec.resources.num_gpus},
    }
    if spec.resources.accelerator_type:
        options["ray_actor_options"]["accelerator_type"] = spec.resources.accelerator_type
    if settings.autoscaling_config is not None:
        options["autoscaling_config"] = settings.autoscaling_config
    else:
        options["num_replicas"] = settings.num_replicas
    return options
