"""The command line of a data-plane process: ``python -m gateway.dataplane.child --controller URL``
(what a controller with ``gateway.workers`` >= 2 runs) or ``serve-gateway dataplane`` (the same,
for a gateway on another host). Light on purpose: building the CLI's parser imports nothing of
the data plane; the process itself is dataplane/follower.py."""

from __future__ import annotations

import argparse
import os
import sys
import time

# the name gateway.admin.adminclient.TOKEN_ENV gives it (the data plane imports no admin code;
# a unit test holds the two equal)
TOKEN_ENV = "SERVE_GATEWAY_ADMIN_TOKEN"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--controller", required=True,
                   help=f"the controller's admin URL, http://HOST:PORT (token in ${TOKEN_ENV})")
    p.add_argument("--name", default=f"dp-{os.uname().nodename}", help="this process in reports")
    p.add_argument("--share", default="0/1", help="I/N: this is process I of N sharing replicas "
                   "(each gets its part of every per-replica limit) until the controller's "
                   "answer to its first report says which part it keeps")
    p.add_argument("--listen", help="HOST:PORT of the data port (default: gateway.listen)")
    p.add_argument("--health", help="HOST:PORT of an optional health listener (200 once "
                   "routing is in force)")
    p.add_argument("--log-format", choices=["text", "json"], default="text")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")


def parse_share(text: str) -> tuple[int, int]:
    index, sep, count = text.partition("/")
    if not sep or not index.isdigit() or not count.isdigit() or not 0 <= int(index) < int(count):
        raise ValueError(f"--share must be I/N with 0 <= I < N, not {text!r}")
    return int(index), int(count)


def main(args: argparse.Namespace) -> int:
    import logging

    import uvloop

    from gateway import logs
    from gateway.dataplane.follower import Controller, serve

    logs.setup(args.log_format, args.log_level)
    try:
        index, count = parse_share(args.share)
        controller = Controller(args.controller, os.environ.get(TOKEN_ENV))
    except ValueError as exc:
        print(f"serve-gateway dataplane: {exc}", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        uvloop.run(serve(controller, args.name, index, count, args.listen, args.health))
    except OSError as exc:       # the data port cannot be bound
        print(f"serve-gateway dataplane: {exc}", file=sys.stderr)
        return 1
    logging.getLogger("gateway.dataplane.child").info(
        "%s stopped after %.0fs", args.name, time.monotonic() - started)
    return 0


def run() -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.dataplane.child",
                                     description="A data-plane process fed by a controller.")
    add_arguments(parser)
    return main(parser.parse_args())


if __name__ == "__main__":
    sys.exit(run())
