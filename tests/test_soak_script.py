"""bench/soak.py, the long soak run kept outside CI, still runs: a 15-second version of it.

The 15 seconds prove the script works end to end (churn, numbered publishes,
poison frames, a slow consumer, sampling) and that nothing acknowledged was
lost and no traceback was logged; memory growth is judged by the long run
only (docs/reliability.md), so the bound is loose here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_a_short_soak_loses_nothing_and_logs_no_traceback():
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "soak.py"), "--minutes", "0.25", "--sample", "3",
         "--churners", "5", "--rate", "20", "--max-rss-growth", "1"],
        capture_output=True, text=True, timeout=90)
    assert run.returncode == 0 and "soak: ok" in run.stdout, run.stdout + run.stderr
    assert "lost 0," in run.stdout
