"""``python -m ftemu``: the same as the ``ftemu`` command."""
import sys

from .cli import main

sys.exit(main())
