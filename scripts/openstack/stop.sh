#!/usr/bin/env bash
# Stop what scripts/openstack/start.sh started (by its pid files): heat-engine, heat-api,
# keystone, rabbitmq (and its epmd), mariadb, in that order, each given some seconds to stop
# cleanly before its whole process group gets SIGKILL. The data stays for the next start.sh;
# with --purge the state folder (data, passwords, logs) is removed too.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

purge=false
case "${1:-}" in
  --purge) purge=true ;;
  "") ;;
  *) die "usage: stop.sh [--purge]" ;;
esac

if [[ -d $STATE/run ]]; then
  lock_state
  for service in "${SERVICES[@]}"; do
    # MariaDB flushes InnoDB on its way down: give it longer.
    if [[ $service == mariadb ]]; then stop_service "$service" 60; else stop_service "$service" 20; fi
  done
fi

if $purge; then
  log "removing $STATE"
  rm -rf "$STATE"
fi
