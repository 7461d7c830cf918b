#!/usr/bin/env bash
# Start a private OpenStack Keystone + Heat on 127.0.0.1 for the integration tests and the
# benchmark, with their own MariaDB and RabbitMQ, all under ${IMSSO_OPENSTACK_DIR:-/var/tmp/
# imsso-openstack}: configs, data, pid files (run/), logs (log/), passwords (secrets.env, made
# once), and what clients need (env.json, clouds.yaml). Needs install.sh first.
#
# Re-runnable: what runs is left alone, what is missing is started (after a reboot: everything,
# on the existing data), one-time steps (database init, Keystone bootstrap, Heat's and the test
# users' Keystone objects) run once. Returns when alice gets a token and Heat lists her stacks.
#
#   Keystone  http://127.0.0.1:5000/v3       uWSGI, one process with threads
#   Heat      http://127.0.0.1:8004/v1/...   uWSGI (API) + heat-engine, over RabbitMQ
#   MariaDB   127.0.0.1:3307                 RabbitMQ 127.0.0.1:5673 (epmd 4371, dist 25673)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TIMEOUT="${IMSSO_OPENSTACK_TIMEOUT:-240}" # seconds for the whole bring-up
# Each engine process takes about 140 MB; two use both cores of a small machine.
ENGINE_WORKERS="${IMSSO_HEAT_ENGINE_WORKERS:-2}"
HEAT_URL="http://$HOST:$HEAT_PORT/v1/%(tenant_id)s" # catalog form
DB_SOCKET="$STATE/mysql/mysqld.sock"
MY_CNF="$STATE/mysql/my.cnf"
ME="$(id -un)"
MY_GROUP="$(id -gn)"

STARTED=$SECONDS
DEADLINE=$((SECONDS + TIMEOUT))

PATH="$PATH:/usr/sbin" # mariadbd
[[ -x $VENV/bin/keystone-manage && -x $VENV/bin/uwsgi ]] ||
  die "$VENV is not complete: run scripts/openstack/install.sh first"
for tool in mariadbd mariadb-install-db mariadb epmd curl; do
  command -v "$tool" >/dev/null || die "$tool not found: run scripts/openstack/install.sh first"
done

umask 077 # passwords and keys live here
mkdir -p "$STATE"/{run,log,keystone,heat,mysql,rabbitmq}
lock_state

# ---------------------------------------------------------------------------------------------
# Helpers

# Names of everything secret.env holds; a missing one is generated (so a new one can be added).
SECRETS=(ADMIN_PASSWORD HEAT_PASSWORD HEAT_DOMAIN_ADMIN_PASSWORD ALICE_PASSWORD BOB_PASSWORD
  IMSSO_PASSWORD DB_KEYSTONE_PASSWORD DB_HEAT_PASSWORD RABBIT_PASSWORD HEAT_AUTH_ENCRYPTION_KEY)

ensure_secrets() {
  local f="$STATE/secrets.env" name
  touch "$f"
  for name in "${SECRETS[@]}"; do
    # 32 hex digits: fine in URLs and configs, and the 32 characters Heat's encryption key needs.
    grep -q "^$name=" "$f" || echo "$name=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')" >>"$f"
  done
  # shellcheck disable=SC1090
  source "$f"
}

remaining() { echo $((DEADLINE > SECONDS ? DEADLINE - SECONDS : 0)); }

# wait_until SERVICE DESCRIPTION SECONDS CMD...: poll CMD until it succeeds; fail after SECONDS
# (or at the overall deadline), or as soon as SERVICE is no longer running (showing its log).
# uWSGI respawns a worker that failed to load its app: only the time limit catches that.
wait_until() {
  local service=$1 what=$2 limit=$3 until
  shift 3
  until=$((SECONDS + limit < DEADLINE ? SECONDS + limit : DEADLINE))
  until "$@" >/dev/null 2>&1; do
    if ! running "$service"; then
      tail -n 30 "$STATE/log/$service.log" >&2 || true
      die "$service exited while waiting for $what (log: $STATE/log/$service.log)"
    fi
    if ((SECONDS >= until)); then
      tail -n 30 "$STATE/log/$service.log" >&2 || true
      die "$what: not ready in time (log: $STATE/log/$service.log)"
    fi
    sleep 0.2
  done
}

# once NAME KEY CMD...: run CMD unless it last succeeded with the same KEY (a version, a hash).
once() {
  local marker="$STATE/run/once-$1" key=$2
  shift 2
  [[ -f $marker && "$(cat "$marker")" == "$key" ]] && return 0
  "$@"
  echo "$key" >"$marker"
}

