#!/usr/bin/env bash
# The habits CI enforces before the tests (rules in pyproject.toml): ruff (pyflakes, pycodestyle,
# isort, bugbear, pyupgrade, async pitfalls, and no bare asyncio.create_task / ensure_future
# outside gateway/tasks.py) and mypy --strict on the package.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
.venv/bin/ruff check gateway tests bench
.venv/bin/mypy --strict gateway
