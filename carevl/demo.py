"""The demo's last step: serve the trained judge on local Ray Serve, ask it one pairwise question and one
best-of-N ranking through `carevl.client`, print the answers, and shut the service down (paper 3.7)."""
from __future__ import annotations

import json
from pathlib import Path

from ray import serve

from carevl.client import JudgeClient
from carevl.config import CarevlConfig
from carevl.data.synth import synth_eval_pairs
from carevl.ray_utils import init_ray
from carevl.serving.app import build_app
from carevl.serving.builder import JudgeAppArgs


def _demo_pair(seed: int) -> dict:
    """One held-out synthetic pair (an image with a question whose answer is known)."""
    return next(iter(synth_eval_pairs(1, seed)))


def serve_and_query(config: CarevlConfig, model_dir: Path, config_args: list[str], port: int = 8000) -> dict:
    """Deploy `model_dir` with the judge app, send one judge and one rank request, return the answers."""
    config_file = config_args[config_args.index("--config") + 1] if "--config" in config_args else None
    overrides = [config_args[i + 1] for i, a in enumerate(config_args) if a == "--set"]
    init_ray(config)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        app = build_app(JudgeAppArgs(config=config_file, overrides=overrides, model=str(model_dir),
                                     default_mode="explain"))
        serve.run(app, name="judge", route_prefix="/")
        pair = _demo_pair(config.seed + 7)
        with JudgeClient(f"http://127.0.0.1:{port}", timeout_s=300) as client:
            verdict = client.judge(pair["question"], pair["response_a"], pair["response_b"],
                                   image=pair["image"], mode="explain", swap_check=True)
            ranking = client.rank(pair["question"], [pair["response_a"], pair["response_b"],
                                                     "I cannot tell from the image."], image=pair["image"])
        answers = {"pair": {k: pair[k] for k in ("question", "response_a", "response_b", "label")},
                   "judge": verdict.model_dump(), "rank": ranking.model_dump()}
        print("\n=== judge service answers (POST /v1/judge, POST /v1/rank)")
        print(json.dumps(answers, indent=2, default=str))
        return answers
    finally:
        serve.shutdown()
