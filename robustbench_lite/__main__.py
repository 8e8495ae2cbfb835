"""``python -m robustbench_lite`` is the ``rbl`` command."""

import sys

from .cli import main

sys.exit(main())
