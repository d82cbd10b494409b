"""deploy/serve-gateway.service: the systemd unit an operator copies. It must start the gateway
the way the README says, map reload and stop to the signals the gateway handles, and give a
default config time to drain before systemd kills what is left."""

from __future__ import annotations

import configparser
import shlex

from gateway.spec.models import GatewaySpec
from tests.helpers import REPO_ROOT


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str    # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string((REPO_ROOT / "deploy" / "serve-gateway.service").read_text())
    return parser


def test_the_unit_runs_up_validates_first_and_maps_reload_and_stop() -> None:
    svc = _unit()["Service"]
    start = shlex.split(svc["ExecStart"])
    assert start[0].endswith("/bin/serve-gateway")
    assert start[1:3] == ["up", "/etc/serve-gateway/config.yaml"]
    assert shlex.split(svc["ExecStartPre"])[1:] == ["validate", "/etc/serve-gateway/config.yaml"]
    assert svc["ExecReload"] == "/bin/kill -HUP $MAINPID"      # SIGHUP: reload in full or not
    assert svc["KillSignal"] == "SIGTERM" and svc["KillMode"] == "mixed"
    defaults = GatewaySpec()
    assert int(svc["TimeoutStopSec"]) > defaults.drain_timeout + defaults.stop_grace
    # state_dir (relative in the examples) lands in the one writable directory
    assert svc["WorkingDirectory"] == svc["ReadWritePaths"] == "/var/lib/serve-gateway"
    assert _unit()["Install"]["WantedBy"] == "multi-user.target"
