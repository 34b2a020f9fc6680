# Sourced by tools/demo and tools/test: create .venv and install meshcomm into it.
# Usage: . tools/bootstrap.sh [extra]   (extra = pip extra, e.g. "test")
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "meshcomm needs Python 3.11 or newer (found: $("$PY" --version 2>&1))" >&2
    exit 1
fi
if [ ! -x "$ROOT/.venv/bin/python" ]; then
    echo "==> creating virtual environment in $ROOT/.venv" >&2
    if ! "$PY" -m venv "$ROOT/.venv" 2>/dev/null; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
            "$PY" -m venv "$ROOT/.venv"
        else
            echo "python3 -m venv failed: install the Debian package python3-venv" >&2
            exit 1
        fi
    fi
fi
VENV_PY="$ROOT/.venv/bin/python"
stamp="$ROOT/.venv/.meshcomm-installed-${1:-base}"
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
    echo "==> installing meshcomm${1:+[$1]} into .venv" >&2
    "$VENV_PY" -m pip install -q --upgrade pip >&2
    # OpenDHT (the uplink DHT) comes as manylinux wheels (glibc >= 2.34: Debian 12,
    # Ubuntu 22.04 or newer); never try to build it from source.
    if ! "$VENV_PY" -m pip install -q --only-binary=opendht -e "$ROOT${1:+[$1]}" >&2; then
        echo "pip install failed; if it was opendht: it needs a manylinux_2_34 wheel" \
             "(CPython 3.11-3.13 on x86_64/aarch64, glibc 2.34+)" >&2
        exit 1
    fi
    touch "$stamp"
fi
export PATH="$ROOT/.venv/bin:$PATH"
