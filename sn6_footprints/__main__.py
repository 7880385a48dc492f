"""``python -m sn6_footprints ...``: the command-line shell over the core."""
import sys

from .cli import main

sys.exit(main())
