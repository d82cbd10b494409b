"""serve-gateway command line. Exit codes: 0 ok, 1 user error (bad config ...), 2 usage."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import orjson

from gateway.errors import ConfigError

Command = Callable[[argparse.Namespace], int]


def cmd_up(args: argparse.Namespace) -> int:
    import uvloop

    from gateway import logs
    from gateway.app import Gateway
    from gateway.spec import load_spec

    logs.setup(args.log_format, args.log_level)
    try:
        spec = load_spec(args.config)
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return 1

    async def main() -> None:
        await Gateway(spec, args.config).run()

    try:
        uvloop.run(main())
    except OSError as exc:   # a listen address in use, a state_dir we cannot write ...
        print(f"serve-gateway: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from gateway.spec import load_spec

    try:
        spec = load_spec(args.config)
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return 1
    versions = sum(len(s.versions) for s in spec.services.values())
    print(f"{args.config}: ok ({len(spec.services)} services, {versions} versions, "
          f"runtime {spec.gateway.runtime}, hash {spec.digest()})")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from gateway.spec import json_schema

    sys.stdout.write(orjson.dumps(json_schema(), option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from gateway import worker

    return worker.run(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="serve-gateway",
        description="A model-serving gateway: routing, micro-batching, rollouts and autoscaling "
                    "in front of model workers.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="run the gateway in the foreground",
                        description="Start the workers a config describes and serve traffic until "
                                    "SIGTERM or Ctrl-C, which drain requests and stop every worker.")
    up.add_argument("config", help="the YAML config file")
    up.add_argument("--log-format", choices=["text", "json"], default="text")
    up.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    up.set_defaults(func=cmd_up)

    v = sub.add_parser("validate", help="check a config file and exit",
                       description="Exit 0 if the config is valid; else print each problem with "
                                   "its YAML path and line and exit 1.")
    v.add_argument("config")
    v.set_defaults(func=cmd_validate)

    s = sub.add_parser("schema", help="print the config's JSON Schema (for editors)",
                       description="Print the JSON Schema of the config file format.")
    s.set_defaults(func=cmd_schema)

    from gateway import worker

    w = sub.add_parser("worker", help="serve a model class over HTTP (the worker SDK)",
                       description="Serve module:Class (load() once, then predict(items) -> list) "
                                   "with GET /health, GET /ready and POST /predict.")
    worker.add_arguments(w)
    w.set_defaults(func=cmd_worker)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Command = args.func
    return func(args)


if __name__ == "__main__":
    sys.exit(main())
