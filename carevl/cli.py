"""The one wrapper every `ray_jobs` entry point runs through, and the command line they share:

    python -m ray_jobs.<name> [--config FILE] [--set k=v ...] [--input PATH] [--output DIR] [job flags]

`run_job` parses the arguments (a job declares which of --input / --output it requires), sets up one
logging format, builds the tiny models the config names when the job loads models (once per model
cache; `carevl.kit`), joins or starts Ray in the main thread when the job uses it, and runs the driver in a
worker thread so that Ctrl-C / SIGTERM stop it at once (`carevl.ray_utils.interruptible`). Bad input,
meaning a `ConfigError`, `ValueError` or `FileNotFoundError` out of the driver, ends the process with
exit status 2 and one line on stderr that says what is wrong; anything else is a bug and keeps its
traceback.
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from carevl.config import DEFAULT_CONFIG, CarevlConfig, ConfigError, load_config
from carevl.kit.tiny import build_referenced
from carevl.ray_utils import init_ray, interruptible

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
BAD_INPUT = (ConfigError, ValueError, FileNotFoundError)
log = logging.getLogger("carevl.jobs")


@dataclass
class JobArgs:
    config: CarevlConfig
    input: str | None
    output: str | None
    extra: argparse.Namespace


@dataclass(frozen=True)
class Job:
    """What one entry point declares; `run` is its driver (one library call)."""

    description: str
    run: Callable[[JobArgs], Any]
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    required: Sequence[str] = ()      # shared flags the job needs: "input", "output"
    uses_ray: bool = True             # join or start Ray in the main thread before the driver starts
    loads_models: bool = True         # build the config's `tiny:<role>` models first (no-op once built)
    worker_logs: bool = True          # stream Ray workers' output here (False: it stays in Ray's log files)
    show: Callable[[JobArgs, Any], int | None] | None = None  # print the result; returns the exit status


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (a config error lists one problem per line)."""
    return "; ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__


def parse_job_args(job: Job, argv: list[str] | None = None) -> JobArgs:
    """The shared flags plus the job's own; a missing required flag or a bad config exits with status 2."""
    parser = argparse.ArgumentParser(description=job.description)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML config (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set curation.tau=4 (repeatable)")
    parser.add_argument("--input", default=None, required="input" in job.required, help="input path or URI")
    parser.add_argument("--output", default=None, required="output" in job.required,
                        help="output folder or URI")
    if job.add_arguments:
        job.add_arguments(parser)
    ns = parser.parse_args(argv)
    try:
        config = load_config(ns.config, ns.overrides)
    except ConfigError as exc:
        _bad_input(exc)
    return JobArgs(config=config, input=ns.input, output=ns.output, extra=ns)


def _bad_input(exc: BaseException) -> None:
    log.debug("bad input", exc_info=exc)
    print(f"error: {one_line(exc)}", file=sys.stderr, flush=True)
    raise SystemExit(2) from None


def run_job(job: Job, argv: list[str] | None = None) -> Any:
    """Parse, log, run the driver interruptibly, show the result; returns the driver's result."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per HTTP request is log noise
    args = parse_job_args(job, argv)
    try:
        if job.loads_models:
            build_referenced(args.config.paths.model_cache_dir(), [s.path for s in args.config.models.values()])
        if job.uses_ray:
            init_ray(args.config if job.worker_logs else args.config.model_copy(
                update={"ray": args.config.ray.model_copy(update={"log_to_driver": False})}))  # main thread, before the driver
        result = interruptible(lambda: job.run(args))
    except BAD_INPUT as exc:
        _bad_input(exc)
    status = job.show(args, result) if job.show else None
    if status:
        raise SystemExit(status)
    return result
