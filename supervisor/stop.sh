#!/usr/bin/env bash
# Stop what supervisor/start.sh started from a run directory: nginx first (no
# new clients), then supervisord, which stops every process with SIGTERM
# (each drains: clients get 4200, in-flight requests finish).
#
#   supervisor/stop.sh [--run-dir DIR]      (default: run/ in the repository)
#
# Only the PIDs in the run directory's pid files are signalled, never
# programs by name. Stopping nothing is not an error.
set -euo pipefail

# shellcheck source=supervisor/run-dir.sh
source "$(dirname "${BASH_SOURCE[0]}")/run-dir.sh"  # --run-dir, $run_dir, $python, $nginx
[[ -d "$run_dir" ]] || { echo "stop.sh: no run directory $run_dir: nothing to stop"; exit 0; }
enter_run_dir

# The PID in a pid file, if that process is alive.
running_pid() {
  local pid=""
  [[ -s "$1" ]] && read -r pid < "$1" || true
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}
# Wait up to $2 seconds for PID $1 to exit; fails if it is still there.
wait_gone() {
  local deadline=$((SECONDS + $2))
  while kill -0 "$1" 2>/dev/null; do
    ((SECONDS < deadline)) || return 1
    sleep 0.1
  done
}
# SIGKILL, for a process that did not stop when asked.
kill_hard() {
  echo "stop.sh: $2 (pid $1) did not stop in time: SIGKILL" >&2
  kill -KILL "$1" 2>/dev/null || true
  wait_gone "$1" 5 || echo "stop.sh: $2 (pid $1) is still there" >&2
}

# 1. nginx: `quit` stops accepting, lets requests finish and closes open
#    WebSockets after worker_shutdown_timeout (5 s, see nginx.conf).
if nginx_pid="$(running_pid nginx.pid)"; then
  echo "stop.sh: stopping nginx (pid $nginx_pid)"
  "$nginx" -c "$run_dir/nginx.conf" -p "$run_dir" -e stderr -s quit 2>/dev/null ||
    kill -QUIT "$nginx_pid" 2>/dev/null || true
  wait_gone "$nginx_pid" 15 || kill_hard "$nginx_pid" nginx
fi

# 2. supervisord: `shutdown` stops every process (SIGTERM, then SIGKILL after
#    stopwaitsecs) and then supervisord itself.
if supervisord_pid="$(running_pid supervisord.pid)"; then
  echo "stop.sh: stopping supervisord (pid $supervisord_pid) and its processes"
  ctl() { "$python" -m supervisor.supervisorctl -c "$run_dir/supervisord.conf" "$@"; }
  # The processes' PIDs, in case supervisord itself has to be killed.
  children="$(ctl pid all 2>/dev/null | grep -E '^[1-9][0-9]*$' || true)"
  ctl shutdown >/dev/null 2>&1 || kill -TERM "$supervisord_pid" 2>/dev/null || true
  # supervisord waits stopwaitsecs per process (they stop in parallel).
  stopwait="$(sed -n 's/^stopwaitsecs=\([0-9]*\)$/\1/p' supervisord.conf)"
  if ! wait_gone "$supervisord_pid" $((${stopwait:-15} + 10)); then
    kill_hard "$supervisord_pid" supervisord
  fi
  for pid in $children; do
    if kill -0 "$pid" 2>/dev/null; then kill_hard "$pid" "push process"; fi
  done
fi
echo "stop.sh: stopped (logs stay in $run_dir/logs)"
