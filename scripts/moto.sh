#!/usr/bin/env bash
# A local AWS stand-in (moto: S3, SQS, DynamoDB) for the adapter tests.
#   scripts/moto.sh start [PORT]   starts it in the background, prints its endpoint
#   scripts/moto.sh stop           stops it
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PIDFILE="$ROOT/.deps/moto.pid"
case "${1:-}" in
  start)
    PORT="${2:-5005}"
    "$0" stop
    "$ROOT/.deps/venv/bin/moto_server" -H 127.0.0.1 -p "$PORT" >"$ROOT/.deps/moto.log" 2>&1 &
    echo $! >"$PIDFILE"
    for _ in $(seq 1 100); do
      if curl -fs "http://127.0.0.1:$PORT/moto-api/" >/dev/null 2>&1; then
        echo "http://127.0.0.1:$PORT"; exit 0
      fi
      sleep 0.1
    done
    echo "moto did not start; see .deps/moto.log" >&2; exit 1 ;;
  stop)
    if [ -f "$PIDFILE" ]; then kill "$(cat "$PIDFILE")" 2>/dev/null || true; rm -f "$PIDFILE"; fi ;;
  *) echo "usage: $0 start [PORT] | stop" >&2; exit 2 ;;
esac
