"""``python -m fastzarr``: the ``fastzarr`` command line."""

import sys

from fastzarr.cli import main

sys.exit(main())
