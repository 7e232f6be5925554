"""`python -m tailsample` runs the command line."""

import sys

from tailsample.cli import main

sys.exit(main())
