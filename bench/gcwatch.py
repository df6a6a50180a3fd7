"""Run a Python script with its garbage-collector pauses logged (``broadcast.py --gc-pauses``).

    BENCH_GC_LOG=/tmp/gc.log python bench/gcwatch.py server.py --port 6001

Every collection that takes over 1 ms appends one line to ``$BENCH_GC_LOG``:
``<CLOCK_MONOTONIC seconds> <generation> <milliseconds>``. The clock is the
system-wide monotonic one, so the benchmark can tell which pauses fell inside
its measured window. The script then runs as ``__main__``, unchanged.
"""

from __future__ import annotations

import gc
import os
import runpy
import sys
import time

_LOG = os.environ["BENCH_GC_LOG"]
_started = 0.0


def _on_collect(phase: str, info: dict) -> None:
    global _started
    if phase == "start":
        _started = time.perf_counter()
        return
    pause = time.perf_counter() - _started
    if pause > 0.001:
        with open(_LOG, "a") as log:
            log.write(f"{time.monotonic():.6f} {info['generation']} {pause * 1e3:.2f}\n")


if __name__ == "__main__":
    gc.callbacks.append(_on_collect)
    sys.argv = sys.argv[1:]
    sys.path.insert(0, os.getcwd())
    runpy.run_path(sys.argv[0], run_name="__main__")
