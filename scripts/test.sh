#!/usr/bin/env bash
# Run the tests: scripts/test.sh [pytest arguments]; without arguments, all of tests/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh
(($#)) || set -- tests

status=0
.venv/bin/python -m pytest -q -ra "$@" || status=$?
if ((status == 5)); then
  echo "test.sh: no tests were collected: that is a failure" >&2
fi
exit "$status"
