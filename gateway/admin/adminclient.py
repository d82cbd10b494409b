"""A small synchronous client of the admin API, shared by the CLI commands.

``from_args(args)`` finds the admin URL and bearer token from the gateway's config file
(``-c``; read leniently, so that even a file the gateway would refuse still names its admin
address; the token from ``admin.token_env``, ``admin.token_file`` or, with neither, the file
``<state_dir>/admin-token`` the gateway writes at start) or from ``--admin URL`` (token from
``$SERVE_GATEWAY_ADMIN_TOKEN``), and
``AdminClient.request(method, path, json=None) -> (status, doc)`` sends one request. It stays
import-light (no aiohttp, no pydantic): CLI commands start fast.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import yaml

DEFAULT_ADMIN = "127.0.0.1:8081"
TOKEN_ENV = "SERVE_GATEWAY_ADMIN_TOKEN"
TOKEN_FILE = "admin-token"          # in the state_dir: the token a gateway generated at start
DEFAULT_STATE_DIR = ".serve-gateway"


class AdminClientError(Exception):
    """The admin API cannot be located or reached; the message says why, for the user."""


class TokenError(Exception):
    """A token source named in the config is missing or empty. ``key`` is admin.<key>."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def read_token(token_env: str | None, token_file: str | None) -> str | None:
    """The bearer token: from the environment variable ``token_env``, else from the file
    ``token_file`` (relative to the working directory); None when neither is named."""
    if token_env:
        token = os.environ.get(token_env, "").strip()
        if not token:
            raise TokenError("token_env", f"environment variable {token_env} is not set or empty")
        return token
    if token_file:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as exc:
            raise TokenError("token_file", f"cannot read {token_file}: {exc.strerror}") from None
        if not token:
            raise TokenError("token_file", f"{token_file} is empty")
        return token
    return None


class AdminClient:
    """One admin API endpoint (``url``) and its token."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 30.0,
                 token_hint: str = "") -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.token_hint = token_hint    # what to set when the API answers 401
        # loopback admin APIs must not go through an http_proxy from the environment
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def request(self, method: str, path: str, json: Any = None) -> tuple[int, Any]:
        """Send one request; returns (HTTP status, JSON document or, if not JSON, the text).
        Raises AdminClientError when the API cannot be reached."""
        headers = {"Accept": "application/json"}
        data = None
        if json is not None:
            data = orjson.dumps(json)
            headers["Content-Type"] = "application/json"
        elif method.upper() in ("POST", "PUT", "PATCH"):
            data = b""
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.url + path, data=data, method=method.upper(),
                                     headers=headers)
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                status, body = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read()
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise AdminClientError(f"cannot reach the admin API at {self.url}: {reason}") from None
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return status, body.decode("utf-8", "replace")
        if status == 401 and isinstance(doc, dict) and self.token_hint:
            doc = {**doc, "detail": f"{doc.get('detail', '')}; {self.token_hint}"}
        return status, doc

    def expect(self, method: str, path: str) -> Any:
        """The answer's document when the status is 200; else AdminClientError saying why."""
        status, doc = self.request(method, path)
        if status != 200:
            raise AdminClientError(describe_error(status, doc))
        return doc


