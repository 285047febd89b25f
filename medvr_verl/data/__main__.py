"""``python -m medvr_verl.data``: see :mod:`medvr_verl.data.cli`."""

import sys

from medvr_verl.data.cli import main

sys.exit(main())
