"""python -m pyshm COMMAND: the command line, which lives in pyshm.cli."""

import sys

from pyshm.cli import main

if __name__ == "__main__":
    sys.exit(main())
