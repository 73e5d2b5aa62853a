#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs the package with its dev extras, runs
# ruff and mypy, then pytest. Tests marked `kafka` use a real broker: KAFKA_BOOTSTRAP_SERVERS
# if set, else testcontainers (Docker), else the project's own local KRaft broker, which the
# session fixture starts (resolving the jars from Maven Central once) and stops at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
ruff check .
ruff format --check .
mypy
exec python -m pytest "$@"
