"""Build the tiny local models a config refers to (`tiny:<role>` paths) into the model cache.

    python -m ray_jobs.prepare_models [--config FILE] [--set k=v ...] [--roles vlm_micro ...] [--all]

Prints one `ROLE<TAB>FOLDER` line per role on stdout (progress goes to stderr), so scripts can find
the models. Re-running skips roles that are already built.
"""
from __future__ import annotations

import argparse

from carevl.cli import parse_job_args
from carevl.models.tiny import ROLES, build_tiny_models, tiny_roles


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--roles", nargs="+", default=[], choices=ROLES, metavar="ROLE",
                        help=f"extra roles to build besides the config's tiny models ({', '.join(ROLES)})")
    parser.add_argument("--all", action="store_true", help="build every known role")


def main(argv: list[str] | None = None) -> dict:
    args = parse_job_args(__doc__.splitlines()[0], argv, _add_arguments)
    roles = list(ROLES) if args.extra.all else tiny_roles(args.config) + args.extra.roles
    folders = build_tiny_models(args.config.paths.model_cache_dir(), roles)
    for role, folder in folders.items():
        print(f"{role}\t{folder}", flush=True)
    return folders


if __name__ == "__main__":
    main()
