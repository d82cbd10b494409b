"""The admin API, on its own listener (never reachable through the data listener).

One middleware applies the security rules to every route, the ones features add included
(``Access.check``, a pure function of the request's method, path and headers):

- ``/healthz`` and ``/readyz`` are always open, for load balancers;
- a ``Host`` that is neither an IP literal, the listen host, nor in ``admin.allow_hosts``
  (default: localhost) gets 403: a DNS-rebinding page names its own host, so it cannot read
  ``/status`` (pids, log paths) or ``/metrics`` through an operator's browser;
- a request carrying a browser ``Origin`` that is not in ``gateway.admin.allow_origins`` gets
  403, so a web page cannot drive the API through an operator's browser;
- a mutating route (``add_route(..., mutating=True)``) is POST only (GET is 405) and always needs
  ``Authorization: Bearer <token>`` (401 otherwise), so no local process (a model worker
  included) can reload, scale or move traffic without it;
- on a non-loopback listener, reads need the token too, except the ``admin.public`` ones;
- the listener refuses a non-loopback address unless a token is configured.

The token comes from the environment variable named by ``admin.token_env`` or the file named by
``admin.token_file`` (a relative path is relative to the gateway's working directory), never
from the YAML. With neither, the gateway generates one at start and writes it, mode 0600, to
``<state_dir>/admin-token`` (removed at exit), where the CLI finds it by itself: the way Jupyter
protects its server. Every error is JSON: ``{"error": kind, "service": name or null, "detail":
text}``.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from aiohttp import web
from aiohttp.web_urldispatcher import AbstractRoute
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.admin.adminclient import TOKEN_FILE, TokenError, read_token
from gateway.errors import ConfigError, ConfigProblem
from gateway.metrics import Metrics
from gateway.spec.models import AdminSpec
from gateway.spec.types import split_listen

if TYPE_CHECKING:
    from gateway.control.reload import ReloadResult

S = TypeVar("S")
T = TypeVar("T")
log = logging.getLogger("gateway.admin")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_BODY = 1 << 20
OPEN_PATHS = frozenset({"/healthz", "/readyz"})   # load balancers send no token
_KINDS = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 413: "body_too_large"}


def json_response(doc: Any, status: int = 200,
                  headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(doc, option=orjson.OPT_INDENT_2), status=status,
                        content_type="application/json", headers=headers)


def error_response(status: int, kind: str, detail: str, service: str | None = None,
                   headers: dict[str, str] | None = None) -> web.Response:
    return json_response({"error": kind, "service": service, "detail": detail}, status, headers)


class AdminError(Exception):
    """Raise from an admin handler to answer with the standard JSON error body."""

    def __init__(self, status: int, kind: str, detail: str, service: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.kind, self.detail, self.service = status, kind, detail, service

    def response(self, headers: dict[str, str] | None = None) -> web.Response:
        return error_response(self.status, self.kind, self.detail, self.service, headers)


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object ({} when empty); 400 otherwise."""
    body = await request.read()
    if not body.strip():
        return {}
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise AdminError(400, "bad_request", f"body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise AdminError(400, "bad_request", "body must be a JSON object")
    return doc


async def service_body(request: web.Request, services: Mapping[str, S],
                       parse: Callable[[dict[str, Any], S], T]) -> tuple[str, S, T]:
    """For ``/services/{name}/...`` endpoints: the named service (404 when there is none) and its
    JSON body as ``parse`` reads it (400 with the parser's ValueError message)."""
    name = request.match_info["name"]
    svc = services.get(name)
    if svc is None:
        raise AdminError(404, "not_found", f"no service named {name}", name)
    try:
        return name, svc, parse(await read_json(request), svc)
    except ValueError as exc:
        raise AdminError(400, "bad_request", str(exc), name) from None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False   # a host name: it may resolve to anything


def resolve_token(spec: AdminSpec) -> str | None:
    """The bearer token the config names (env first, then file), or None if it names none."""
    try:
        return read_token(spec.token_env, spec.token_file)
    except TokenError as exc:
        raise ConfigError([ConfigProblem(f"gateway.admin.{exc.key}", str(exc))]) from None


def host_name(header: str) -> str:
    """The name part of a Host header: ``h:8081`` -> ``h``, ``[::1]:8081`` -> ``::1``."""
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    if _is_ip(header):          # a bare IPv6 address (not valid in Host, but not a name either)
        return header
    name, _, port = header.rpartition(":")
    return name if name and port.isdigit() else header


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Access:
    """Who may call what (see the module docstring). ``where`` says where the token is, for the
    401's message."""

    token: str
    where: str
    hosts: frozenset[str] = frozenset({"localhost"})
    origins: frozenset[str] = frozenset()
    reads_need_token: bool = False
    public: frozenset[str] = frozenset()

    def check(self, method: str, path: str, headers: Mapping[str, str],
              mutating: bool) -> AdminError | None:
        """None when the request may go on, else the error to answer with."""
        if path in OPEN_PATHS and method in ("GET", "HEAD"):
            return None
        host = host_name(headers.get("Host", "").strip().lower())
        # an IP literal cannot be a rebound name: the page was loaded from that address itself
        if host and "*" not in self.hosts and host not in self.hosts and not _is_ip(host):
            return AdminError(403, "forbidden_host",
                              f"Host {host} is not allowed (gateway.admin.allow_hosts)")
        origin = headers.get("Origin")
        if origin is not None and origin not in self.origins:
            return AdminError(403, "forbidden_origin",
                              f"origin {origin} is not allowed (gateway.admin.allow_origins)")
        public = path.strip("/").split("/", 1)[0] in self.public
        if mutating or (self.reads_need_token and not public):
            return self._authorize(headers.get("Authorization", ""))
        return None

    def _authorize(self, header: str) -> AdminError | None:
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            return AdminError(401, "unauthorized",
                              f"this endpoint needs 'Authorization: Bearer <token>'; "
                              f"the token is {self.where}")
        if not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            return AdminError(401, "unauthorized", f"wrong token; the token is {self.where}")
        return None


def access_for(spec: AdminSpec, token: str | None, generated: str,
               token_path: str) -> Access:
    """The rules of ``spec``: its configured token, else the ``generated`` one (which must be
    written to ``token_path``). Raises ConfigError for an open non-loopback listener."""
    host, _ = split_listen(spec.listen)
    loopback = is_loopback(host)
    if token is None and not loopback:
        raise ConfigError([ConfigProblem(
            "gateway.admin.listen",
            f"refusing to serve the admin API on non-loopback address {spec.listen} without a "
            "token: set gateway.admin.token_env or gateway.admin.token_file")])
    if spec.token_env:
        where = f"in ${spec.token_env}"
    elif spec.token_file:
        where = f"in {spec.token_file}"
    else:
        where = f"in {token_path} (the CLI reads it with -c CONFIG)"
    hosts = {h.lower() for h in spec.allow_hosts}
    if host and not _is_ip(host):
        hosts.add(host.lower())   # the name it listens on
    return Access(token=token or generated, where=where, hosts=frozenset(hosts),
                  origins=frozenset(spec.allow_origins), reads_need_token=not loopback,
                  public=frozenset(spec.public))


def write_token(path: Path, token: str) -> None:
    """Write ``token`` to ``path``, readable by its owner only (0600 from creation on: a temp
    file created with that mode, then renamed over the old one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)       # the umask may not have narrowed it; never widen it
        os.write(fd, token.encode() + b"\n")
    finally:
        os.close(fd)
    os.replace(tmp, path)


class AdminServer:
    """GET /healthz, /readyz, /status, /metrics, plus the routes features add (``add_route``)."""

    def __init__(self, status: Callable[[], dict[str, Any]], metrics: Metrics) -> None:
        self._status = status
        self._metrics = metrics
        self._generated = secrets.token_urlsafe(32)   # used when the config names no token
        self._token_path: Path | None = None          # where it was written, if it was
        self._publishing = False                      # between publish_token and withdraw_token
        self._state_dir = ".serve-gateway"
        self._access = Access(self._generated, "generated")
        self._need_token: set[AbstractRoute] = set()   # mutating and private routes
        self.app = web.Application(middlewares=[self._guard], client_max_size=MAX_BODY)
        self.app.router.add_get("/healthz", self.healthz)
        self.app.router.add_get("/readyz", self.readyz)
        self.app.router.add_get("/status", self.status)
        self.app.router.add_get("/metrics", self.metrics)
        self._runner: web.AppRunner | None = None

    def configure(self, spec: AdminSpec, state_dir: str | None = None) -> None:
        """Take the auth settings of ``spec`` (at start and on reload). Raises ConfigError, with
        nothing changed, if the token cannot be read or the listener would be open without one.
        ``state_dir``: where the generated token goes (``publish_token``)."""
        if state_dir is not None:
            self._state_dir = state_dir
        path = str(Path(self._state_dir) / TOKEN_FILE)
        self._access = access_for(spec, resolve_token(spec), self._generated, path)
        if self._publishing:
            try:
                self._sync_token_file()
            except OSError as exc:   # the token itself applies; only the CLI's copy is missing
                log.error("cannot write the admin token to %s: %s", path, exc)

    @property
    def token(self) -> str:
        """The token in force (the data-plane processes this gateway starts get it)."""
        return self._access.token

    @property
    def generated_token(self) -> bool:
        """The config names no token: the generated one is in use."""
        return self._access.token == self._generated

    def publish_token(self) -> None:
        """Write the generated token (when it is the one in use) to ``<state_dir>/admin-token``
        for the CLI. Called once the state_dir is ours (start-up); from then on a reload that
        switches between a configured token and the generated one keeps the file in step."""
        self._publishing = True
        self._sync_token_file()

    def withdraw_token(self) -> None:
        """At exit: the token dies with this gateway, so its file goes too."""
        self._publishing = False
        self._sync_token_file()

    def _sync_token_file(self) -> None:
        path = Path(self._state_dir) / TOKEN_FILE
        try:
            if self._publishing and self.generated_token:
                write_token(path, self._generated)
                self._token_path = path
            elif self._token_path is not None:
                self._token_path.unlink(missing_ok=True)
                self._token_path = None
        except OSError as exc:
            if not self._publishing:
                log.warning("cannot remove %s: %s", path, exc)
                return
            raise

    def add_route(self, method: str, path: str, handler: Handler, mutating: bool = False,
                  private: bool = False) -> None:
        """Features add their endpoints here. A ``mutating`` route must be POST; it gets the
        token rule, and GET on it answers 405. A ``private`` read needs the token too, even on
        loopback (the data planes' snapshot: it holds the workers' commands and environment)."""
        if mutating and method.upper() != "POST":
            raise ValueError(f"mutating admin route {path} must be POST, not {method}")
        route = self.app.router.add_route(method, path, handler)
        if mutating or private:
            self._need_token.add(route)

    async def start(self, host: str, port: int) -> int:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        server = site._server
        assert server is not None
        return int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- the rules ----------------------------------------------------------------------------
    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            mutating = request.match_info.route in self._need_token
            refused = self._access.check(request.method, request.path, request.headers, mutating)
            if refused is not None:
                raise refused
            return await handler(request)
        except AdminError as exc:
            headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
            return exc.response(headers)
        except web.HTTPException as exc:      # the router's 404 / 405, a too-large body ...
            if exc.status < 400:
                raise
            allow = exc.headers.get("Allow")
            return error_response(exc.status, _KINDS.get(exc.status, "error"),
                                  f"{request.method} {request.path}: {exc.reason}",
                                  headers={"Allow": allow} if allow else None)
        except Exception as exc:
            log.exception("admin %s %s failed", request.method, request.path)
            return error_response(500, "internal_error", repr(exc))

    # -- read-only endpoints ------------------------------------------------------------------
    async def healthz(self, request: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        not_ready = unready_services(self._status())
        return json_response({"ready": not not_ready, "not_ready": not_ready},
                             200 if not not_ready else 503)

    async def status(self, request: web.Request) -> web.Response:
        return json_response(self._status())

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self._metrics.render(),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})


def unready_services(status: dict[str, Any]) -> list[str]:
    """Services that can neither serve nor buffer a request now, from a ``/status`` document.

    Ready means "a request sent now gets an answer": a version has a ready replica, or it scales
    from zero (autoscaled with ``min_replicas: 0``, not pinned, not crash-looping), so a request
    waits in the queue while a replica starts. A load balancer checking ``/readyz`` must not take
    the whole gateway out of service because an idle service sits at zero."""
    def buffers(version: dict[str, Any]) -> bool:
        auto = version.get("autoscale") or {}
        return bool(auto.get("enabled")) and auto.get("pinned") is None \
            and auto.get("min_replicas") == 0 and not version.get("crash_loop")

    return [name for name, svc in status["services"].items()
            if not any(v["ready"] or buffers(v) for v in svc["versions"].values())]


def reload_endpoint(reload: Callable[[], Awaitable[ReloadResult]]) -> Handler:
    """``POST /reload``: 200 with what changed, or 422 with the config error (old config kept)."""
    async def handler(request: web.Request) -> web.Response:
        result = await reload()
        return json_response(result.as_dict(), 200 if result.ok else 422)
    return handler
