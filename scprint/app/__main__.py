"""``python -m scprint.app``: the same as ``scprint app``."""

from __future__ import annotations

import sys

from .launch import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
