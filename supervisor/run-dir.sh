# Sourced by stop.sh and reload.sh: the run directory start.sh filled, and the programs
# it used. Parses the caller's arguments (`--run-dir DIR`, `--help`), then sets
# $run_dir (default: run/ in the repository), $python and $nginx; enter_run_dir cd's there.
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
script="$(basename "$0")"
die() { echo "$script: $*" >&2; exit 2; }

run_dir="$repo/run"
while (($#)); do
  case "$1" in
    --run-dir) (($# >= 2)) || die "--run-dir needs a value"; run_dir="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

# The run directory, absolute; from there (as in start.sh) never run `python -m
# supervisor...` from the repository. Also reads the programs start.sh used (it wrote
# them down; defaults otherwise).
enter_run_dir() {
  run_dir="$(cd "$run_dir" && pwd)"
  cd "$run_dir"
  python="" nginx=""
  if [[ -f launcher ]]; then
    while IFS='=' read -r name value; do
      case "$name" in
        python) python="$value" ;;
        nginx) nginx="$value" ;;
      esac
    done < launcher
  fi
  python="${python:-${PYTHON:-python3}}"
  nginx="${nginx:-${NGINX:-/usr/sbin/nginx}}"
}
