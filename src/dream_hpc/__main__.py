"""`python -m dream_hpc` is the `dream-hpc` command."""

import sys

from dream_hpc.cli import main

sys.exit(main())
