#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs the package with its dev extras into
# the project's .venv/ (scripts/venv.sh), runs ruff and mypy, then pytest. Tests marked `kafka` use a real broker: KAFKA_BOOTSTRAP_SERVERS
# if set, else testcontainers (Docker), else the project's own local KRaft broker, which the
# session fixture starts (resolving the jars from Maven Central once) and stops at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh '[dev]'
# From Debian: promtool (package prometheus) checks and unit-tests deploy/prometheus/alerts.yml;
# chromium renders the HTML compliance report in a test, and Playwright drives it (by
# executable_path, never `playwright install`) in the admin page's browser tests.
missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
# the real Alertmanager the paging tests post to (tests/kafka/test_alertmanager.py)
[ -x /usr/bin/prometheus-alertmanager ] || missing+=(prometheus-alertmanager)
command -v chromium >/dev/null 2>&1 || missing+=(chromium fonts-dejavu-core)
# openssl makes the throwaway CA of the SASL_SSL tests (tests/security/tls.py).
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# tmux gives the demo a real terminal in tests/kafka/test_demo.py (what a person sees).
command -v tmux >/dev/null 2>&1 || missing+=(tmux)
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # the prometheus package may start a server on :9090, prometheus-alertmanager one on
  # :9093; the tests start their own on free ports. Only the servers the packages just
  # started (their own service user), never someone else's.
  if [[ " ${missing[*]} " == *" prometheus "* ]]; then
    (systemctl stop prometheus || service prometheus stop || pkill -x -u prometheus prometheus) \
      >/dev/null 2>&1 || true
  fi
  if [[ " ${missing[*]} " == *" prometheus-alertmanager "* ]]; then
    # pkill matches the 15-character process name: prometheus-aler(tmanager)
    (systemctl stop prometheus-alertmanager || service prometheus-alertmanager stop \
      || pkill -x -u prometheus prometheus-aler) >/dev/null 2>&1 || true
  fi
fi
ruff check .
ruff format --check .
mypy
exec python -m pytest "$@"
