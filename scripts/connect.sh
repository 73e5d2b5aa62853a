#!/usr/bin/env bash
# Start/stop/inspect the project's local Kafka Connect worker (distributed mode, from Maven
# Central) on the local broker.
#   scripts/connect.sh up|down|status   (REST port: $CONNECT_PORT, default 8083;
#                                        broker: $KAFKA_BOOTSTRAP_SERVERS or 127.0.0.1:$KAFKA_PORT)
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m agents.connect.local "$@"
