"""``python -m gateway.worker module:Class --port N``."""

import sys

from gateway.worker import main

sys.exit(main())
