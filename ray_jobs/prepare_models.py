"""Build the tiny local models a config refers to (`tiny:<role>` paths) into the model cache.

    python -m ray_jobs.prepare_models [--config FILE] [--set k=v ...] [--roles vlm_micro ...] [--all]

Prints one `ROLE<TAB>FOLDER` line per role on stdout (progress goes to stderr), so scripts can find
the models. Re-running skips roles that are already built.
"""
from __future__ import annotations

import argparse

from carevl.cli import Job, JobArgs, run_job
from carevl.models.tiny import ROLES, build_tiny_models, tiny_roles


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--roles", nargs="+", default=[], choices=ROLES, metavar="ROLE",
                        help=f"extra roles to build besides the config's tiny models ({', '.join(ROLES)})")
    parser.add_argument("--all", action="store_true", help="build every known role")


def _run(args: JobArgs) -> dict:
    roles = list(ROLES) if args.extra.all else tiny_roles(args.config) + args.extra.roles
    folders = build_tiny_models(args.config.paths.model_cache_dir(), roles)
    for role, folder in folders.items():
        print(f"{role}\t{folder}", flush=True)
    return folders


JOB = Job(__doc__.splitlines()[0], _run, add_arguments=_add_arguments, uses_ray=False)


def main(argv: list[str] | None = None) -> dict:
    return run_job(JOB, argv)


if __name__ == "__main__":
    main()
