# Shared by scripts/test and scripts/serve: the virtualenv and Debian packages.
# Sourced, not executed. Everything it starts is on loopback and recorded for stop-by-PID.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${ZEROPAY_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

_apt_updated=""
apt_install() {
    # apt_install PACKAGE...: install Debian packages (as root, or through sudo).
    local sudo=""
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null || { say "need root or sudo to install: $*"; return 1; }
        sudo="sudo"
    fi
    if [ -z "$_apt_updated" ]; then
        say "apt-get update"
        $sudo apt-get update -qq >/dev/null
        _apt_updated=1
    fi
    say "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_venv() {
    # A virtualenv with the project and its test extras, installed editable.
    if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        say "Python 3.11 or newer is required (found $(python3 --version 2>&1))"
        return 1
    fi
    if [ ! -x "$PY" ]; then
        say "creating virtualenv $VENV"
        python3 -m venv "$VENV" 2>/dev/null || { apt_install python3-venv && python3 -m venv "$VENV"; }
        "$PY" -m pip install -q --upgrade pip
    fi
    say "installing zeropay, its SDK (clients/python) and their test dependencies"
    local log="$VENV/pip-install.log"
    if ! "$PY" -m pip install -q -e "$ROOT[test]" -e "$ROOT/clients/python" >"$log" 2>&1; then
        cat "$log" >&2
        say "pip install failed (log above)"
        return 1
    fi
}
