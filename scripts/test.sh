#!/usr/bin/env bash
# Run the tests: scripts/test.sh [pytest arguments]; without arguments, all of tests/.
# Also installs and starts the Keystone and Heat the tests in tests/openstack run against
# (idempotent; IMSSO_SKIP_OPENSTACK=1 leaves them out, and those tests are then skipped).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh
if [[ "${IMSSO_SKIP_OPENSTACK:-0}" != 1 ]]; then
  bash scripts/openstack/install.sh
  bash scripts/openstack/start.sh
  export IMSSO_REQUIRE_OPENSTACK=1  # from here on, Keystone or Heat missing is a failure
fi
(($#)) || set -- tests

# The tree stays typed, linted and in one format (configured in pyproject.toml).
.venv/bin/ruff check src tests bench
.venv/bin/ruff format --check src tests bench
.venv/bin/mypy

status=0
.venv/bin/python -m pytest -q -ra "$@" || status=$?
if ((status == 5)); then
  echo "test.sh: no tests were collected: that is a failure" >&2
fi
exit "$status"
