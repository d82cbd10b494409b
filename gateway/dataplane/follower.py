"""A data-plane process fed by a controller (its command line: dataplane/child.py, ``python -m
gateway.dataplane.child --controller URL`` or ``serve-gateway dataplane``).

The controller (``serve-gateway up`` with ``gateway.workers`` >= 2) starts N of these on its own
host; the same command on another host, given a reachable ``--controller`` URL and the admin
token (``$SERVE_GATEWAY_ADMIN_TOKEN``), is a gateway on another node. So nothing here assumes
a shared machine or filesystem: all it needs is the URL and the token.

Life: get the first snapshot (retrying with backoff) -> apply it -> bind the data port with
SO_REUSEPORT (so no connection is accepted before routing exists) -> long-poll the next
snapshots and apply each atomically (dataplane/snapshot.py) -> report to the controller every
100 ms. An unreachable controller costs nothing but freshness: the last snapshot keeps serving
and the polls retry with backoff. SIGTERM drains (stop accepting, finish in-flight requests,
bounded by the snapshot's ``drain_timeout``); SIGHUP and SIGINT are ignored: the controller
reloads, and a Ctrl-C in a terminal reaches the controller, which stops us in order.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import uuid
from typing import Any
from urllib.parse import quote, urlsplit

import orjson

from gateway import tasks
from gateway.dataplane.gcsettle import settle_gc
from gateway.dataplane.observe import Observer
from gateway.dataplane.server import DataPlane
from gateway.dataplane.snapshot import Applier, Key, configure, decode
from gateway.dataplane.table import TableHolder
from gateway.dataplane.upstream import UpstreamPool
from gateway.errors import GatewayError
from gateway.metrics import Metrics
from gateway.spec.types import split_listen
from gateway.tracing import TracingUnavailable, otel_tracer

log = logging.getLogger("gateway.dataplane.child")   # as the command is named

REPORT_EVERY = 0.1      # seconds between two reports
POLL_WAIT = 20.0        # seconds a long poll may wait for the next snapshot
BACKOFF_MIN, BACKOFF_MAX = 0.1, 2.0
SNAPSHOT = "/control/v1/snapshot"
REPORT = "/control/v1/report"


class ControllerError(GatewayError):
    """The controller answered with an unexpected status."""


class Controller:
    """The controller's admin API, over the data plane's own keep-alive HTTP/1.1 client."""

    def __init__(self, url: str, token: str | None) -> None:
        parts = urlsplit(url if "//" in url else f"http://{url}")
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"--controller must be http://HOST:PORT, not {url!r}")
        self.url = url
        self._host = parts.netloc.encode()
        self.pool = UpstreamPool(parts.hostname, parts.port or 80, connect_timeout=2.0)
        self._auth = b"Authorization: Bearer %s\r\n" % token.encode() if token else b""

    async def call(self, method: str, target: str, body: bytes | None,
                   timeout: float) -> tuple[int, bytes]:
        head = b"%s %s HTTP/1.1\r\nHost: %s\r\n%s" % (method.encode(), target.encode(),
                                                      self._host, self._auth)
        if body is not None:
            head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        resp = await self.pool.request(head + b"\r\n", body, timeout)
        data = resp.body if resp.body is not None else b"".join([c async for c in resp.stream()])
        return resp.status, data

    def close(self) -> None:
        self.pool.close()


class Child:
    def __init__(self, controller: Controller, name: str, index: int = 0, count: int = 1,
                 listen: str | None = None, health: str | None = None) -> None:
        self.controller = controller
        self.name = name
        self.listen = listen            # None: the snapshot's gateway.listen
        self.health = health
        self.incarnation = uuid.uuid4().hex
        self.metrics = Metrics()
        self.holder = TableHolder()
        self.dataplane = DataPlane(self.holder, self.metrics)
        self.applier = Applier(self.holder, self.metrics, self.dataplane.batchers, index, count)
        self.seen: str | None = None       # the last version received ("epoch:version")
        self.applied: tuple[str, int] | None = None    # the last version in force
        self.error: str | None = None      # why the last received version is not in force
        self._trouble_seen: str | None = None   # the controller's last failure, logged once
        self.port = 0
        self._stopping = asyncio.Event()
        self._report_now = asyncio.Event()
        # counters, histograms, gauges and scale-from-zero demand for the controller
        self.observer = Observer(self.metrics, self.holder, urgent=self.urgent)
        self._versions: set[Key] = set()   # every version routed so far (the requests total)

    # -- life -------------------------------------------------------------------------------
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stopping.set)
        for sig in (signal.SIGHUP, signal.SIGINT):     # the controller acts on these
            loop.add_signal_handler(sig, lambda: None)
        first = tasks.spawn(self._first_snapshot(), name="first snapshot")
        stopping = tasks.spawn(self._stopping.wait(), name="stop signal")
        await asyncio.wait((first, stopping), return_when=asyncio.FIRST_COMPLETED)
        if not first.done():           # stopped before any snapshot: nothing to drain
            await tasks.cancel_and_wait(first, stopping)
            self.controller.close()
            return
        await first
        self._start_tracing()
        health = await self._start_health() if self.health else None
        host, port = split_listen(self.listen or self._spec_listen())
        self.port = await self.dataplane.start(host, port, reuse_port=True)
        log.info("%s serving on %s:%d (snapshot %s)", self.name, host, self.port, self.seen)
        settle_gc()
        poll = tasks.spawn(self._poll(), name="snapshot poll")
        report = tasks.spawn(self._reports(), name="reports")
        await stopping
        await tasks.cancel_and_wait(poll)
        drain = self.applier.spec.gateway.drain_timeout if self.applier.spec else 30.0
        log.info("%s draining (up to %.0fs)", self.name, drain)
        await self.dataplane.stop(drain)
        await tasks.cancel_and_wait(report)
        await self._send_report()          # the last counts, with connections at 0
        if self.dataplane.tracer is not None:      # flush the spans still buffered
            await asyncio.to_thread(self.dataplane.tracer.shutdown)
        if health is not None:
            health.close()
        self.controller.close()

    def _start_tracing(self) -> None:
        """Spans of this process's requests go where the config says (``gateway.tracing``
        needs a restart to change: the first snapshot's is the one)."""
        assert self.applier.spec is not None
        t = self.applier.spec.gateway.tracing
        if t.otlp_endpoint:
            try:
                self.dataplane.tracer = otel_tracer(t.otlp_endpoint, t.service_name)
            except TracingUnavailable as exc:     # serve without spans rather than not at all
                log.error("%s: no tracing: %s", self.name, exc)

    def _spec_listen(self) -> str:
        assert self.applier.spec is not None
        return self.applier.spec.gateway.listen

    async def _first_snapshot(self) -> None:
        """Routing before any connection: retried until a snapshot applies."""
        delay = BACKOFF_MIN
        while self.applied is None:
            # once a version was refused, wait for the next one rather than ask again at once
            if not await self._fetch(0.0 if self.seen is None else POLL_WAIT):
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)

    async def _poll(self) -> None:
        delay = BACKOFF_MIN
        while True:
            if await self._fetch(POLL_WAIT):
                delay = BACKOFF_MIN
            else:              # keep serving the last snapshot; ask again a little later
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)

    async def _fetch(self, wait: float) -> bool:
        """One long poll: True when it answered (a new snapshot, applied or refused, or none
        within ``wait``), False when the controller could not be asked."""
        target = f"{SNAPSHOT}?wait={wait:g}" + (f"&after={quote(self.seen)}" if self.seen else "")
        try:
            status, body = await self.controller.call("GET", target, None, wait + 10.0)
        except (GatewayError, OSError) as exc:
            self._trouble(f"controller {self.controller.url} unreachable: {exc}")
            return False
        if status not in (200, 204):
            self._trouble(f"controller {self.controller.url} answered {status}: {body[:200]!r}")
            return False
        if self._trouble_seen is not None:
            log.info("%s: controller %s answers again", self.name, self.controller.url)
            self._trouble_seen = None
        if status == 200:
            self._take(body)
        return True

    def _take(self, body: bytes) -> None:
        """Apply one snapshot answer; a bad one is logged and skipped (the last good one
        stays in force: a snapshot this process cannot use must not stop it serving)."""
        try:
            doc = orjson.loads(body)
            epoch, version = str(doc["epoch"]), int(doc["version"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            self.error = f"malformed snapshot answer: {exc!r}"
            log.error("%s: %s", self.name, self.error)
            return
        self.seen = f"{epoch}:{version}"
        try:
            snap = decode(doc["snapshot"])
            self.applier.apply(snap)
            configure(self.dataplane, snap.spec.gateway)
        except Exception as exc:   # noqa: BLE001 - whatever it is, the old routing serves on
            self.error = f"snapshot {self.seen} not applied: {exc}"
            log.error("%s: %s", self.name, self.error)
            self._report_now.set()
            return
        self.applied, self.error = (epoch, version), None
        self._versions.update(self.applier.sets)
        self.observer.attach(self.applier.sets.values())   # before its first request
        self._report_now.set()

    def _trouble(self, what: str) -> None:
        """The controller cannot be asked: the last snapshot keeps serving (logged once per
        kind of trouble, not once per retry)."""
        if what != self._trouble_seen:
            log.warning("%s: %s; serving snapshot %s meanwhile", self.name, what, self.seen)
        self._trouble_seen = what

    # -- reports ----------------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        return {"process": self.name, "incarnation": self.incarnation, "pid": os.getpid(),
                "snapshot": list(self.applied) if self.applied else [],
                "connections": self.dataplane.connections,
                "requests": sum(self.metrics.version(s, v).answered for s, v in self._versions),
                "error": self.error, "observations": self.observer.report()}

    def urgent(self) -> None:
        """Send a report now (demand for a version at zero replicas must not wait 100 ms)."""
        self._report_now.set()

    async def _reports(self) -> None:
        delay = REPORT_EVERY
        while True:
            try:
                await asyncio.wait_for(self._report_now.wait(), delay)
            except TimeoutError:
                pass
            self._report_now.clear()
            delay = REPORT_EVERY if await self._send_report() else min(delay * 2, BACKOFF_MAX)

    async def _send_report(self) -> bool:
        doc = self.report()
        try:
            status, body = await self.controller.call("POST", REPORT, orjson.dumps(doc), 5.0)
        except (GatewayError, OSError):
            return False         # the poll says why; unacknowledged counts go with the next one
        if status != 200:
            return False
        self.observer.acked(doc["observations"])
        self._reshare(body)
        return True

    def _reshare(self, answer: bytes) -> None:
        """The share of the per-replica limits the controller gives this process (README:
        "Processes"); an answer without one (an older controller) changes nothing."""
        try:
            index, count = orjson.loads(answer)["share"]
            valid = isinstance(index, int) and isinstance(count, int) and 0 <= index < count
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            valid = False
        if not valid:
            return
        try:
            if self.applier.reshare(index, count):
                log.info("%s keeps share %d of %d of every per-replica limit", self.name,
                         index, count)
        except Exception as exc:  # noqa: BLE001 - the limits in force stay; reports go on
            log.error("%s: share %d/%d not applied: %r", self.name, index, count, exc)

    # -- the optional health listener (a remote node's load balancer) -------------------------
    async def _start_health(self) -> asyncio.Server:
        assert self.health is not None
        host, port = split_listen(self.health)
        return await asyncio.start_server(self._healthz, host, port, reuse_address=True)

    async def _healthz(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """200 while a snapshot is in force and the process is not draining, else 503."""
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2.0)
            ok = self.applied is not None and not self._stopping.is_set()
            body = b'{"status":"ok"}' if ok else b'{"status":"unavailable"}'
            writer.write(b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                         b"Connection: close\r\n\r\n%s" % (b"200 OK" if ok else b"503 Unavailable",
                                                          len(body), body))
            await asyncio.wait_for(writer.drain(), 2.0)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()


async def serve(controller: Controller, name: str, index: int, count: int,
                listen: str | None, health: str | None) -> None:
    await Child(controller, name, index, count, listen, health).run()