def call(args: argparse.Namespace, method: str, path: str,
         json: Any = None) -> dict[str, Any] | None:
    """One request of a CLI command: the answer's JSON object, or None once the reason it
    failed (unreachable, refused, not an object) is printed on stderr (the command exits 1)."""
    try:
        status, doc = from_args(args).request(method, path, json=json)
    except AdminClientError as exc:
        print(f"serve-gateway: {exc}", file=sys.stderr)
        return None
    if status != 200 or not isinstance(doc, dict):
        print(describe_error(status, doc), file=sys.stderr)
        return None
    return doc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``-c CONFIG`` / ``--admin URL``, for every command that talks to a running gateway."""
    # SUPPRESS: a flag given before the command (on the main parser) is not reset by the
    # command's own default
    parser.add_argument("-c", "--config", metavar="CONFIG", default=argparse.SUPPRESS,
                        help="the gateway's config file: the admin address and token come from it")
    parser.add_argument("--admin", metavar="URL", default=argparse.SUPPRESS,
                        help=f"the admin API, e.g. http://{DEFAULT_ADMIN} (overrides the config's "
                             f"address; without -c the token comes from ${TOKEN_ENV})")


def from_args(args: argparse.Namespace) -> AdminClient:
    """The client for ``-c CONFIG`` and/or ``--admin URL`` (default http://127.0.0.1:8081)."""
    config: str | None = getattr(args, "config", None)
    admin: str | None = getattr(args, "admin", None)
    token = os.environ.get(TOKEN_ENV) or None
    url = f"http://{DEFAULT_ADMIN}"
    hint = (f"set ${TOKEN_ENV} to the gateway's admin token, or pass -c CONFIG to read it "
            f"from the config's admin.token_env / admin.token_file / <state_dir>/{TOKEN_FILE}")
    if config:
        url, token, hint = from_config(config)
    if admin:
        url = admin if "://" in admin else f"http://{admin}"
    return AdminClient(url, token, token_hint=hint)


def from_config(path: str | Path) -> tuple[str, str | None, str]:
    """(admin URL, token, what to do on a 401) from a config file, read leniently (only
    gateway.admin and gateway.state_dir matter)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise AdminClientError(f"cannot read {path}: {exc.strerror}") from None
    except (yaml.YAMLError, RecursionError, ValueError) as exc:   # too deep, not UTF-8 ...
        raise AdminClientError(f"{path} is not valid YAML, so it does not tell where the admin "
                               f"API is ({exc.__class__.__name__}); pass --admin URL") from None
    gateway = data.get("gateway") if isinstance(data, dict) else None
    gateway = gateway if isinstance(gateway, dict) else {}
    admin = gateway.get("admin")
    admin = admin if isinstance(admin, dict) else {}
    listen = str(admin.get("listen") or DEFAULT_ADMIN)
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if not port.isdigit() or int(port) == 0:
        raise AdminClientError(f"{path}: gateway.admin.listen {listen!r} names no fixed port; "
                               "pass --admin URL")
    # a wildcard listener is reached over loopback
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    token_env, token_file = _str(admin.get("token_env")), _str(admin.get("token_file"))
    try:
        token = read_token(token_env, token_file)
    except TokenError as exc:
        raise AdminClientError(f"{path}: gateway.admin.{exc.key}: {exc}") from None
    if token_env:
        hint = f"set ${token_env} (gateway.admin.token_env of {path}) to the gateway's token"
    elif token_file:
        hint = f"put the gateway's token in {token_file} (gateway.admin.token_file of {path})"
    else:
        generated = Path(_str(gateway.get("state_dir")) or DEFAULT_STATE_DIR) / TOKEN_FILE
        token = _read_generated(generated)
        hint = (f"the gateway writes its token to {generated} at start: run this from the "
                f"gateway's working directory as its user, or set ${TOKEN_ENV}")
        token = token or os.environ.get(TOKEN_ENV) or None
    return f"http://{host}:{port}", token, hint


def _read_generated(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:     # no gateway running with this state_dir (or not ours): the 401 says so
        return None


def _str(value: Any) -> str | None:
    return str(value) if value else None


# -- presentation ------------------------------------------------------------------------------
def describe_error(status: int, doc: Any) -> str:
    """One line for an error answer (``{"error", "service", "detail"}`` or anything else)."""
    if isinstance(doc, dict) and "error" in doc:
        svc = f" ({doc['service']})" if doc.get("service") else ""
        return f"error {status} {doc['error']}{svc}: {doc.get('detail', '')}"
    return f"error {status}: {str(doc)[:500]}"
