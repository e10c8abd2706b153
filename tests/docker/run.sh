#!/usr/bin/env bash
# The container image and the compose example, for real: a private Docker engine (no registry
# needed), the local python:3.12-slim stand-in from shared/tools/docker, the project's
# Dockerfile built unchanged. Needs root; installs docker.io and debootstrap when missing.
# Prints "docker: N passed, M failed" and exits non-zero on any failure.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TOOLS=${CORSPROXY_DOCKER_TOOLS:-$ROOT/../shared/tools/docker}
[ -f "$TOOLS/make-python-base.sh" ] || {
  echo "no $TOOLS/make-python-base.sh: set CORSPROXY_DOCKER_TOOLS to shared/tools/docker" >&2
  exit 2
}
BIN=${CORSPROXY_BIN:-$(dirname "$(command -v python3)")}   # hadolint, docker-compose
PASSED=0; FAILED=0
ok()   { PASSED=$((PASSED + 1)); echo "ok    $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL  $*"; }
check() { local name=$1; shift; if "$@"; then ok "$name"; else fail "$name"; fi; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
t0=$(date +%s); lap() { echo "[$(( $(date +%s) - t0 ))s] $*"; }

# --- lint first: no engine needed ---------------------------------------------------
check "hadolint Dockerfile" "$BIN/hadolint" "$ROOT/Dockerfile"

if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 docker.io debootstrap >/dev/null
fi
S=$(mktemp -d /tmp/cpdock.XXXX)
export DOCKER_HOST=unix://$S/docker.sock
HAD_DOCKER0=$(ip link show docker0 >/dev/null 2>&1 && echo 1 || true)
dockerd --data-root "$S/root" --exec-root "$S/exec" --pidfile "$S/dockerd.pid" -H "$DOCKER_HOST" \
  --storage-driver overlay2 > "$S/dockerd.log" 2>&1 &
DPID=$!
UPID=
cleanup() {
  [ -n "$UPID" ] && kill "$UPID" 2>/dev/null || true
  (cd "$ROOT/examples/compose" && "$BIN/docker-compose" down -t 5 >/dev/null 2>&1) || true
  docker ps -aq 2>/dev/null | xargs -r docker rm -f >/dev/null 2>&1 || true
  docker network prune -f >/dev/null 2>&1 || true
  kill "$DPID" 2>/dev/null || true; wait "$DPID" 2>/dev/null || true
  awk -v s="$S" 'index($2, s) == 1 {print $2}' /proc/mounts | sort -r | xargs -r umount 2>/dev/null || true
  rm -rf "$S"
  if [ -z "$HAD_DOCKER0" ]; then
    ip link delete docker0 2>/dev/null || true
    for t in nat filter; do
      iptables -t "$t" -S 2>/dev/null | grep '^-A' | grep -E 'docker0|DOCKER|br-' | while read -r line; do
        eval iptables -t "$t" "${line/-A/-D}" 2>/dev/null || true
      done
    done
  fi
}
trap cleanup EXIT
for _ in $(seq 60); do docker version >/dev/null 2>&1 && break; sleep 0.5; done
docker version >/dev/null || { cat "$S/dockerd.log"; echo "dockerd did not start"; exit 1; }
lap "engine up"

# The Debian mirror this machine uses (the shared script's own lookup needs /etc/apt/sources.list).
export MIRROR=${MIRROR:-$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
  | awk '/^URIs:/ {print $2; exit} /^deb / {print $2; exit}')}
bash "$TOOLS/make-python-base.sh"
lap "base image"
VERSION=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$ROOT/corsproxy/__init__.py")
docker build -q --build-arg VERSION="$VERSION" -t corsproxy:local "$ROOT" >/dev/null
LABEL=$(docker image inspect -f '{{ index .Config.Labels "org.opencontainers.image.version" }}' corsproxy:local)
[ "$LABEL" = "$VERSION" ] || { echo "image version label '$LABEL' is not the package's '$VERSION'"; exit 1; }
lap "image built"

# --- the image in front of an upstream on the host ------------------------------------
UP=$(free_port); PORT=$(free_port); ADMIN=$(free_port)
mkdir -p "$S/www/api" && echo '{"hello": "legacy"}' > "$S/www/api/hello.json"
python3 -m http.server "$UP" --bind 127.0.0.1 --directory "$S/www" >/dev/null 2>&1 &
UPID=$!
APP=https://app.example.com
docker run -d --name cp --network host \
  -e CORSPROXY_LISTEN=127.0.0.1:$PORT -e CORSPROXY_ADMIN_LISTEN=127.0.0.1:$ADMIN \
  -e CORSPROXY_UPSTREAM=http://127.0.0.1:$UP -e CORSPROXY_ALLOW_ORIGINS=$APP corsproxy:local >/dev/null
