"""The common command line every job shares:

    python -m ray_jobs.<name> [--config FILE] [--set k=v ...] [--input PATH] [--output DIR]
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Callable

from carevl.config import DEFAULT_CONFIG, CarevlConfig, ConfigError, load_config


@dataclass
class JobArgs:
    config: CarevlConfig
    input: str | None
    output: str | None
    extra: argparse.Namespace


def parse_job_args(
    description: str,
    argv: list[str] | None = None,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> JobArgs:
    """Parse the shared flags (plus a job's own, added by `add_arguments`) and load the config.

    A config error exits with status 2 and the message naming the key and the file.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML config (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set curation.tau=4 (repeatable)")
    parser.add_argument("--input", default=None, help="input path or URI")
    parser.add_argument("--output", default=None, help="output folder or URI")
    if add_arguments:
        add_arguments(parser)
    ns = parser.parse_args(argv)
    try:
        config = load_config(ns.config, ns.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return JobArgs(config=config, input=ns.input, output=ns.output, extra=ns)
