#!/usr/bin/env bash
# Reload the apps of every push process supervisor/start.sh started, without a
# restart: each gets SIGHUP and reads PUSH_APPS_FILE again. New apps start;
# changed limits and secrets apply to new requests and connections; a removed or
# disabled app's connections are closed (4001, 4003); other connections stay.
# A file that does not validate changes nothing: each process logs why
# (logs/push-N.log). nginx needs nothing.
#
#   supervisor/reload.sh [--run-dir DIR]      (default: run/ in the repository)
set -euo pipefail

# shellcheck source=supervisor/run-dir.sh
source "$(dirname "${BASH_SOURCE[0]}")/run-dir.sh"  # --run-dir, $run_dir, $python
[[ -f "$run_dir/supervisord.pid" ]] || die "nothing running from $run_dir (start.sh first)"
enter_run_dir
"$python" -m supervisor.supervisorctl -c "$run_dir/supervisord.conf" signal HUP 'push:*'
echo "reload.sh: every push process was told to reload its apps"