for _ in $(seq 50); do curl -s "http://127.0.0.1:$PORT/" >/dev/null 2>&1 && break; sleep 0.2; done
URL=http://127.0.0.1:$PORT/api/hello.json
check "environment alone configures it" sh -c "curl -s -H 'Origin: $APP' -D- '$URL' | grep -qi '^access-control-allow-origin: $APP'"
check "body passes through" sh -c "curl -s '$URL' | grep -q legacy"
check "preflight answered with 204" sh -c "curl -s -o /dev/null -w '%{http_code}' -X OPTIONS -H 'Origin: $APP' -H 'Access-Control-Request-Method: GET' '$URL' | grep -q 204"
check "disallowed origin gets no CORS" sh -c "! curl -s -D- -H 'Origin: https://evil.example' '$URL' | grep -qi '^access-control-allow-origin'"
check "runs as a non-root user" sh -c "[ \"\$(docker exec cp id -u)\" != 0 ]"
check "admin /readyz" sh -c "curl -s http://127.0.0.1:$ADMIN/readyz | grep -q ready"
st=
for _ in $(seq 40); do st=$(docker inspect -f '{{.State.Health.Status}}' cp); [ "$st" = healthy ] && break; sleep 1; done
check "HEALTHCHECK turns healthy" [ "$st" = healthy ]
s0=$(date +%s%N); docker stop cp >/dev/null; s1=$(date +%s%N)
check "docker stop is prompt (SIGTERM handled by PID 1)" [ $(( (s1 - s0) / 1000000 )) -lt 5000 ]
check "exit status 0 after SIGTERM" [ "$(docker inspect -f '{{.State.ExitCode}}' cp)" = 0 ]
docker rm cp >/dev/null

# --- a mounted config file, and SIGHUP reload ---------------------------------------------
printf 'upstream: http://127.0.0.1:%s\nlisten: "127.0.0.1:%s"\ncors:\n  allow_origins: [%s]\n' "$UP" "$PORT" "$APP" > "$S/config.yaml"
chmod 644 "$S/config.yaml"
docker run -d --name cpf --network host -e CORSPROXY_ADMIN_LISTEN=127.0.0.1:$ADMIN \
  -v "$S/config.yaml:/etc/corsproxy/config.yaml:ro" corsproxy:local >/dev/null
for _ in $(seq 50); do curl -s "http://127.0.0.1:$PORT/" >/dev/null 2>&1 && break; sleep 0.2; done
check "a mounted /etc/corsproxy/config.yaml is read" sh -c "curl -s -D- -H 'Origin: $APP' '$URL' | grep -qi '^access-control-allow-origin: $APP'"
printf 'upstream: http://127.0.0.1:%s\nlisten: "127.0.0.1:%s"\ncors:\n  allow_origins: [https://other.example]\n' "$UP" "$PORT" > "$S/config.yaml"
docker kill -s HUP cpf >/dev/null; sleep 1
check "SIGHUP reloads the mounted file" sh -c "curl -s -D- -H 'Origin: https://other.example' '$URL' | grep -qi '^access-control-allow-origin: https://other.example'"
docker rm -f cpf >/dev/null
kill "$UPID"; UPID=
lap "image checks done"

# --- the compose example -------------------------------------------------------------
cd "$ROOT/examples/compose"
export ENV_PORT=$(free_port) FILE_PORT=$(free_port)
if "$BIN/docker-compose" up -d --pull never --no-build > "$S/compose.log" 2>&1; then
  for _ in $(seq 50); do curl -s "http://127.0.0.1:$ENV_PORT/" >/dev/null 2>&1 && curl -s "http://127.0.0.1:$FILE_PORT/" >/dev/null 2>&1 && break; sleep 0.3; done
  check "compose: corsproxy service configured by environment" sh -c "curl -s -D- -H 'Origin: $APP' http://127.0.0.1:$ENV_PORT/api/hello.json | grep -qi '^access-control-allow-origin: $APP'"
  check "compose: sidecar configured by a mounted file" sh -c "curl -s -D- -H 'Origin: http://localhost:5173' http://127.0.0.1:$FILE_PORT/api/hello.json | grep -qi '^access-control-allow-credentials: true'"
  check "compose: sidecar reaches the API on its loopback" sh -c "curl -s http://127.0.0.1:$FILE_PORT/api/hello.json | grep -q 'legacy API'"
  "$BIN/docker-compose" down -t 10 >/dev/null 2>&1 || true
else
  cat "$S/compose.log"; fail "compose up"
fi
lap "compose checks done"

echo "docker: $PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
