"""``python -m privfed``: the ``privfed`` command line."""

import sys

from privfed.cli import main

if __name__ == "__main__":
    sys.exit(main())
