"""``python -m fsmlog.cli``: the same as the ``fsmlog`` console script."""

import sys

from fsmlog.cli import main

if __name__ == "__main__":
    sys.exit(main())
