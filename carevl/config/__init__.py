"""One typed configuration for every job, loaded from YAML plus `--set a.b=c` overrides.

Unknown keys, wrong types and broken cross-field rules fail at load time with a message that
names the key and the file.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from carevl.config.base import GenerationSpec, HttpSpec, ModelSpec, Resources, StrictModel
from carevl.config.planning import PlanningConfig
from carevl.config.stages import (
    CandidateSource,
    CurationConfig,
    EvalConfig,
    InputLimits,
    LoraSpec,
    RefineConfig,
    ScoreConfig,
    ServeConfig,
    SFTStage,
    StrongJudgeConfig,
    TrainStageConfig,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO_ROOT / "configs" / "tiny.yaml"

__all__ = [
    "CarevlConfig", "ConfigError", "load_config", "DEFAULT_CONFIG", "ModelSpec", "Resources", "HttpSpec",
    "GenerationSpec", "CurationConfig", "StrongJudgeConfig", "CandidateSource", "InputLimits",
    "SFTStage", "TrainStageConfig", "RefineConfig", "LoraSpec", "ServeConfig", "EvalConfig",
    "PlanningConfig", "ScoreConfig",
]


class ConfigError(ValueError):
    """A config file or override that cannot be loaded; the message names the key and the file."""


class RayConfig(StrictModel):
    address: str | None = Field(None, description="cluster address; None joins RAY_ADDRESS or starts local Ray")
    num_cpus: int | None = Field(None, description="CPUs for a local in-process Ray (None: all)")
    log_to_driver: bool = True


class PathsConfig(StrictModel):
    model_cache: str = Field(
        default_factory=lambda: os.environ.get("CAREVL_MODEL_CACHE", "~/.cache/carevl/models"),
        description="where tiny models are built and `tiny:<role>` paths resolve",
    )
    request_cache: str = Field("~/.cache/carevl/requests", description="on-disk cache of API calls")

    def model_cache_dir(self) -> Path:
        return Path(self.model_cache).expanduser()


class CarevlConfig(StrictModel):
    """The root config: models by key, and one section per pipeline stage."""

    preset: str = "custom"
    seed: int = 0
    ray: RayConfig = Field(default_factory=RayConfig)
    paths: PathsConfig = Field(default_factory=PathsConfig)
    models: dict[str, ModelSpec]
    curation: CurationConfig
    sft: SFTStage
    refine: RefineConfig
    dpo: TrainStageConfig = Field(default_factory=TrainStageConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    evaluation: EvalConfig = Field(default_factory=EvalConfig)
    score: ScoreConfig = Field(default_factory=ScoreConfig)
    planning: PlanningConfig = Field(default_factory=PlanningConfig)

    @model_validator(mode="after")
    def _check_model_refs(self) -> "CarevlConfig":
        """Every model a stage names must exist in `models` with a kind that fits the role."""
        refs: list[tuple[str, str | None, tuple[str, ...]]] = [
            ("curation.caption_model", self.curation.caption_model, ("vlm",)),
            ("curation.strong_judge.model", self.curation.strong_judge.model, ("vlm",)),
            ("sft.judge_model", self.sft.judge_model, ("vlm",)),
            ("refine.scorer_model", self.refine.scorer_model, ("causal", "vlm")),
            ("score.judge_model", self.score.judge_model, ("vlm", "causal")),
        ]
        refs += [(f"curation.experts[{i}]", m, ("reward",)) for i, m in enumerate(self.curation.experts)]
        refs += [(f"curation.candidates[{i}].model", c.model, ("vlm",))
                 for i, c in enumerate(self.curation.candidates)]
        for where, name, kinds in refs:
            if name is None:
                continue
            if name not in self.models:
                raise ValueError(f"{where}: model '{name}' is not defined under 'models'")
            if self.models[name].kind not in kinds:
                raise ValueError(f"{where}: model '{name}' has kind '{self.models[name].kind}', needs {kinds}")
        if len(set(self.curation.experts)) != len(self.curation.experts):
            raise ValueError("curation.experts: each expert may appear only once")
        return self

    def config_hash(self) -> str:
        """A stable hash of the effective config, recorded in every run summary."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: '{part}' is not a section")
        node = child
    node[parts[-1]] = value


_FLOAT_RE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def parse_override(text: str) -> tuple[str, Any]:
    """`a.b=c` -> ("a.b", c), the value read as YAML so numbers, booleans and lists keep their type."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects KEY=VALUE, got {text!r}")
    value = yaml.safe_load(raw) if raw.strip() else None
    if isinstance(value, str) and _FLOAT_RE.match(value):
        value = float(value)  # YAML 1.1 reads "2e-3" as a string; pass-through dicts (TRL fields) need a number
    return key.strip(), value


def _format_errors(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        lines.append(f"{source}: {loc}: {e['msg']}")
    return "invalid config\n" + "\n".join(lines)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> CarevlConfig:
    """Load YAML (default `configs/tiny.yaml`), apply `a.b=c` overrides in order, validate."""
    path = Path(path) if path else DEFAULT_CONFIG
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    source = str(path)
    if overrides:
        source += " (with --set " + ", ".join(overrides) + ")"
        for text in overrides:
            _set_dotted(tree, *parse_override(text))
    try:
        return CarevlConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from None
