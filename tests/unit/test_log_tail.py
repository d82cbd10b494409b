"""The last log lines of a replica that ended (runtimes.base.log_tail) and how the supervisor
words its exit with them."""

from __future__ import annotations

from gateway.control.supervisor import _describe
from gateway.runtimes.base import ExitInfo, ExitKind, log_tail

LOG = b"""=== 2026-01-01T00:00:00 start: serve-gateway worker m:M --port 1 (cwd /srv)
old launch output
=== 2026-01-01T00:00:05 start: serve-gateway worker m:M --port 2 (cwd /srv)
Traceback (most recent call last):
  File "x.py", line 1, in <module>

ModuleNotFoundError: No module named 'm'
"""


def test_tail_is_the_last_launch_only() -> None:
    assert log_tail(LOG) == ("Traceback (most recent call last):",
                             '  File "x.py", line 1, in <module>',
                             "ModuleNotFoundError: No module named 'm'")
    assert log_tail(LOG, lines=1) == ("ModuleNotFoundError: No module named 'm'",)
    assert log_tail(b"") == ()
    assert log_tail(b"\xff\xfe broken utf-8\n") == ("\ufffd\ufffd broken utf-8",)


def test_exit_message_names_the_cause_and_the_log() -> None:
    info = ExitInfo(ExitKind.EXITED, 1, "exit code 1", log_tail(LOG))
    assert _describe(info, "/srv/logs/a.log") == \
        "exited with code 1: ModuleNotFoundError: No module named 'm' (full log: /srv/logs/a.log)"
    assert _describe(ExitInfo(ExitKind.EXITED, 1)) == "exited with code 1"
    # killed from outside: the log does not say why, so the message keeps to the cause
    assert _describe(ExitInfo(ExitKind.OOM, 137, "", ("loading",)), "/l") == "was OOM-killed"
