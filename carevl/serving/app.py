"""The Ray Serve application: one deployment that owns a `JudgeModel` and serves the HTTP API.

`build_app` is the builder named in serve_configs/*.yaml (`import_path: carevl.serving.app:build_app`).
"""
# No `from __future__ import annotations` here: Ray Serve reads the builder's parameter annotation as
# a class to validate `args` into `JudgeAppArgs`.
from typing import Any

from ray import serve
from ray.serve import Application
from ray.serve.config import AutoscalingConfig

from carevl.config import ModelSpec
from carevl.config.stages import ServeConfig
from carevl.judge.model import JudgeModel
from carevl.kit.tiny import build_referenced
from carevl.serving.builder import JudgeAppArgs, deployment_options, resolve_model_spec, resolve_settings
from carevl.serving.engine import JudgeEngine, PairwiseJudging
from carevl.serving.http import create_app
from carevl.serving.vllm_engine import VLLMJudgeEngine


@serve.deployment
@serve.ingress()
class JudgeService:
    """One replica: the judge on its backend (`serve.backend`) and the FastAPI app built around it."""

    def __init__(self, settings: dict[str, Any], model_spec: dict[str, Any], model_cache: str) -> None:
        self.settings = ServeConfig.model_validate(settings)
        self.api_token = self.settings.api_token()  # fail at startup, never serve open by mistake
        self.engine = make_engine(ModelSpec.model_validate(model_spec), model_cache, self.settings)

    def __serve_build_asgi_app__(self):
        return create_app(self.engine, self.api_token)

    async def check_health(self) -> None:
        """Ray Serve health probe: the model is loaded (transformers) or the engine answers (vLLM)."""
        await self.engine.check_health()


def make_engine(spec: ModelSpec, model_cache: str, settings: ServeConfig) -> PairwiseJudging:
    """The judge backend the settings name: transformers behind @serve.batch, or a vLLM engine."""
    if settings.backend == "vllm":
        return VLLMJudgeEngine(spec, model_cache, settings)
    judge = JudgeModel(spec, model_cache, batch_size=settings.max_batch_size,
                       max_new_tokens=settings.max_new_tokens, default_mode=settings.default_mode,
                       image_limits=settings.limits.image_limits(), allow_remote_images=settings.allow_remote_images)
    return JudgeEngine(judge, settings)


def build_app(args: JudgeAppArgs) -> Application:
    """Builder for `serve run` / `serve deploy`: typed args -> the bound judge application."""
    settings, config = resolve_settings(args)
    if settings.autoscaling_config is not None:
        AutoscalingConfig(**settings.autoscaling_config)  # refuse a bad autoscaling block before deploying
    spec = resolve_model_spec(settings, config)
    build_referenced(config.paths.model_cache_dir(), [spec.path])  # a `tiny:<role>` judge: built once
    return JudgeService.options(**deployment_options(settings, spec)).bind(
        settings.model_dump(mode="json"), spec.model_dump(mode="json"), config.paths.model_cache)
