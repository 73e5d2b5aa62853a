# Sourced by demo.sh and test.sh: the project's virtual environment `.venv/` (ignored by
# git), created on first use and put first on PATH, with the package installed into it
# (editable) plus the extras named in $1. Nothing is installed into the system Python.
if [ ! -x .venv/bin/python ]; then
  if ! python3 -m venv .venv >/dev/null 2>&1; then
    # Debian ships the venv module separately (python3-venv); install it when we can.
    rm -rf .venv
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
      apt-get update -qq >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    fi
    python3 -m venv .venv
  fi
fi
export VIRTUAL_ENV="$PWD/.venv"
export PATH="$VIRTUAL_ENV/bin:$PATH"
python -m pip install --quiet --disable-pip-version-check -e ".${1:-}"
echo "connector-recovery is installed in .venv/: run .venv/bin/connector-recovery, or 'source .venv/bin/activate' first" >&2
