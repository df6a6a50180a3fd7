"""Load this checkout as the ``tornado_push`` package.

The repository keeps the design card's layout (``server.py``, ``handlers/``,
``pubsub/``, ``settings.py`` at the top), while installed code lives under one
distinctive import name so it never collides with a host app's own
``handlers`` package or ``settings`` module. ``python server.py``, the deploy
kit, the tests and the benchmarks run the checkout itself, whatever copy may be
installed, by registering this directory as ``tornado_push``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent
PACKAGE = "tornado_push"


def load() -> ModuleType:
    """``tornado_push`` from this directory (registered once, then reused)."""
    loaded = sys.modules.get(PACKAGE)
    if loaded is not None and Path(loaded.__file__ or "").resolve().parent == ROOT:
        return loaded
    spec = importlib.util.spec_from_file_location(
        PACKAGE, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    assert spec is not None and spec.loader is not None
    package = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = package
    spec.loader.exec_module(package)
    return package
