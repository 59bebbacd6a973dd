"""``python -m benchmarks.learning_curves [flags]``: runs :func:`benchmarks.learning_curves.runner.main`."""

import sys

from benchmarks.learning_curves.runner import main

if __name__ == "__main__":
    sys.exit(main())
