#!/usr/bin/env bash
# Install what scripts/openstack/start.sh runs: MariaDB and RabbitMQ from Debian (their own
# services stay stopped: start.sh runs private instances), and Keystone + Heat with uWSGI and the
# openstack/heat command-line clients from PyPI in a venv of their own (.venv-openstack beside
# .venv, or $IMSSO_OPENSTACK_VENV), pinned by constraints.txt. Fast when everything is there.
# Sourced, it only defines OPENSTACK_DEBIAN_PACKAGES.
set -euo pipefail

OPENSTACK_DEBIAN_PACKAGES=(mariadb-server rabbitmq-server python3 python3-venv procps iproute2 curl)

# The PyPI half. pyuwsgi is uWSGI as a binary wheel (its `uwsgi` command runs the venv's Python):
# nothing to compile. PyMySQL is the pure-Python MySQL driver, for the same reason.
PIP_REQUIREMENTS=(
  keystone==30.0.0 openstack-heat==27.0.1 pyuwsgi PyMySQL
  python-openstackclient python-heatclient
)

[[ ${BASH_SOURCE[0]} == "$0" ]] || return 0

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
PYTHON="${PYTHON:-python3}"

missing_packages() {
  local p
  for p in "${OPENSTACK_DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || echo "$p"
  done
}

install_packages() {
  local missing policy=/usr/sbin/policy-rc.d
  command -v dpkg-query >/dev/null || die "not a Debian system"
  mapfile -t missing < <(missing_packages)
  ((${#missing[@]})) || return 0
  ((EUID == 0)) || die "missing Debian packages; as root: apt-get install ${missing[*]}"
  # The packages' maintainer scripts would start the distribution's MariaDB (3306) and RabbitMQ
  # (5672, epmd 4369, on every address). policy-rc.d answering 101 forbids that; an existing
  # policy (containers usually ship one) is left as it is.
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\n# temporary, from scripts/openstack/install.sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    # shellcheck disable=SC2064 # expand now: $policy is local
    trap "rm -f '$policy'" EXIT
  fi
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends --no-upgrade "${missing[@]}" >/dev/null
}

# The distribution's instances are not ours: keep them stopped (and, under systemd, off at boot).
stop_distribution_services() {
  ((EUID == 0)) || return 0
  if [[ -d /run/systemd/system ]]; then
    systemctl disable --now --quiet mariadb.service rabbitmq-server.service 2>/dev/null || true
    return 0
  fi
  # No systemd (a container): only the SysV scripts could have started them.
  if pgrep -u mysql -x mariadbd >/dev/null 2>&1; then
    log "stopping the distribution's MariaDB"
    /etc/init.d/mariadb stop >/dev/null || true
  fi
  if pgrep -u rabbitmq -x beam.smp >/dev/null 2>&1; then
    log "stopping the distribution's RabbitMQ"
    /etc/init.d/rabbitmq-server stop >/dev/null || true
  fi
  # Its Erlang port mapper outlives it, on 0.0.0.0:4369.
  if pgrep -u rabbitmq -x epmd >/dev/null 2>&1; then
    epmd -kill >/dev/null 2>&1 || true
  fi
}

setup_venv() {
  local stamp="$VENV/.imsso-openstack" wanted
  if ! "$VENV/bin/python" -c '' 2>/dev/null; then
    log "creating $VENV"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
  fi
  wanted="$(cat "$OS_HERE/constraints.txt" <(printf '%s\n' "${PIP_REQUIREMENTS[@]}") | sha256sum |
    cut -d' ' -f1) $("$VENV/bin/python" -VV | head -1)"
  if [[ -f $stamp && "$(cat "$stamp")" == "$wanted" ]]; then
    return 0
  fi
  log "pip install ${PIP_REQUIREMENTS[*]} (about a minute)"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    -c "$OS_HERE/constraints.txt" "${PIP_REQUIREMENTS[@]}"
  echo "$wanted" >"$stamp"
}

started=$SECONDS
install_packages
stop_distribution_services
setup_venv
log "installed ($((SECONDS - started))s)"
