#!/usr/bin/env bash
# Start/stop/inspect the project's local single-node Apache Kafka (KRaft, from Maven Central).
#   scripts/kafka.sh up|down|status   (port: $KAFKA_PORT, default 9092)
set -euo pipefail
cd "$(dirname "$0")/.."
# the project's .venv/ (scripts/demo.sh and test.sh create it) when there is one
python=python
[ -x .venv/bin/python ] && python=.venv/bin/python
exec "$python" -m agents.broker.local "$@"
