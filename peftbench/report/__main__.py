"""``python -m peftbench.report``: the same command line as ``peftbench-report``."""

import sys

from peftbench.report.cli import main

sys.exit(main())
