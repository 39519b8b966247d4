"""``python -m clumpcat`` runs the command-line interface."""

import sys

from clumpcat.cli import main

# Guarded: CPU training starts its data-parallel processes by spawning, which
# imports this module again in each of them.
if __name__ == "__main__":
    sys.exit(main())
