"""``python -m bench.faults``: see ``bench.faults.command``."""

import sys

from bench.faults.command import main

sys.exit(main())
