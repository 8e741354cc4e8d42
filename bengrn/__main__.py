"""``python -m bengrn``: the ``bengrn`` command."""

import sys

from .cli import main

sys.exit(main())