tcp_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
http_ok() { curl -fsS -o /dev/null --max-time 5 "$1"; }
# shellcheck disable=SC2120 # called with arguments through wait_until
sql() { mariadb --defaults-file="$MY_CNF" -u root "$@"; }
engine_registered() { # since (UTC)
  (($(sql -N -B heat -e "SELECT COUNT(*) FROM service WHERE created_at >= '$1'") > 0))
}
db_url() { echo "mysql+pymysql://$1:$2@$HOST:$DB_PORT/$1?charset=utf8mb4"; } # user = database
venv_version() { "$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('$1'))"; }

# ---------------------------------------------------------------------------------------------
# Configuration (rewritten each time: cheap, and follows changes to this script)

write_configs() {
  cat >"$MY_CNF" <<EOF
[client]
socket = $DB_SOCKET

[mysqld]
user = $ME
datadir = $STATE/mysql/data
socket = $DB_SOCKET
pid-file = $STATE/mysql/mysqld.pid
log-error = $STATE/log/mariadb.log
bind-address = $HOST
port = $DB_PORT
skip-name-resolve
skip-log-bin
character-set-server = utf8mb4
collation-server = utf8mb4_general_ci
max_connections = 500
performance_schema = OFF
# A throw-away test database: speed over durability.
innodb_buffer_pool_size = 128M
innodb_log_file_size = 64M
innodb_flush_log_at_trx_commit = 2
innodb_doublewrite = 0
EOF

  # RabbitMQ: everything in the environment (rabbitmq_env) points here, never to /etc/rabbitmq.
  : >"$STATE/rabbitmq/rabbitmq-env.conf"
  echo '[].' >"$STATE/rabbitmq/enabled_plugins"
  cat >"$STATE/rabbitmq/rabbitmq.conf" <<EOF
listeners.tcp.1 = $HOST:$AMQP_PORT
# Created with the node's database, on the first start.
default_user = imsso
default_pass = $RABBIT_PASSWORD
disk_free_limit.absolute = 50MB
log.console = true
log.console.level = warning
log.file = false
EOF

  cat >"$STATE/keystone/keystone.conf" <<EOF
[DEFAULT]
debug = false

[database]
connection = $(db_url keystone "$DB_KEYSTONE_PASSWORD")

[token]
provider = fernet

[fernet_tokens]
key_repository = $STATE/keystone/fernet-keys

[fernet_receipts]
key_repository = $STATE/keystone/fernet-keys

[credential]
key_repository = $STATE/keystone/credential-keys

[cache]
# In-process: right with a single uWSGI process (see uwsgi.ini).
enabled = true
backend = oslo_cache.dict

[identity]
# bcrypt's minimum: the default (12) makes every password check take about half a second.
password_hash_rounds = 4
# bcrypt's own limit: above it Keystone logs a warning at every password check.
max_password_length = 72
EOF

  # One process with threads: with two, one of them served a stale catalog (the cache above is
  # per process). "Connection: close": clients reusing connections saw resets otherwise.
  cat >"$STATE/keystone/uwsgi.ini" <<EOF
[uwsgi]
http-socket = $HOST:$KEYSTONE_PORT
module = keystone.wsgi.api:application
$(uwsgi_common)
EOF

  cat >"$STATE/heat/heat.conf" <<EOF
[DEFAULT]
debug = false
transport_url = rabbit://imsso:$RABBIT_PASSWORD@$HOST:$AMQP_PORT/
region_name_for_services = $REGION
num_engine_workers = $ENGINE_WORKERS
auth_encryption_key = $HEAT_AUTH_ENCRYPTION_KEY
environment_dir = $VENV/etc/heat/environment.d
template_dir = $VENV/etc/heat/templates
# Users that templates create live in the domain "heat", managed by its own admin.
stack_user_domain_name = heat
stack_domain_admin = heat_domain_admin
stack_domain_admin_password = $HEAT_DOMAIN_ADMIN_PASSWORD
# Heat acts later (deletes, signals, after the user's token expired) through a trust from the
# user to the heat user. Empty: the trust carries all the user's roles in the project (member,
# heat_stack_owner); naming roles there makes stack creation fail for a user lacking one.
deferred_auth_method = trusts
trusts_delegated_roles =

[database]
connection = $(db_url heat "$DB_HEAT_PASSWORD")

[keystone_authtoken]
www_authenticate_uri = $KEYSTONE_URL
auth_url = $KEYSTONE_URL
auth_type = password
username = heat
password = $HEAT_PASSWORD
project_name = service
user_domain_name = Default
project_domain_name = Default

[trustee]
auth_type = password
auth_url = $KEYSTONE_URL
username = heat
password = $HEAT_PASSWORD
user_domain_name = Default

[clients_keystone]
auth_uri = http://$HOST:$KEYSTONE_PORT

[ec2authtoken]
auth_uri = $KEYSTONE_URL

[paste_deploy]
api_paste_config = $VENV/etc/heat/api-paste.ini
EOF

  # The API reads its configuration from the command line that uWSGI hands it (pyargv).
  cat >"$STATE/heat/uwsgi.ini" <<EOF
[uwsgi]
http-socket = $HOST:$HEAT_PORT
module = heat.wsgi.api:application
pyargv = --config-file $STATE/heat/heat.conf
$(uwsgi_common)
EOF
}

