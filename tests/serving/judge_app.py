"""The judge application on local Ray Serve for tests, built as `serve run` builds it (the builder and
its typed args); also used by the RL tier (tests/rl)."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from carevl.testing.cluster import free_ports


@contextmanager
def judge_service(apps: dict[str, tuple[str, dict]]) -> Iterator[str]:
    """Serve each `name -> (route_prefix, JudgeAppArgs fields)` on one free port of 127.0.0.1; yields
    the base URL and shuts Serve down afterwards. Needs a running Ray (the `ray_local` fixture)."""
    from ray import serve

    from carevl.serving.app import build_app
    from carevl.serving.builder import JudgeAppArgs

    (port,) = free_ports(1)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        for name, (prefix, args) in apps.items():
            serve.run(build_app(JudgeAppArgs.model_validate(args)), name=name, route_prefix=prefix)
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
