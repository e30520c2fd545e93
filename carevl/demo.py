"""The demo's last step: serve the trained judge on local Ray Serve, ask it one pairwise question and one
best-of-N ranking through `carevl.client`, print the answers beside the truth of the synthetic image
(the gold label and what the image shows), and shut the service down (paper 3.7)."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ray import serve

from carevl.client import JudgeClient
from carevl.config import CarevlConfig
from carevl.data.synth import eval_pair_truth, synth_eval_pairs
from carevl.ray_utils import init_ray
from carevl.progress import screen_width, wrap
from carevl.serving.app import build_app
from carevl.serving.builder import JudgeAppArgs


def _demo_pair(seed: int) -> dict:
    """One held-out synthetic pair (an image with a question whose answer is known) and its truth."""
    return {**next(iter(synth_eval_pairs(1, seed))), **eval_pair_truth(seed, 0)}


def format_answers(answers: dict[str, Any], width: int | None = None) -> str:
    """The served verdict and ranking beside the pair's gold label and what its image shows, each line
    folded to the screen width; the full answers are in the run folder."""
    width = width or screen_width()
    pair, verdict, rank = answers["pair"], answers["judge"], answers["rank"]
    gold = "a tie" if pair["label"] == "tie" else f"{pair['label']} is better"
    consistent = {True: "same verdict in both orders", False: "the orders disagree", None: "no swap check"}
    lines = ["", "=== the judge service on a held-out pair (POST /v1/judge, /v1/rank)",
             wrap(f"question: {pair['question']}", width),
             wrap(f"truth: {pair['image_shows']} Gold: {gold}.", width),
             wrap(f"A: {pair['response_a']}", width), wrap(f"B: {pair['response_b']}", width),
             wrap(f"judge: {verdict['winner']} (p_a {verdict['p_a']:.2f}, "
                  f"{consistent[verdict.get('swap_consistent')]}); {verdict.get('explanation') or ''}", width),
             wrap(f"rank of A, B and 'I cannot tell from the image.': best first {rank['ranking']}", width)]
    return "\n".join(lines)


def serve_and_query(config: CarevlConfig, model_dir: Path, config_args: list[str], port: int = 8000,
                    answers_file: Path | None = None) -> dict:
    """Deploy `model_dir` with the judge app, send one judge and one rank request, print them beside the
    truth, write them whole to `answers_file` (when given) and return them."""
    config_file = config_args[config_args.index("--config") + 1] if "--config" in config_args else None
    overrides = [config_args[i + 1] for i, a in enumerate(config_args) if a == "--set"]
    init_ray(config)
    # Serve's own progress (proxy, controller, app ready) goes to Ray's log folder; the demo prints one line.
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    print(f"  serving {model_dir} on http://127.0.0.1:{port} ...", flush=True)
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
        answers = {"pair": {k: pair[k] for k in ("question", "response_a", "response_b", "label", "image_shows",
                                                 "fact")},
                   "judge": verdict.model_dump(), "rank": ranking.model_dump()}
        if answers_file is not None:
            answers_file.write_text(json.dumps(answers, indent=2, default=str))
        print(format_answers(answers), flush=True)
        if answers_file is not None:
            print(f"full answers: {answers_file}", flush=True)
        return answers
    finally:
        serve.shutdown()
