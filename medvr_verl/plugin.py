"""Entry point of group ``verl.plugins``: importing this module registers medvr-verl with veRL.

veRL imports every ``verl.plugins`` entry point at the end of ``import verl`` (in the driver and in
every Ray worker) and hides load errors at DEBUG level, so a failure is logged loudly here first.
"""

import logging

from medvr_verl import register

try:
    register()
except Exception:  # pragma: no cover - only reached when the install is broken
    logging.getLogger("medvr_verl").exception("medvr-verl failed to register with veRL")
    raise
