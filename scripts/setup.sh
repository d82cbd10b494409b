#!/usr/bin/env bash
# Everything the test suite needs, on a fresh Debian bookworm machine with Python 3.11:
#   Debian packages (prometheus and promtool for the metrics tests, nginx + wrk for bench/,
#   tmux for the `serve-gateway top` screen test, docker.io, gcc + python3-dev for the data
#   plane's C heads reader),
#   a running dockerd and the worker images (scripts/docker-setup.sh),
#   a virtual environment at .venv with the package, its dev extras and the frameworks the
#   adapter tests load models with (scikit-learn, torch CPU, onnxruntime + onnx).
# Idempotent: a warm run takes seconds.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SUDO=()
if [ "$(id -u)" != 0 ]; then SUDO=(sudo); fi

need=()
{ command -v promtool && command -v prometheus; } >/dev/null 2>&1 || need+=(prometheus)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v tmux >/dev/null 2>&1 || need+=(tmux)
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
# the C heads reader (gateway/dataplane/_head.c): optional, but without it the data plane
# parses with a Python call per header
command -v gcc >/dev/null 2>&1 || need+=(gcc)
python3 -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(
    sysconfig.get_paths()["include"], "Python.h")))' 2>/dev/null || need+=(python3-dev)
if [ ${#need[@]} -gt 0 ]; then
    echo "[setup] apt-get install ${need[*]}"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

bash scripts/docker-setup.sh

if [ ! -x .venv/bin/python ]; then
    echo "[setup] python3 -m venv .venv"
    python3 -m venv .venv
fi
# torch is pinned: 2.13.0 (CPU) is the build this machine's wheel cache holds; any other version
# would be a multi-gigabyte download. One pip run resolves everything (fast when warm).
# dev includes the docker, top and plot extras.
echo "[setup] pip install -e .[dev,sklearn,torch,onnx] torch==2.13.0"
.venv/bin/pip install -q --disable-pip-version-check -e '.[dev,sklearn,torch,onnx]' 'torch==2.13.0' \
    2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c 'import gateway, aiohttp, uvloop, httptools, pydantic, numpy, pytest
import docker, rich, matplotlib, sklearn, joblib, torch, onnxruntime, onnx' \
    || { echo "[setup] the virtual environment is incomplete" >&2; exit 1; }
echo "[setup] done"
