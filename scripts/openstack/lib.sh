# Shared by install.sh, start.sh and stop.sh (sourced, not run): paths, ports and the helpers that
# start and stop one background service by its pid file.
# shellcheck shell=bash disable=SC2034 # the settings are for the scripts that source this

OS_HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OS_ROOT="$(cd "$OS_HERE/../.." && pwd)"
VENV="${IMSSO_OPENSTACK_VENV:-$OS_ROOT/.venv-openstack}"
STATE="${IMSSO_OPENSTACK_DIR:-/var/tmp/imsso-openstack}"

# Every server listens on 127.0.0.1 only. Keystone and Heat keep their usual ports (clients and
# the service catalog name them); MariaDB, RabbitMQ and its Erlang port mapper use non-default
# ones so that a distribution-started instance, if any, never clashes with ours.
HOST=127.0.0.1
KEYSTONE_PORT=5000
HEAT_PORT=8004
DB_PORT=3307
AMQP_PORT=5673
EPMD_PORT=4371
ERL_DIST_PORT=25673
REGION=RegionOne
KEYSTONE_URL="http://$HOST:$KEYSTONE_PORT/v3"

# Stop order (start is the reverse): Heat before Keystone, MariaDB last.
SERVICES=(heat-engine heat-api keystone rabbitmq epmd mariadb)

log() { printf '%s openstack: %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { log "ERROR: $*" >&2; exit 1; }

# Field 22 of /proc/PID/stat: the start time in clock ticks since boot. A pid file holds "PID
# STARTTIME", so a file left from before a reboot never matches whatever process got that pid.
# A zombie counts as gone (PID 1 in a container may be slow to reap, or never reap).
proc_start_time() {
  local stat fields
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }" # the command name (field 2) may hold spaces: cut up to its ')'
  read -r -a fields <<<"$stat"
  [[ ${fields[0]} != Z ]] || return 1
  echo "${fields[19]}"
}

# One start.sh or stop.sh at a time on a state folder (held until the script exits).
lock_state() {
  mkdir -p "$STATE/run"
  exec 9>"$STATE/run/lock"
  flock -w 300 9 || die "$STATE is locked by another start.sh or stop.sh"
}

pid_file() { echo "$STATE/run/$1.pid"; }

# Prints the pid of service NAME and succeeds when it is running.
service_pid() {
  local f pid start
  f="$(pid_file "$1")"
  [[ -r $f ]] || return 1
  read -r pid start <"$f" || return 1
  [[ -n $pid && -n $start && "$(proc_start_time "$pid")" == "$start" ]] || return 1
  echo "$pid"
}

running() { service_pid "$1" >/dev/null; }

# launch NAME CMD...: run CMD in a session of its own (so that stopping it reaches its children
# through the process group), detached from our stdin, output appended to log/NAME.log.
launch() {
  local name=$1 pid
  shift
  mkdir -p "$STATE/run" "$STATE/log"
  setsid "$@" >>"$STATE/log/$name.log" 2>&1 </dev/null 9>&- & # 9: lock_state's, not theirs
  pid=$!
  echo "$pid $(proc_start_time "$pid")" >"$(pid_file "$name")"
}

# Succeeds while process group PGID has a member that is not a zombie.
group_alive() {
  ps -e -o pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ { found = 1 } END { exit !found }'
}

# stop_service NAME [SECONDS]: SIGTERM to the leader, then SIGKILL to its whole process group
# if anything of it is still there when the time is up.
stop_service() {
  local name=$1 timeout=${2:-20} pid deadline
  if ! pid="$(service_pid "$name")"; then
    rm -f "$(pid_file "$name")"
    return 0
  fi
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + timeout))
  while group_alive "$pid" && ((SECONDS < deadline)); do
    sleep 0.2
  done
  if group_alive "$pid"; then
    log "$name did not stop within ${timeout}s: SIGKILL"
    kill -KILL -- "-$pid" 2>/dev/null || true
    deadline=$((SECONDS + 10))
    while group_alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
  fi
  rm -f "$(pid_file "$name")"
}
