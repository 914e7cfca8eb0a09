"""`python -m tradesim` is the `tradesim` command."""

import sys

from tradesim.cli import main

sys.exit(main())
