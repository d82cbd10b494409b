"""``serve-gateway bench``: load against a route, then latency, throughput, codes, versions.

    serve-gateway bench http://127.0.0.1:8080/v1/echo -d '{"x": 1}' --rate 500 --duration 10s
    serve-gateway -c config/quickstart.yaml bench /v1/echo --connections 32 --json

``--rate`` makes it open loop (coordinated-omission-free), else closed loop over
``--connections``. A live progress line goes to stderr when stderr is a terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import orjson
import yaml

from gateway.errors import MissingExtra
from gateway.loadgen.engine import LoadRun, Target
from gateway.loadgen.report import progress_line, render, summarize
from gateway.tasks import spawn

DEFAULT_GATEWAY = "127.0.0.1:8080"


class UsageError(Exception):
    """A bad argument; the CLI prints it and exits 2."""


def _duration(text: str) -> float:
    from gateway.spec.types import parse_duration

    try:
        seconds = float(parse_duration(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (10s, 500ms, 2m)") from None
    return seconds


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="URL|ROUTE",
                   help="http://host:port/path, or a path on the gateway of -c CONFIG "
                        f"(default {DEFAULT_GATEWAY})")
    p.add_argument("-c", "--config", metavar="CONFIG", default=argparse.SUPPRESS,
                   help="the gateway's config file: a ROUTE goes to its gateway.listen")
    p.add_argument("--rate", type=float, metavar="R",
                   help="open loop: R requests per second whatever the answers, latency from "
                        "each request's intended send time (default: closed loop)")
    p.add_argument("--connections", type=int, default=16, metavar="N",
                   help="keep-alive connections (closed loop: N requests in flight; default 16)")
    p.add_argument("--duration", type=_duration, default=10.0, metavar="D",
                   help="measured time (default 10s)")
    p.add_argument("--warmup", type=_duration, default=0.0, metavar="D",
                   help="unmeasured time first (default 0)")
    p.add_argument("--timeout", type=_duration, default=30.0, metavar="D",
                   help="a request with no answer after D is an error (default 30s)")
    p.add_argument("-X", "--method", help="GET, or POST when a body is given")
    body = p.add_mutually_exclusive_group()
    body.add_argument("-d", "--data", metavar="BODY", help="request body (@FILE reads a file)")
    body.add_argument("--body-file", metavar="FILE", help="request body from FILE")
    p.add_argument("-H", "--header", action="append", default=[], metavar="'NAME: VALUE'",
                   help="request header (repeatable)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--plot", metavar="FILE.png",
                   help="save a latency histogram (needs serve-gateway[plot])")


def _gateway_listen(config: str) -> str:
    """gateway.listen of a config, read leniently (only that key matters here)."""
    try:
        data = yaml.safe_load(Path(config).read_text())
    except OSError as exc:
        raise UsageError(f"cannot read {config}: {exc.strerror}") from None
    except (yaml.YAMLError, RecursionError, ValueError):
        raise UsageError(f"{config} is not valid YAML; give the full URL instead") from None
    gw = data.get("gateway") if isinstance(data, dict) else None
    listen = str(gw.get("listen") or DEFAULT_GATEWAY) if isinstance(gw, dict) else DEFAULT_GATEWAY
    host, _, port = listen.rpartition(":")
    if not port.isdigit() or int(port) == 0:
        raise UsageError(f"{config}: gateway.listen {listen!r} names no fixed port; give the URL")
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1", "[::]": "::1"}.get(host, host)
    return f"{host}:{port}"


def target_from_args(args: argparse.Namespace) -> tuple[Target, str]:
    """The request every connection sends, and the URL it shows as."""
    ref: str = args.target
    if ref.startswith("/"):
        config = getattr(args, "config", None)
        ref = f"http://{_gateway_listen(config) if config else DEFAULT_GATEWAY}{ref}"
    parts = urlsplit(ref)
    if parts.scheme != "http" or not parts.hostname:
        raise UsageError(f"{args.target!r}: give http://host:port/path or a /route "
                         "(plain HTTP/1.1 only)")
    body = b""
    source = args.body_file or (args.data[1:] if args.data and args.data.startswith("@") else None)
    if source:
        try:
            body = Path(source).read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read the body file {source}: {exc.strerror}") from None
    elif args.data is not None:
        body = args.data.encode()
    headers = []
    for h in args.header:
        name, sep, value = h.partition(":")
        if not sep or not name.strip() or any(c in h for c in "\r\n"):
            raise UsageError(f"header {h!r} is not 'Name: value'")
        headers.append(f"{name.strip()}: {value.strip()}")
    if body and not any(h.lower().startswith("content-type:") for h in headers):
        headers.append("Content-Type: application/json")
    method = (args.method or ("POST" if body or args.data is not None else "GET")).upper()
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    target = Target(parts.hostname, parts.port or 80, path, method, tuple(headers), body)
    return target, f"http://{parts.netloc}{path}"


async def _progress(run: LoadRun, out: IO[str]) -> None:
    while True:
        await asyncio.sleep(1.0)
        out.write("\r" + progress_line(run.progress()) + "\x1b[K")
        out.flush()


async def _bench(run: LoadRun, show_progress: bool) -> None:
    await run.open()
    ticker = spawn(_progress(run, sys.stderr), name="bench-progress") if show_progress else None
    try:
        await run.run()
    finally:
        if ticker is not None:
            ticker.cancel()
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def run(args: argparse.Namespace) -> int:
    import uvloop

    try:
        target, url = target_from_args(args)
        if args.connections < 1 or args.duration <= 0 or args.timeout <= 0 or \
                (args.rate is not None and not (0 < args.rate <= 1_000_000)):
            raise UsageError("need --connections >= 1, --duration > 0, --timeout > 0 and "
                             "0 < --rate <= 1000000")
        load = LoadRun(target, args.connections, args.duration, args.rate, args.warmup,
                       args.timeout)
    except UsageError as exc:
        print(f"serve-gateway bench: {exc}", file=sys.stderr)
        return 2
    try:
        uvloop.run(_bench(load, sys.stderr.isatty()))
    except OSError as exc:
        print(f"serve-gateway bench: cannot connect to {target.host}:{target.port}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return 1
    settings: dict[str, Any] = {
        "url": url, "method": target.method, "rate": args.rate, "connections": args.connections,
        "duration_s": args.duration, "warmup_s": args.warmup, "body_bytes": len(target.body)}
    doc = summarize(load.samples, settings)
    if args.plot:
        try:
            from gateway.loadgen.plot import save_histogram

            save_histogram(load.samples.latency, doc, args.plot)
            doc["plot"] = args.plot
        except MissingExtra as exc:
            print(f"serve-gateway bench: no plot: {exc}", file=sys.stderr)
    if args.json:   # orjson writes NaN (no answer at all) as null
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(render(doc))
        if doc.get("plot"):
            print(f"{'plot':<11}{doc['plot']}")
    return 0

