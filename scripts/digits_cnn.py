#!/usr/bin/env python3
"""The demo's entry to the digits CNN, which lives with the tests' support code
(tests/support/digits_cnn.py, importable as ``tests.support.digits_cnn``):

    python scripts/digits_cnn.py OUT_DIR [--epochs 8] [--size 32] [--shuffle-labels]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root

from tests.support.digits_cnn import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
