"""`interruptible`: the job driver runs in a thread; the main thread stays responsive to SIGTERM/Ctrl-C."""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from carevl.ray_utils import interruptible


def test_returns_the_value_and_reraises_the_error():
    assert interruptible(lambda: 41 + 1) == 42
    with pytest.raises(ValueError, match="bad input"):
        interruptible(lambda: (_ for _ in ()).throw(ValueError("bad input")))


def test_sigterm_stops_a_blocked_driver_at_once(capsys):
    blocked = threading.Event()  # never set: the driver thread waits forever, like a stalled result queue
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM)).start()
    before = signal.getsignal(signal.SIGTERM)
    start = time.monotonic()
    with pytest.raises(SystemExit) as stopped:
        interruptible(lambda: blocked.wait(), poll_s=0.05)
    assert stopped.value.code == 130 and time.monotonic() - start < 5
    assert "re-run the same command to resume" in capsys.readouterr().out
    assert signal.getsignal(signal.SIGTERM) == before  # the previous handler is back
