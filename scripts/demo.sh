#!/usr/bin/env bash
# The demo, from a fresh clone: installs the package, starts a local Kafka if none is
# configured (KAFKA_BOOTSTRAP_SERVERS), a worker, and shows a failure, its automatic
# recovery and the evidence on the audit topic.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --disable-pip-version-check -e .
exec connector-recovery demo "$@"
