#!/usr/bin/env bash
# Make this checkout ready for the tests: the Debian packages (when run as root) and .venv with
# imsso (editable) and pytest. Fast when everything is already there.
# Sourced (by .ci/run), it only defines DEBIAN_PACKAGES.
set -euo pipefail

DEBIAN_PACKAGES=(
  python3 python3-venv
  kamailio kamailio-extra-modules kamailio-utils-modules kamailio-sqlite-modules
  kamailio-json-modules kamailio-ims-modules kamailio-presence-modules
  sip-tester postgresql procps iproute2 curl
)

missing_packages() {
  local p
  for p in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || echo "$p"
  done
}

install_packages() {
  local missing
  command -v dpkg-query >/dev/null || { echo "setup: not Debian, skipping packages" >&2; return; }
  mapfile -t missing < <(missing_packages)
  ((${#missing[@]})) || return 0
  if [[ $EUID -ne 0 ]]; then
    echo "setup: missing Debian packages (as root: apt-get install ${missing[*]})" >&2
    return 0
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends --no-upgrade "${missing[@]}"
}

setup_venv() {
  local stamp=.venv/.imsso-setup wanted
  if ! .venv/bin/python -c '' 2>/dev/null; then
    echo "setup: creating .venv"
    rm -rf .venv
    python3 -m venv .venv
  fi
  # Reinstall only when the project's metadata changed (the install is editable: code is live).
  wanted="$(sha256sum pyproject.toml | cut -d' ' -f1) $(.venv/bin/python -VV | head -1)"
  if [[ -f $stamp && "$(cat "$stamp")" == "$wanted" ]]; then
    return 0
  fi
  echo "setup: pip install -e '.[test]'"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
  echo "$wanted" >"$stamp"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  cd "$(dirname "${BASH_SOURCE[0]}")/.."
  install_packages
  setup_venv
fi
