"""runtime: docker without the Docker SDK installed: a clear error naming the extra.

``sys.modules[name] = None`` makes ``import name`` raise ModuleNotFoundError exactly as it does
where the package was never installed (the wheel test checks the real thing in a clean venv).
"""

from __future__ import annotations

import sys

import pytest

from gateway.errors import GatewayError, MissingExtra
from gateway.runtimes import create_runtime


def test_docker_runtime_without_the_sdk_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "gateway.runtimes.docker", raising=False)
    monkeypatch.setitem(sys.modules, "docker", None)
    with pytest.raises(MissingExtra) as err:
        create_runtime("docker", state_dir="/nonexistent", instance="x")
    message = str(err.value)
    assert "gateway.runtime: docker" in message
    assert "pip install 'serve-gateway[docker]'" in message
    assert isinstance(err.value, GatewayError)      # `up` prints it and exits 1


def test_the_process_runtime_never_imports_docker(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: object) -> None:
    monkeypatch.setitem(sys.modules, "docker", None)
    runtime = create_runtime("process", state_dir=str(tmp_path), instance="x")
    assert runtime.name == "process"
