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
from carevl.serving.builder import JudgeAppArgs, deployment_options, resolve_model_spec, resolve_settings
from carevl.serving.engine import JudgeEngine
from carevl.serving.http import create_app


@serve.deployment
@serve.ingress()
class JudgeService:
    """One replica: the judge model, its batching engine, and the FastAPI app built around them."""

    def __init__(self, settings: dict[str, Any], model_spec: dict[str, Any], model_cache: str) -> None:
        self.settings = ServeConfig.model_validate(settings)
        self.api_token = self.settings.api_token()  # fail at startup, never serve open by mistake
        spec = ModelSpec.model_validate(model_spec)
        judge = JudgeModel(spec, model_cache, batch_size=self.settings.max_batch_size,
                           max_new_tokens=self.settings.max_new_tokens, default_mode=self.settings.default_mode,
                           image_limits=self.settings.limits.image_limits(),
                           allow_remote_images=self.settings.allow_remote_images)
        self.engine = JudgeEngine(judge, self.settings)

    def __serve_build_asgi_app__(self):
        return create_app(self.engine, self.api_token)

    def check_health(self) -> None:
        """Ray Serve health probe: the model is loaded and on its device."""
        if self.engine.model.generator.model is None:
            raise RuntimeError("judge model is not loaded")


def build_app(args: JudgeAppArgs) -> Application:
    """Builder for `serve run` / `serve deploy`: typed args -> the bound judge application."""
    settings, config = resolve_settings(args)
    if settings.autoscaling_config is not None:
        AutoscalingConfig(**settings.autoscaling_config)  # refuse a bad autoscaling block before deploying
    spec = resolve_model_spec(settings, config)
    return JudgeService.options(**deployment_options(settings, spec)).bind(
        settings.model_dump(mode="json"), spec.model_dump(mode="json"), config.paths.model_cache)
