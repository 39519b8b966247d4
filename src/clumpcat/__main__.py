"""``python -m clumpcat`` runs the command-line interface."""

import sys

from clumpcat.cli import main

sys.exit(main())
