"""Build and train the tiny local models a config refers to (`tiny:<role>` paths) into the model cache.

    python -m ray_jobs.prepare_models [--config FILE] [--set k=v ...] [--roles vlm ...] [--all] [--processes N]
        [--no-report]

Prints one `ROLE<TAB>FOLDER` line per role on stdout (progress goes to stderr), so scripts can find
the models, then what the trained roles reached on held-out synthetic data: the caption model's object
precision and recall, each expert's pairwise accuracy and the highest agreement between two experts
(measured once per build, cached in the model cache). Re-running skips roles that are already built.
"""
from __future__ import annotations

import argparse

from carevl.cli import Job, JobArgs, run_job
from carevl.kit.competence import kit_report
from carevl.kit.tiny import CAPTION_ROLE, EXPERT_ROLES, ROLES, build_tiny_models_parallel, tiny_roles


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--roles", nargs="+", default=[], choices=ROLES, metavar="ROLE",
                        help=f"extra roles to build besides the config's tiny models ({', '.join(ROLES)})")
    parser.add_argument("--all", action="store_true", help="build every known role")
    parser.add_argument("--processes", type=int, default=None,
                        help="build roles in this many processes side by side (default: min(2, CPU cores))")
    parser.add_argument("--no-report", action="store_true", help="skip measuring the trained roles")


def report_lines(report: dict) -> list[str]:
    caption, experts = report["caption"], report["experts"]
    lines = [f"caption model: object precision {caption['precision']:.3f}, recall {caption['recall']:.3f} "
             f"({caption['images']} held-out images)"]
    accuracy = ", ".join(f"{name} {acc:.3f}" for name, acc in experts["accuracy"].items())
    lines.append(f"experts: pairwise accuracy {accuracy} ({experts['pairs']} held-out pairs, model-written captions)")
    pair, agreement = max(experts["agreement"].items(), key=lambda kv: kv[1])
    lines.append(f"experts: highest agreement between two experts {agreement:.3f} ({pair.replace('|', ' and ')})")
    base = report.get("base_judge")
    if base:
        for name, key in (("answers a question right", "answer_accuracy"), ("checks one answer right", "check_accuracy")):
            figures = ", ".join(f"{c} {v:.2f}" for c, v in base[key].items())
            lines.append(f"base judge {name}: {figures} ({base['questions']} held-out questions)")
    return lines


def _run(args: JobArgs) -> dict:
    roles = list(ROLES) if args.extra.all else tiny_roles(args.config) + args.extra.roles
    cache = args.config.paths.model_cache_dir()
    folders = build_tiny_models_parallel(cache, roles, processes=args.extra.processes)
    for role, folder in folders.items():
        print(f"{role}\t{folder}", flush=True)
    if not args.extra.no_report and {CAPTION_ROLE, *EXPERT_ROLES} <= set(folders):
        for line in report_lines(kit_report(cache)):
            print(line, flush=True)
    return folders


JOB = Job(__doc__.splitlines()[0], _run, add_arguments=_add_arguments, uses_ray=False, loads_models=False)


def main(argv: list[str] | None = None) -> dict:
    return run_job(JOB, argv)


if __name__ == "__main__":
    main()
