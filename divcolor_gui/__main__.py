"""``python -m divcolor_gui``: the same as the ``divcolor`` command."""

import sys

from .command import main

sys.exit(main())
