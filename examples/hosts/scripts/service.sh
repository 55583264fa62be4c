#!/bin/sh
# A toy service for the examples: start | stop | status SERVICE STATE_DIR.
# Runs on the remote host, streamed there by fleetrun (script: tasks); one
# service per target, so several targets may share a machine.
set -eu
action=$1 service=$2 dir=$3
pidfile="$dir/$service-${FLEETRUN_TARGET:-local}.pid"
# Alive: it exists and is not a zombie waiting for its parent to reap it.
alive() { kill -0 "$1" 2>/dev/null && [ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" != Z ]; }
running() { [ -s "$pidfile" ] && alive "$(cat "$pidfile")"; }
publish() { [ -n "${FLEETRUN_OUTPUT:-}" ] && echo "$1" >>"$FLEETRUN_OUTPUT" || true; }

case $action in
start)
    mkdir -p "$dir"
    if running; then
        echo "$service already running (pid $(cat "$pidfile"))"
    else
        # A daemon leaves the attempt's process group (setsid) and its output.
        setsid sh -c 'echo $$ >"$1"; exec sleep 1000000' sh "$pidfile" \
            </dev/null >/dev/null 2>&1 &
        for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
            running && break
            sleep 0.1
        done
        running || { echo "$service did not start" >&2; exit 1; }
        echo "$service started (pid $(cat "$pidfile"))"
    fi
    publish "pid=$(cat "$pidfile")"
    ;;
stop)
    if running; then
        pid=$(cat "$pidfile")
        kill "$pid"
        while alive "$pid"; do sleep 0.1; done
        echo "$service stopped (was pid $pid)"
    else
        echo "$service not running"
    fi
    rm -f "$pidfile"
    ;;
status)
    if running; then
        echo "$service running (pid $(cat "$pidfile"))"
        publish "state=running"
        publish "pid=$(cat "$pidfile")"
    else
        echo "$service stopped"
        publish "state=stopped"
        exit 3
    fi
    ;;
*)
    echo "usage: service.sh start|stop|status SERVICE STATE_DIR" >&2
    exit 2
    ;;
esac
