"""Running a `ray_jobs` entry point in-process the way a shell sees it."""
from __future__ import annotations


def job_status(main, argv) -> int:
    """The exit status a job's command line ends with (0 when it returns)."""
    try:
        main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
