"""``python -m clip_suite``: the command line (see ``clip_impl/cli.py``)."""

import sys

from .clip_impl.cli import main

sys.exit(main())
