"""python -m pyshm.bench: the benchmark, the same as python -m pyshm bench."""

import sys

from pyshm.bench import main

if __name__ == "__main__":
    sys.exit(main())
