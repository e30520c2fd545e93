"""The job wrapper every `ray_jobs` entry point uses: required flags, bad input -> exit 2 with one line."""
from __future__ import annotations

import subprocess
import sys

import pytest

from carevl.cli import Job, run_job
from carevl.config import ConfigError


def _job(error: BaseException | None = None, **kw) -> Job:
    def run(args):
        if error is not None:
            raise error
        return {"input": args.input, "seed": args.config.seed}
    return Job("test job", run, uses_ray=False, **kw)


def test_a_clean_run_returns_the_drivers_result_and_shows_it(capsys):
    shown = []
    job = _job(required=("input",), show=lambda args, result: shown.append(result))
    assert run_job(job, ["--input", "x", "--set", "seed=3"]) == {"input": "x", "seed": 3}
    assert shown == [{"input": "x", "seed": 3}]


@pytest.mark.parametrize("error", [ValueError("bad row 7\nsecond line"), FileNotFoundError("no such file: a"),
                                   ConfigError("invalid config\nfile: sft.x: extra field")])
def test_bad_input_exits_2_with_one_line(error, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_job(_job(error), [])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and err[0].startswith("error: ")
    assert str(error).splitlines()[-1] in err[0]


def test_a_bug_keeps_its_traceback():
    with pytest.raises(KeyError):
        run_job(_job(KeyError("bug")), [])


def test_required_flags_are_declared_and_a_show_status_is_the_exit_status(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_job(_job(required=("input", "output")), ["--input", "x"])
    assert exit_info.value.code == 2 and "--output" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        run_job(_job(show=lambda args, result: 1), [])
    assert exit_info.value.code == 1


@pytest.mark.parametrize("module, argv", [
    ("ray_jobs.curate", ["--input", "/nonexistent/items", "--output", "{tmp}/c", "--set", "ray.num_cpus=1"]),
    ("ray_jobs.evaluate", ["--benchmark", "pairwise", "--judge", "x", "--output", "{tmp}/e",
                           "--input", "/nonexistent/pairs.jsonl"]),
])
def test_entry_points_end_bad_input_with_exit_2_and_no_traceback(module, argv, tmp_path, repo_root):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    done = subprocess.run([sys.executable, "-m", module, *argv], cwd=repo_root, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith("error:")]
