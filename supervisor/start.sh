#!/usr/bin/env bash
# Start the push server as deployed: supervisord runs N server processes (one
# per core), nginx in front of them on one address.
#
#   supervisor/start.sh --processes N --port P [--host H]
#                       [--tls-port T --cert FILE --key FILE]
#                       [--first-process-port Q] [--run-dir DIR]
#
# Process K (0 ... N-1) listens on 127.0.0.1:Q+K (Q defaults to 7001); nginx
# listens on H:P (H defaults to 127.0.0.1) and, with --tls-port, on H:T with
# TLS. The PUSH_* variables of this environment go to every process
# (settings.py lists them); with N > 1, PUSH_REDIS_URL (or PUSH_REDIS_HOST) is
# required, since Redis is what makes the processes one server.
#
# Everything is written into the run directory (default: run/ in the
# repository): the rendered supervisord.conf and nginx.conf, pid files, the
# supervisord socket, logs/, and prometheus-targets.json (every process's
# port, Prometheus file_sd format: see supervisor/monitoring/README.md).
# Stop it all with supervisor/stop.sh --run-dir DIR.
#
# Python: $PYTHON, else the repository's .venv, else python3. The same
# interpreter runs the servers, supervisord and supervisorctl
# (`python -m supervisor.supervisord`), so supervisor is pip-installed there.
# nginx: $NGINX, else Debian's /usr/sbin/nginx (apt-get install nginx).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

die() { echo "start.sh: $*" >&2; exit 2; }
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

processes="" port="" host="127.0.0.1" tls_port="" cert="" key=""
first_port="7001" run_dir="$repo/run"
while (($#)); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --processes|--port|--host|--tls-port|--cert|--key|--first-process-port|--run-dir)
      (($# >= 2)) || die "$1 needs a value"
      case "$1" in
        --processes) processes="$2" ;;
        --port) port="$2" ;;
        --host) host="$2" ;;
        --tls-port) tls_port="$2" ;;
        --cert) cert="$2" ;;
        --key) key="$2" ;;
        --first-process-port) first_port="$2" ;;
        --run-dir) run_dir="$2" ;;
      esac
      shift 2 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[[ "$processes" =~ ^[1-9][0-9]*$ ]] || die "--processes N is required (N >= 1: the number of cores, $(nproc) here)"
[[ "$port" =~ ^[0-9]+$ ]] || die "--port P is required (where nginx listens)"
[[ "$first_port" =~ ^[0-9]+$ ]] || die "--first-process-port must be a number"
[[ -z "$tls_port" || "$tls_port" =~ ^[0-9]+$ ]] || die "--tls-port must be a number"
if [[ -n "$tls_port" && ( -z "$cert" || -z "$key" ) ]]; then
  die "--tls-port needs --cert FILE and --key FILE"
