"""``serve-gateway top``: a live view of a running gateway from its admin API.

Every ``--interval`` it reads ``/status`` and ``/metrics`` and shows, per service and version,
weight, ready/desired replicas, requests/s, 5xx/s, p99, queue, in-flight, batch size and fill,
and the running rollouts (``gateway/topview.py`` computes them). On a terminal the view is
redrawn in place with rich (the ``[top]`` extra; plain text redrawn in place without it) until
``q`` or Ctrl-C; when stdout is not a terminal it prints plain-text frames (one by default,
``-n N`` for more), so ``serve-gateway top | cat`` is a snapshot a script can read.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Callable, Iterator
from typing import Any

from gateway.admin import adminclient
from gateway.topview import COLUMNS, Frame, Scrape, cells, frame, parse, plain


def add_arguments(p: argparse.ArgumentParser) -> None:
    adminclient.add_arguments(p)
    p.add_argument("--interval", type=float, default=2.0, metavar="SECONDS",
                   help="time between refreshes (default 2)")
    p.add_argument("-n", "--iterations", type=int, metavar="N",
                   help="frames to show, then exit (default: until q / Ctrl-C on a terminal, "
                        "else 1)")


def scrape(client: adminclient.AdminClient) -> Scrape:
    """One look; raises AdminClientError with what went wrong."""
    at = time.monotonic()
    status = client.expect("GET", "/status")
    text = client.expect("GET", "/metrics")
    if not isinstance(status, dict) or not isinstance(text, str):
        raise adminclient.AdminClientError(f"{client.url}: /status or /metrics is not what a "
                                           "gateway answers")
    return parse(at, status, text)


class Viewer:
    """Scrapes, keeps the previous scrape for rates, and makes frames."""

    def __init__(self, client: adminclient.AdminClient) -> None:
        self.client = client
        self.prev: Scrape | None = None

    def next_frame(self) -> Frame:
        try:
            cur = scrape(self.client)
        except adminclient.AdminClientError as exc:
            last = frame(self.prev, None, self.client.url) if self.prev else \
                Frame(f"serve-gateway top  {self.client.url}", [], [])
            return Frame(last.header, last.rows, last.rollouts, f"{exc} (retrying)")
        shown = frame(cur, self.prev, self.client.url)
        self.prev = cur
        return shown


def rich_view(f: Frame) -> Any:
    """The frame as a rich renderable (rich imported only on a terminal that has it)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    t = Table(box=None, header_style="bold cyan", pad_edge=False, expand=False)
    rows = [cells(row) for row in f.rows]
    for i, name in enumerate(COLUMNS):
        # names are never cut (a narrow terminal squeezes the numbers' headers first)
        widest = max([len(r[i]) for r in rows] or [0]) if i < 3 else None
        t.add_column(name, no_wrap=True, min_width=widest,
                     justify="right" if name in ("WEIGHT", "REPLICAS", "RPS", "5XX/S", "P99 MS",
                                                 "QUEUE", "INFLIGHT") else "left")
    for row, text in zip(f.rows, rows, strict=True):
        style = "red" if row.note.startswith("CRASH") or row.ready == 0 and row.desired else None
        t.add_row(*text, style=style)
    parts: list[Any] = [Text(f.header, style="bold")]
    if f.error:
        parts.append(Text(f"error: {f.error}", style="bold red"))
    parts += [Text(""), t]
    if f.rollouts:
        parts += [Text(""), Text("ROLLOUTS", style="bold cyan"),
                  *(Text(f"  {line}") for line in f.rollouts)]
    parts += [Text(""), Text("q: quit", style="dim")]
    return Group(*parts)


def _no_keys(timeout: float) -> str:
    time.sleep(timeout)
    return ""


@contextlib.contextmanager
def _keys() -> Iterator[Callable[[float], str]]:
    """Keypresses from a terminal stdin (cbreak mode, restored on exit); the callable waits up
    to ``timeout`` seconds and returns what was typed, or '' when nothing came. It reads the
    descriptor itself: sys.stdin's buffer would keep a 'q' typed after another key out of
    select()'s sight."""
    fd = sys.stdin.fileno() if sys.stdin is not None and sys.stdin.isatty() else None
    if fd is None:
        yield _no_keys
        return
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:
        def read(timeout: float) -> str:
            ready, _, _ = select.select([fd], [], [], timeout)
            return os.read(fd, 1024).decode(errors="replace") if ready else ""
        yield read
    finally:
        # TCSANOW: TCSADRAIN would wait for the terminal to read every byte written, and a
        # terminal that is not reading (a detached tmux pane) would keep us from exiting
        termios.tcsetattr(fd, termios.TCSANOW, saved)


def _live(viewer: Viewer, interval: float, iterations: int | None) -> None:
    try:
        from rich.console import Console
        from rich.live import Live
    except ModuleNotFoundError:    # plain text, redrawn in place with ANSI home + clear
        _ansi(viewer, interval, iterations)
        return
    # the terminal's own size, followed on resize: COLUMNS / LINES (a shell's or tmux's value at
    # start) would pin rich to the size the terminal had then
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    console = Console(_environ=env)
    with _keys() as key, Live(console=console, screen=True, auto_refresh=False) as live:
        shown = 0
        while iterations is None or shown < iterations:
            live.update(rich_view(viewer.next_frame()), refresh=True)
            shown += 1
            if _wait_for_quit(key, interval):
                return


def _ansi(viewer: Viewer, interval: float, iterations: int | None) -> None:
    hint = "(pip install 'serve-gateway[top]' for the rich view)  q: quit"
    with _keys() as key:
        shown = 0
        while iterations is None or shown < iterations:
            sys.stdout.write("\x1b[H\x1b[2J" + plain(viewer.next_frame()) + f"\n\n{hint}\n")
            sys.stdout.flush()
            shown += 1
            if _wait_for_quit(key, interval):
                return


def _wait_for_quit(key: Callable[[float], str], interval: float) -> bool:
    end = time.monotonic() + interval
    while (left := end - time.monotonic()) > 0:
        if {"q", "Q"} & set(key(left)):
            return True
    return False


def run(args: argparse.Namespace) -> int:
    if args.interval < 0.1 or (args.iterations is not None and args.iterations < 1):
        print("serve-gateway top: need --interval >= 0.1 and -n >= 1", file=sys.stderr)
        return 2
    try:
        client = adminclient.from_args(args)
    except adminclient.AdminClientError as exc:
        print(f"serve-gateway: {exc}", file=sys.stderr)
        return 1
    viewer = Viewer(client)
    if sys.stdout.isatty():
        _live(viewer, args.interval, args.iterations)
        return 0
    # not a terminal: frames of plain text; the first one waits an interval to have rates
    first = viewer.next_frame()
    if first.error:
        print(f"serve-gateway top: {first.error.removesuffix(' (retrying)')}", file=sys.stderr)
        return 1
    for i in range(args.iterations or 1):
        time.sleep(args.interval)
        if i:
            print()
        print(plain(viewer.next_frame()), flush=True)
    return 0
