"""serve-gateway command line. Exit codes: 0 ok, 1 user error (bad config ...), 2 usage."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from gateway.errors import ConfigError, GatewayError

if TYPE_CHECKING:
    from gateway.spec import Spec

Command = Callable[[argparse.Namespace], int]


def cmd_up(args: argparse.Namespace) -> int:
    import uvloop

    from gateway import logs
    from gateway.app import Gateway

    logs.setup(args.log_format, args.log_level)
    spec = load_config(args.config)
    if spec is None:
        return 1

    async def main() -> None:
        gateway = Gateway(spec, args.config)
        gateway.dataplanes.log_args = ("--log-format", args.log_format, "--log-level", args.log_level)
        await gateway.run(keep_replicas=args.keep_replicas)

    try:
        uvloop.run(main())
    except OSError as exc:   # a listen address in use, a state_dir we cannot write ...
        print(f"serve-gateway: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:   # refused at start: an admin listener open without a token ...
        print(exc.render(), file=sys.stderr)
        return 1
    except GatewayError as exc:  # the runtime cannot start (Docker unreachable ...): its message
        print(f"serve-gateway: {exc}", file=sys.stderr)   # says what failed and what to do
        return 1
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from gateway.admin import adminclient, render

    doc = adminclient.call(args, "GET", "/status")
    if doc is None:
        return 1
    if args.json:
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(render.render_status(doc))
    return 0


def cmd_reload(args: argparse.Namespace) -> int:
    from gateway.admin import adminclient, render

    try:
        client = adminclient.from_args(args)
    except adminclient.AdminClientError as exc:
        if getattr(args, "config", None):   # too broken to name its admin API: say what is wrong
            load_config(args.config)
        print(f"serve-gateway: {exc}; nothing was reloaded", file=sys.stderr)
        return 1
    try:
        status, doc = client.request("POST", "/reload")
    except adminclient.AdminClientError as exc:
        print(f"serve-gateway: {exc}", file=sys.stderr)
        return 1
    if isinstance(doc, dict) and "ok" in doc:
        print(render.render_reload(doc), file=sys.stdout if doc["ok"] else sys.stderr)
        return 0 if doc["ok"] and status == 200 else 1
    print(adminclient.describe_error(status, doc), file=sys.stderr)
    return 1


def cmd_traffic(args: argparse.Namespace) -> int:

    body: dict[str, object] = {"reset": True}
    if not args.reset:
        weights = {}
        for pair in args.weights:
            name, sep, value = pair.partition("=")
            if not sep or not name or not value.strip().isdigit():
                print(f"serve-gateway traffic: {pair!r} is not VERSION=WEIGHT (an integer >= 0)",
                      file=sys.stderr)
                return 2
            weights[name] = int(value)
        if not weights:
            print("serve-gateway traffic: give VERSION=WEIGHT pairs or --reset", file=sys.stderr)
            return 2
        body = {"weights": weights}
    doc = _admin_post(args, f"/services/{args.service}/traffic", body)
    if doc is None:
        return 1

    def show(w: dict[str, int]) -> str:
        total = sum(w.values()) or 1
        return ", ".join(f"{v}={n} ({100 * n / total:.0f}%)" for v, n in w.items())

    source = "live override" if doc.get("weight_override") else "the config file's weights"
    print(f"{doc['service']}: {show(doc['weights'])}  [{source}; file: {show(doc['file_weights'])}]")
    return 0


def _admin_post(args: argparse.Namespace, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
    """POST to the admin API; on any failure print why and return None."""
    from gateway.admin import adminclient

    return adminclient.call(args, "POST", path, json=body)


def cmd_scale(args: argparse.Namespace) -> int:

    service, _, version = args.target.partition("/")
    if (args.replicas is None) == (not args.auto):
        print("serve-gateway scale: give a replica count N or --auto", file=sys.stderr)
        return 2
    body: dict[str, object] = {"auto": True} if args.auto else {"replicas": args.replicas}
    if version:
        body["version"] = version
    doc = _admin_post(args, f"/services/{service}/scale", body)
    if doc is None:
        return 1
    for vname, v in doc["versions"].items():
        auto = v.get("autoscale") or {}
        mode = "pinned until the next reload or --auto" if auto.get("pinned") is not None \
            else ("autoscaling" if auto.get("enabled") else "the config file's count")
        print(f"{doc['service']}/{vname}: desired {v['desired']}, ready {v['ready']}  [{mode}]")
    return 0


def load_config(path: str) -> Spec | None:
    """The validated config, or None after printing every problem with its path and line."""
    from gateway.spec import load_or_report

    return load_or_report(path)


def cmd_validate(args: argparse.Namespace) -> int:
    spec = load_config(args.config)
    if spec is None:
        return 1
    versions = sum(len(s.versions) for s in spec.services.values())
    print(f"{args.config}: ok ({len(spec.services)} services, {versions} versions, "
          f"runtime {spec.gateway.runtime}, hash {spec.digest()})")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from gateway.spec import json_schema

    sys.stdout.write(orjson.dumps(json_schema(), option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from gateway.loadgen import command

    return command.run(args)


def cmd_top(args: argparse.Namespace) -> int:
    from gateway import top

    return top.run(args)


def cmd_worker(args: argparse.Namespace) -> int:
    from gateway import worker

    return worker.run(args)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("serve-gateway")
    except PackageNotFoundError:   # run from a source tree that was never installed
        return "unknown"


def _config_argument(parser: argparse.ArgumentParser) -> None:
    """The config file of ``up`` / ``validate``: positional, or ``-c FILE`` anywhere on the line
    like every other command's."""
    parser.add_argument("config", nargs="?", default=argparse.SUPPRESS,
                        help="the YAML config file (or -c FILE)")
    parser.add_argument("-c", "--config", dest="config", metavar="CONFIG",
                        default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    parser.set_defaults(needs_config=True)


def build_parser() -> argparse.ArgumentParser:
    from gateway.admin import adminclient
    from gateway.dataplane import child

    p = argparse.ArgumentParser(
        prog="serve-gateway",
        description="A model-serving gateway: routing, micro-batching, rollouts and autoscaling "
                    "in front of model workers.")
    p.add_argument("--version", action="version", version=f"serve-gateway {_version()}")
    # -c / --admin before the command too: `serve-gateway -c gw.yaml status`
    adminclient.add_arguments(p)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="run the gateway in the foreground",
                        description="Start the workers a config describes and serve traffic until "
                                    "SIGTERM or Ctrl-C, which drain requests and stop every worker.")
    _config_argument(up)
    up.add_argument("--log-format", choices=["text", "json"], default="text")
    up.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    up.add_argument("--keep-replicas", action="store_true",
                    help="on exit drain traffic but leave the replicas running; the next `up` "
                         "with the same config adopts them without a restart (docker runtime)")
    up.set_defaults(func=cmd_up)

    v = sub.add_parser("validate", help="check a config file and exit",
                       description="Exit 0 if the config is valid; else print each problem with "
                                   "its YAML path and line and exit 1.")
    _config_argument(v)
    v.set_defaults(func=cmd_validate)

    s = sub.add_parser("schema", help="print the config's JSON Schema (for editors)",
                       description="Print the JSON Schema of the config file format.")
    s.set_defaults(func=cmd_schema)

    st = sub.add_parser("status", help="show services, versions, weights and replicas",
                        description="Ask a running gateway's admin API what it runs: one row "
                                    "per version (weight, ready/desired replicas, restarts) and "
                                    "one per replica.")
    adminclient.add_arguments(st)
    st.add_argument("--json", action="store_true", help="print the raw status document")
    st.set_defaults(func=cmd_status)

    from gateway import describe
    ds = sub.add_parser("describe", help="show a service's input and output schema",
                        description="Ask a ready replica, through the admin API, for the service's "
                                    "schema (the worker's /openapi.json) and summarise it.")
    adminclient.add_arguments(ds)
    describe.add_arguments(ds)
    ds.set_defaults(func=describe.run)

    rl = sub.add_parser("reload", help="make a running gateway reload its config file",
                        description="Same as SIGHUP: the gateway reads its config file again and "
                                    "applies it in full, or keeps the running config if the file "
                                    "is invalid (then this prints the problems and exits 1).")
    adminclient.add_arguments(rl)
    rl.set_defaults(func=cmd_reload)

    tr = sub.add_parser("traffic", help="change a service's version weights live",
                        description="Set a running gateway's weights for SERVICE (versions left "
                                    "out get 0) without editing the config; sticky users move "
                                    "only towards versions that gained weight. The next config "
                                    "reload replaces the change; --reset drops it now.")
    tr.add_argument("service")
    tr.add_argument("weights", nargs="*", metavar="VERSION=WEIGHT")
    tr.add_argument("--reset", action="store_true", help="go back to the config file's weights")
    adminclient.add_arguments(tr)
    tr.set_defaults(func=cmd_traffic)

    sc = sub.add_parser("scale", help="pin a version's replica count, or hand it back to autoscaling",
                        description="Set a running gateway's replica count for SERVICE (or "
                                    "SERVICE/VERSION) to N; the autoscaler leaves it there until "
                                    "the next config reload or --auto.")
    sc.add_argument("target", metavar="SERVICE[/VERSION]")
    sc.add_argument("replicas", nargs="?", type=int, metavar="N")
    sc.add_argument("--auto", action="store_true",
                    help="drop the pin: back to the autoscaler (or to the file's count)")
    adminclient.add_arguments(sc)
    sc.set_defaults(func=cmd_scale)

    from gateway import rolloutcli, worker

    rolloutcli.add_commands(sub)

    from gateway import top

    tp = sub.add_parser("top", help="live view: versions, replicas, rps, p99, queues, rollouts",
                        description="Show a running gateway's services, versions, weights, "
                                    "replicas, requests/s, p99, queue, batch fill and running "
                                    "rollouts, refreshed in place on a terminal (q quits); "
                                    "plain text when stdout is not a terminal.")
    top.add_arguments(tp)
    tp.set_defaults(func=cmd_top)

    from gateway.loadgen import command as bench

    b = sub.add_parser("bench", help="load-test a route: latency percentiles, throughput, versions",
                       description="Send load to a route, open loop (--rate) or closed loop "
                                   "(--connections), then print latency percentiles, "
                                   "throughput, status codes and x-served-by shares.")
    bench.add_arguments(b)
    b.set_defaults(func=cmd_bench)

    dp = sub.add_parser("dataplane", help="serve the data port for a controller (another host)",
                        description="A data-plane process: follows the routing snapshots of the "
                                    "gateway at --controller and serves its data port.")
    child.add_arguments(dp)
    dp.set_defaults(func=child.main)

    w = sub.add_parser("worker", help="serve a model class over HTTP (the worker SDK)",
                       description="Serve module:Class (load() once, then predict(items) -> list) "
                                   "with GET /health, GET /ready and POST /predict.")
    worker.add_arguments(w)
    w.set_defaults(func=cmd_worker)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "needs_config", False) and not getattr(args, "config", None):
        parser.error(f"{args.command}: give the config file (CONFIG or -c CONFIG)")
    func: Command = args.func
    try:
        code = func(args)
        sys.stdout.flush()           # a closed pipe shows here, not in the interpreter's exit
        return code
    except KeyboardInterrupt:        # Ctrl-C (rollout status --watch ...): no traceback
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:          # `serve-gateway rollout status | head`: the reader left
        # stdout is gone: point it at /dev/null so the interpreter's last flush stays quiet
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141                   # 128 + SIGPIPE, as a command killed by it would


if __name__ == "__main__":
    sys.exit(main())