uwsgi_common() {
  cat <<EOF
master = true
processes = 1
threads = 8
enable-threads = true
lazy-apps = true
need-app = true
die-on-term = true
exit-on-reload = false
buffer-size = 65535
add-header = Connection: close
disable-logging = true
log-4xx = true
log-5xx = true
EOF
}

# RabbitMQ's settings, all in the environment: private files, loopback only (AMQP, epmd and the
# Erlang distribution port), its own epmd port, a HOME of its own for the Erlang cookie. The
# +sbwt flags stop idle schedulers from spinning, on a 2-core machine shared with the rest.
rabbitmq_env() {
  local r="$STATE/rabbitmq"
  RABBITMQ_ENV=(
    HOME="$r" RABBITMQ_CONF_ENV_FILE="$r/rabbitmq-env.conf"
    RABBITMQ_CONFIG_FILE="$r/rabbitmq.conf" RABBITMQ_ADVANCED_CONFIG_FILE="$r/advanced.config"
    RABBITMQ_ENABLED_PLUGINS_FILE="$r/enabled_plugins" RABBITMQ_MNESIA_BASE="$r/mnesia"
    RABBITMQ_LOG_BASE="$STATE/log" RABBITMQ_PID_FILE="$r/beam.pid"
    RABBITMQ_NODENAME=imsso@localhost RABBITMQ_NODE_IP_ADDRESS="$HOST"
    RABBITMQ_NODE_PORT="$AMQP_PORT" RABBITMQ_DIST_PORT="$ERL_DIST_PORT"
    ERL_EPMD_ADDRESS="$HOST" ERL_EPMD_PORT="$EPMD_PORT"
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1} +sbwt none +sbwtdcpu none +sbwtdio none"
  )
}

# ---------------------------------------------------------------------------------------------
# Services

start_mariadb() {
  if [[ ! -f $STATE/mysql/data/.imsso-initialised ]]; then
    log "initialising MariaDB in $STATE/mysql/data"
    rm -rf "$STATE/mysql/data"
    # root logs in over the unix socket as this OS user; nothing listens but 127.0.0.1.
    mariadb-install-db --defaults-file="$MY_CNF" --auth-root-authentication-method=socket \
      --auth-root-socket-user="$ME" --skip-test-db >>"$STATE/log/mariadb-install.log" 2>&1 ||
      die "mariadb-install-db failed (log: $STATE/log/mariadb-install.log)"
    touch "$STATE/mysql/data/.imsso-initialised"
  fi
  running mariadb || {
    log "starting MariaDB"
    launch mariadb mariadbd --defaults-file="$MY_CNF"
  }
}

databases() {
  sql <<EOF
CREATE DATABASE IF NOT EXISTS keystone;
CREATE DATABASE IF NOT EXISTS heat;
CREATE USER IF NOT EXISTS 'keystone'@'$HOST';
ALTER USER 'keystone'@'$HOST' IDENTIFIED BY '$DB_KEYSTONE_PASSWORD';
GRANT ALL ON keystone.* TO 'keystone'@'$HOST';
CREATE USER IF NOT EXISTS 'heat'@'$HOST';
ALTER USER 'heat'@'$HOST' IDENTIFIED BY '$DB_HEAT_PASSWORD';
GRANT ALL ON heat.* TO 'heat'@'$HOST';
EOF
}

start_rabbitmq() {
  # Our own epmd, started (and stopped) by us rather than left behind by the Erlang VM.
  running epmd || launch epmd env ERL_EPMD_ADDRESS="$HOST" epmd -port "$EPMD_PORT"
  running rabbitmq || {
    log "starting RabbitMQ"
    rabbitmq_env
    launch rabbitmq env "${RABBITMQ_ENV[@]}" /usr/lib/rabbitmq/bin/rabbitmq-server
  }
}

keystone_manage() {
  "$VENV/bin/keystone-manage" --config-file "$STATE/keystone/keystone.conf" "$@" \
    >>"$STATE/log/keystone-manage.log" 2>&1 ||
    die "keystone-manage $1 failed (log: $STATE/log/keystone-manage.log)"
}

