"""``python -m edgedeploy.host.cli``."""

import sys

from . import main

sys.exit(main())
