#!/usr/bin/env bash
# The MedVR pipeline end to end on a CPU (random-weight tiny model): bash scripts/demo.sh [--out DIR]
#
# Installs everything first (scripts/install.sh), then runs python -m medvr_verl.demo: rollout with
# EVR forks, CCA rewards and GRPO advantages through the plugin's and veRL's real code, a summary
# table, and PNG overlays of the zooms and consensus (default folder ./medvr_demo).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/install.sh
. scripts/install.sh
python -m medvr_verl.demo "$@"