fi
# Refuse before anything starts: several processes without Redis would be
# separate servers that share nothing (a publish would reach a fraction of
# the subscribers).
if ((processes > 1)) && [[ -z "${PUSH_REDIS_URL:-}" && -z "${PUSH_REDIS_HOST:-}" ]]; then
  die "PUSH_REDIS_URL is not set: $processes processes share channels, presence and
  publishes only through Redis. Set it (e.g. PUSH_REDIS_URL=redis://127.0.0.1:6379/0)
  or start a single process with --processes 1."
fi

if [[ -n "${PYTHON:-}" ]]; then
  python="$PYTHON"
elif [[ -x "$repo/.venv/bin/python" ]]; then
  python="$repo/.venv/bin/python"
else
  python="$(command -v python3)" || die "python3 not found (or set PYTHON)"
fi
nginx="${NGINX:-/usr/sbin/nginx}"
[[ -x "$nginx" ]] || die "nginx not found at $nginx: apt-get install nginx (or set NGINX)"

# Absolute paths: everything below runs from the run directory.
absolute() { if [[ "$1" == /* || -z "$1" ]]; then echo "$1"; else echo "$PWD/$1"; fi; }
cert="$(absolute "$cert")" key="$(absolute "$key")"
# (A relative PYTHON or NGINX is a path; a bare name is looked up in PATH.)
[[ "$python" != */* ]] || python="$(absolute "$python")"
[[ "$nginx" != */* ]] || nginx="$(absolute "$nginx")"
mkdir -p "$run_dir"
run_dir="$(cd "$run_dir" && pwd)"
# The run directory holds the rendered configuration with its secrets.
chmod 0700 "$run_dir"
# Every Python command runs from the run directory: from the repository,
# `python -m supervisor...` could look into our supervisor/ directory first.
cd "$run_dir"
"$python" -c 'import supervisor.supervisord' 2>/dev/null ||
  die "supervisor is not installed for $python: $python -m pip install supervisor"

alive() { [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
if alive supervisord.pid || alive nginx.pid; then
  die "already running from $run_dir: stop it first with supervisor/stop.sh --run-dir $run_dir"
fi

# Render both configurations (and check every PUSH_* value the way the
# server will) before starting anything.
"$python" "$repo/supervisor/kit.py" render --run-dir "$run_dir" --processes "$processes" \
  --port "$port" --host "$host" --first-process-port "$first_port" \
  ${tls_port:+--tls-port "$tls_port" --cert "$cert" --key "$key"} || exit 2
# What stop.sh needs to find the same programs again.
printf 'python=%s\nnginx=%s\n' "$python" "$nginx" > launcher
"$nginx" -t -q -c "$run_dir/nginx.conf" -p "$run_dir" -e stderr ||
  die "nginx refused $run_dir/nginx.conf (above)"

ctl() { "$python" -m supervisor.supervisorctl -c "$run_dir/supervisord.conf" "$@"; }
launched=""
# On any failure from here on, show why and stop what was started, so that a
# failed start leaves nothing running.
on_exit() {
  local status=$?
  if [[ -n "$launched" ]] && ((status != 0)); then
    echo "start.sh: failed; supervisorctl status:" >&2
    ctl status >&2 || true
    for log in "$run_dir"/logs/push-*.log "$run_dir/logs/nginx-error.log"; do
      if [[ -s "$log" ]]; then
        echo "--- last lines of $log:" >&2
        tail -n 15 "$log" >&2
      fi
    done
    echo "start.sh: stopping what was started" >&2
    "$repo/supervisor/stop.sh" --run-dir "$run_dir" >&2 || true
  fi
}
trap on_exit EXIT

process_ports="$(seq -s, "$first_port" $((first_port + processes - 1)))"
# Where this machine reaches nginx, for the readiness checks.
case "$host" in
  0.0.0.0) local_host="127.0.0.1" ;;
  ::|"[::]") local_host="[::1]" ;;
  *:*) local_host="[$host]" ;;
  *) local_host="$host" ;;
esac
# supervisord forks into the background once its configuration is read.
launched=yes
"$python" -m supervisor.supervisord -c "$run_dir/supervisord.conf"
# Each process answers /ready with 200 once it listens and has joined the
# cluster; nginx starts after, so that it never sends clients to nothing.
"$python" "$repo/supervisor/kit.py" wait --process-ports "$process_ports" \
  --timeout 60
"$nginx" -c "$run_dir/nginx.conf" -p "$run_dir" -e stderr
"$python" "$repo/supervisor/kit.py" wait --process-ports "$process_ports" \
  --http "$local_host:$port" ${tls_port:+--https "$local_host:$tls_port"} --timeout 15
launched=""

echo "push server running from $run_dir"
echo "  supervisord (pid $(cat supervisord.pid)), $processes process(es):"
for ((k = 0; k < processes; k++)); do
  echo "    push:push-$k  127.0.0.1:$((first_port + k))  pid $(ctl pid "push:push-$k" || echo "?")  logs/push-$k.log"
done
echo "  nginx (pid $(cat nginx.pid)): ws://$host:$port/app/<key>, http://$host:$port/apps/<id>/..."
[[ -z "$tls_port" ]] || echo "                    wss://$host:$tls_port/app/<key>, https://$host:$tls_port/apps/<id>/..."
echo "  metrics: each process's /metrics on its port; Prometheus targets in $run_dir/prometheus-targets.json"
echo "  control: $python -m supervisor.supervisorctl -c $run_dir/supervisord.conf status"
echo "  stop:    $repo/supervisor/stop.sh --run-dir $run_dir"
