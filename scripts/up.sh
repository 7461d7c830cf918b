#!/usr/bin/env bash
# Set everything up (Debian packages as root, .venv) and run the main job: `imsso up` on the
# embedded defaults (local driver, SQLite in the data folder). Arguments go to `imsso up`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec .venv/bin/imsso up "$@"
