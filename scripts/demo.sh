#!/usr/bin/env bash
# The demo, from a fresh clone: installs the package into the project's .venv/, starts a
# local Kafka if none is configured (KAFKA_BOOTSTRAP_SERVERS), a worker, and shows a failure,
# its automatic recovery and the evidence on the audit topic.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
exec connector-recovery demo "$@"
