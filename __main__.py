"""``python -m tornado_push``: the same as ``python server.py`` in a checkout."""

import sys

from .server import main

sys.exit(main())
