"""``python -m fedpit``: the ``fedpit`` command."""

import sys

from fedpit.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
