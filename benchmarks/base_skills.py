"""Can more alignment teach the micro judge to check an answer against the image?

    python benchmarks/base_skills.py --mix question --steps 800 --save /tmp/vqa800
    python benchmarks/base_skills.py --start /tmp/vqa800 --mix question,check,check --check-style restate --steps 2400
    python benchmarks/base_skills.py --from-scratch --layers 8 --mix caption,question,check --steps 1200
    python benchmarks/base_skills.py --mix check --categories color --steps 3000

The SFT judge can only learn what its base can nearly do: the kit report (`prepare_models`) shows the
aligned micro LLaVA answering questions about the image but checking one given answer at chance. This
script continues the alignment stage's instruction tuning (`carevl.kit.alignment`, same loop, data
and schedule) on top of an aligned base (default: the kit's `vlm_micro`) with another mix of
instruction kinds, then measures the base's skills with the kit report's probe
(`carevl.kit.competence.base_judge_skills`, held-out scenes) before and after. `--check-style
restate` makes each check first restate the answer's claim and the image's fact, then say right or
wrong. `--categories` limits the questions and checks to some question categories.
`--from-scratch` instead builds a fresh micro LLaVA, with the kit's text model or another depth and
width (`--layers`, `--width`), and runs the whole alignment (vision, projector, then the instruction
mix). Single-threaded by default, so two variants can run side by side on two cores. The kit itself is
never changed; `--save` keeps the trained model for a further run (`--start`).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=Path, help="an aligned micro LLaVA folder (default: the kit's vlm_micro)")
    parser.add_argument("--mix", default="question", help="instruction kinds taken in turn, e.g. question,check")
    parser.add_argument("--check-style", choices=("yes_no", "restate"), default="yes_no")
    parser.add_argument("--start-check-style", choices=("yes_no", "restate"), default="yes_no",
                        help="how the --start model was taught to check (how to read its checks before training)")
    parser.add_argument("--categories", help="question categories of the question and check examples, e.g. "
                                             "color,position (default: all)")
    parser.add_argument("--from-scratch", action="store_true",
                        help="build and align a fresh micro LLaVA instead of continuing an aligned one")
    parser.add_argument("--layers", type=int, help="with --from-scratch: text-model layers (kit: 4)")
    parser.add_argument("--width", type=int, help="with --from-scratch: text-model width, a multiple of 64 (kit: 128)")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--questions", type=int, default=200, help="held-out questions of the probe")
    parser.add_argument("--seed", type=int, default=7, help="training data stream (the kit used 0)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--save", type=Path, help="where to keep the trained model")
    parser.add_argument("--output", type=Path, help="write the report here as JSON")
    return parser.parse_args(argv)


def loss_curve(losses: list[float], window: int = 200) -> list[float]:
    """Mean loss of each `window` consecutive steps."""
    return [round(sum(losses[i:i + window]) / len(losses[i:i + window]), 4) for i in range(0, len(losses), window)]


def fresh_model(args: argparse.Namespace, recipe):
    """A new micro LLaVA (the kit's text model, or `--layers` / `--width`) after the alignment's vision
    and projector stages: ready for the instruction stage."""
    import torch

    from carevl.kit.alignment import align_projector, pretrain_vision
    from carevl.kit.builders import Sources, micro_llava

    dims = {}
    if args.layers:
        dims["num_hidden_layers"] = args.layers
    if args.width:
        if args.width % 64:
            raise SystemExit("--width must be a multiple of 64 (attention heads of 32, two per key/value head)")
        dims.update(hidden_size=args.width, intermediate_size=2 * args.width,
                    num_attention_heads=args.width // 32, num_key_value_heads=args.width // 64)
    torch.manual_seed(recipe.seed)
    model, processor = micro_llava(Sources(), **dims)
    pretrain_vision(model, processor, recipe)
    align_projector(model, processor, recipe)
    return model, processor, dims


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from carevl.config import load_config
    from carevl.kit.alignment import AlignmentRecipe, tune_instructions
    from carevl.kit.competence import base_judge_skills, heldout_scenes
    from carevl.kit.tiny import CAPTION_ROLE, build_tiny_models

    torch.set_num_threads(args.threads)
    kinds = tuple(args.mix.split(","))
    categories = tuple(args.categories.split(",")) if args.categories else AlignmentRecipe().categories
    if args.steps < 1:
        raise SystemExit("--steps must be >= 1")
    if (args.layers or args.width) and not args.from_scratch:
        raise SystemExit("--layers and --width need --from-scratch")
    try:
        recipe = replace(AlignmentRecipe(), seed=args.seed, instruction_steps=args.steps, categories=categories,
                         instruction_lr=args.learning_rate, instruction_kinds=kinds, check_style=args.check_style)
    except ValueError as exc:
        raise SystemExit(f"bad --mix, --categories or --check-style: {exc}") from None
    scenes = heldout_scenes(0, args.questions)
    report = {"mix": kinds, "categories": categories, "check_style": args.check_style, "steps": args.steps,
              "learning_rate": args.learning_rate}
    if args.from_scratch:
        model, processor, dims = fresh_model(args, recipe)
        report.update(start="from scratch", text_dims=dims, before=None)
    else:
        start = args.start or build_tiny_models(load_config().paths.model_cache_dir(), [CAPTION_ROLE])[CAPTION_ROLE]
        report.update(start=str(start), before=base_judge_skills(Path(start), scenes, 0, args.start_check_style))
        print("before:", json.dumps(report["before"]), flush=True)
        model = AutoModelForImageTextToText.from_pretrained(start)
        processor = AutoProcessor.from_pretrained(start)
    began = time.perf_counter()   # the instruction stage only
    losses = tune_instructions(model, processor, recipe)
    report.update(seconds=round(time.perf_counter() - began, 1), loss_curve=loss_curve(losses))
    print(f"trained {args.steps} steps in {report['seconds']} s; loss per 200 steps {report['loss_curve']}", flush=True)
    with tempfile.TemporaryDirectory(prefix="carevl-base-skills-") as scratch:
        folder = args.save or Path(scratch) / "model"   # the probe loads the model as every job does
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        report["after"] = base_judge_skills(folder, scenes, 0, args.check_style)
    print("after: ", json.dumps(report["after"]), flush=True)
    if args.output:
        args.output.write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