keystone_setup() {
  log "Keystone: db_sync, keys, bootstrap"
  local jobs=() job
  # The key repositories are plain files: made alongside db_sync (each command takes seconds to
  # start). A repository that exists is kept: its keys sign the tokens already issued.
  if [[ ! -f $STATE/keystone/fernet-keys/0 ]]; then
    keystone_manage fernet_setup --keystone-user "$ME" --keystone-group "$MY_GROUP" &
    jobs+=($!)
  fi
  if [[ ! -f $STATE/keystone/credential-keys/0 ]]; then
    keystone_manage credential_setup --keystone-user "$ME" --keystone-group "$MY_GROUP" &
    jobs+=($!)
  fi
  keystone_manage db_sync
  for job in "${jobs[@]}"; do
    wait "$job" || die "keystone-manage failed (log: $STATE/log/keystone-manage.log)"
  done
  keystone_manage bootstrap --bootstrap-password "$ADMIN_PASSWORD" \
    --bootstrap-admin-url "$KEYSTONE_URL" --bootstrap-public-url "$KEYSTONE_URL" \
    --bootstrap-internal-url "$KEYSTONE_URL" --bootstrap-region-id "$REGION"
}

heat_db_sync() {
  "$VENV/bin/heat-manage" --config-file "$STATE/heat/heat.conf" db_sync \
    >>"$STATE/log/heat-manage.log" 2>&1
}

provision() {
  log "Keystone: Heat's service, domain and roles; users alice, bob, imsso"
  KEYSTONE_URL="$KEYSTONE_URL" HEAT_URL="$HEAT_URL" REGION="$REGION" \
    "$VENV/bin/python" "$OS_HERE/provision.py" provision "$STATE"
}

# ---------------------------------------------------------------------------------------------

ensure_secrets
write_configs

start_mariadb
start_rabbitmq # boots while the databases are prepared
wait_until mariadb "MariaDB" 60 sql -e 'SELECT 1'
databases

# Heat's schema in the background, while Keystone is set up and started.
heat_sync_pid=
if [[ "$(cat "$STATE/run/once-heat-db" 2>/dev/null)" != "$(venv_version openstack-heat)" ]]; then
  log "Heat: db_sync"
  heat_db_sync &
  heat_sync_pid=$!
fi

once keystone-setup "$(venv_version keystone) $(sha256sum <<<"$ADMIN_PASSWORD" | cut -c1-16)" \
  keystone_setup
running keystone || {
  log "starting Keystone"
  # In the environment of the process: pyuwsgi's Python starts before uWSGI reads its options,
  # so an "env =" there would not reach os.environ.
  launch keystone env OS_KEYSTONE_CONFIG_DIR="$STATE/keystone" \
    "$VENV/bin/uwsgi" --ini "$STATE/keystone/uwsgi.ini"
}

if [[ -n $heat_sync_pid ]]; then
  wait "$heat_sync_pid" || die "heat-manage db_sync failed (log: $STATE/log/heat-manage.log)"
  venv_version openstack-heat >"$STATE/run/once-heat-db"
fi
wait_until rabbitmq "RabbitMQ" 60 tcp_open "$HOST" "$AMQP_PORT"
engine_since=
running heat-engine || {
  log "starting heat-engine"
  engine_since="$(date -u '+%F %T')"
  launch heat-engine "$VENV/bin/heat-engine" --config-file "$STATE/heat/heat.conf"
}

wait_until keystone "Keystone" 60 http_ok "$KEYSTONE_URL"
# Provision again whenever provision.py or a password changed, or env.json went missing.
[[ -f $STATE/env.json ]] || rm -f "$STATE/run/once-provision"
once provision "$(cat "$OS_HERE/provision.py" "$STATE/secrets.env" | sha256sum | cut -d' ' -f1)" \
  provision

running heat-api || {
  log "starting heat-api"
  launch heat-api "$VENV/bin/uwsgi" --ini "$STATE/heat/uwsgi.ini"
}

# A request that reaches RabbitMQ before the engine has declared its queue is dropped, and the
# API thread that sent it hangs for the RPC timeout (60 s): ask Heat only once an engine worker
# has registered itself, which it does right after it started listening.
[[ -z $engine_since ]] || wait_until heat-engine "heat-engine" 90 engine_registered "$engine_since"

log "waiting for Keystone and Heat to answer alice"
KEYSTONE_URL="$KEYSTONE_URL" HEAT_URL="$HEAT_URL" REGION="$REGION" \
  "$VENV/bin/python" "$OS_HERE/provision.py" wait "$STATE" "$(remaining)" ||
  die "not ready; logs in $STATE/log"
for service in "${SERVICES[@]}"; do
  running "$service" || die "$service is not running (log: $STATE/log/$service.log)"
done

log "ready in $((SECONDS - STARTED))s: Keystone $KEYSTONE_URL, Heat http://$HOST:$HEAT_PORT/v1," \
  "region $REGION; users alice (tenant-a), bob (tenant-b), imsso (service)"
log "clients: $STATE/env.json, OS_CLIENT_CONFIG_FILE=$STATE/clouds.yaml" \
  "(clouds imsso-admin, imsso-alice, imsso-bob); stop: scripts/openstack/stop.sh"
