#!/usr/bin/env bash
# Make DATABASE_URL point at a PostgreSQL server with TimescaleDB, and Redis be up.
#
# Idempotent: on a ready machine it only checks and returns in a second or two.
#   - a server that already has the extension is used as it is;
#   - with a Docker engine and no local PostgreSQL, `docker compose up -d timescaledb redis`;
#   - on Debian/Ubuntu as root: installs PostgreSQL if absent, builds TimescaleDB's Apache-2
#     edition from Debian's source package, preloads it, restarts the cluster;
#   - starts PostgreSQL and Redis when they are stopped; creates the database.
# Anything it cannot do ends with a message saying what to do instead.
set -euo pipefail

DATABASE_URL=${DATABASE_URL:-postgresql:///streamstats}
TIMESCALEDB_SUITE=${TIMESCALEDB_SUITE:-trixie}   # the Debian release whose source package we build
WORK=${STREAMSTATS_BUILD_DIR:-/var/tmp/streamstats-timescaledb}

say() { printf 'provision: %s\n' "$*" >&2; }
die() { printf 'provision: error: %s\n' "$*" >&2; exit 1; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }

# apt-get install, refreshing the package lists first when they are missing or stale.
apt_install() {
    command -v apt-get >/dev/null || return 1
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1 \
        || { as_root apt-get update -q >/dev/null \
             && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null; }
}

command -v python3 >/dev/null || apt_install python3 || die "python3 is required"
command -v psql >/dev/null || apt_install postgresql-client || true

# The database named by DATABASE_URL, and a URL for the maintenance database on the same server.
dbname=$(python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(p.path.lstrip("/") or "postgres")' "$DATABASE_URL")
admin_url=$(python3 -c '
import sys, urllib.parse as u
url = sys.argv[1]; p = u.urlsplit(url)
tail = url[len(p.scheme) + 3 + len(p.netloc) + len(p.path):]
print(f"{p.scheme}://{p.netloc}/postgres{tail}")' "$DATABASE_URL")

psql_admin() { psql "$admin_url" -XAtq -v ON_ERROR_STOP=1 "$@"; }
server_up() { psql_admin -c 'select 1' >/dev/null 2>&1; }

pg_major() {
    if [ -d /etc/postgresql ]; then ls /etc/postgresql | sort -V | tail -n 1; fi
}

cluster_online() {
    command -v pg_lsclusters >/dev/null && pg_lsclusters -h 2>/dev/null | awk '$4 == "online"' | grep -q .
}

start_postgres() {
    local major; major=$(pg_major)
    [ -n "$major" ] || return 1
    cluster_online && return 0
    say "starting PostgreSQL $major"
    as_root pg_ctlcluster --skip-systemctl-redirect "$major" main start 2>/dev/null \
        || as_root pg_ctlcluster "$major" main start
    for _ in $(seq 1 30); do server_up && return 0; sleep 0.5; done
    return 1
}

install_postgres() {
    command -v apt-get >/dev/null || return 1
    say "installing PostgreSQL from the distribution's packages"
    apt_install postgresql || return 1
    start_postgres
}

# A fresh Debian cluster knows only the `postgres` role: give the calling user a superuser role
# of the same name so socket URLs such as postgresql:///streamstats work without a password.
ensure_role() {
    local user; user=$(id -un)
    [ "$(id -u)" = 0 ] && command -v runuser >/dev/null && cluster_online || return 1
    if [ -z "$(runuser -u postgres -- psql -XAtq -c "select 1 from pg_roles where rolname = '$user'" 2>/dev/null)" ]; then
        say "creating the PostgreSQL role $user (superuser, for local connections)"
        runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1 -c "create role \"$user\" superuser login" >/dev/null
    fi
}

has_timescaledb() {
    [ "$(psql_admin -c "select count(*) from pg_available_extensions where name = 'timescaledb'")" = 1 ]
}

preloaded() {
    psql_admin -c 'show shared_preload_libraries' | grep -q timescaledb
}

# Debian's mirror as this machine already knows it, so no host is hard-wired here.
debian_mirror() {
    local uri
    uri=$(grep -hE '^\s*URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -E '/debian/?$' | head -n 1 || true)
    if [ -z "$uri" ]; then
        uri=$(grep -hE '^\s*deb\s' /etc/apt/sources.list 2>/dev/null | awk '{ for (i = 2; i <= NF; i++) if ($i ~ /^(https?|ftp):/) { print $i; exit } }' | grep -E '/debian/?$' | head -n 1 || true)
    fi
    printf '%s' "$uri"
}

build_timescaledb() {
    local major pgconfig mirror lists src
    major=$(psql_admin -c 'show server_version_num' | cut -c1-2)
    command -v apt-get >/dev/null || die "TimescaleDB is missing and this is not a Debian-like system.
  Install TimescaleDB for PostgreSQL $major (see its documentation), or set DATABASE_URL to a server that has it."
    [ "$(id -u)" = 0 ] || command -v sudo >/dev/null || die "TimescaleDB is missing; building it needs root. Re-run this script as root."
    say "TimescaleDB is missing: building its Apache-2 edition from Debian's source package (about a minute)"
    apt_install "postgresql-server-dev-$major" libssl-dev cmake dpkg-dev gcc make \
        || die "could not install the build tools (postgresql-server-dev-$major libssl-dev cmake dpkg-dev)"
    pgconfig=/usr/lib/postgresql/$major/bin/pg_config
    mirror=$(debian_mirror)
    [ -n "$mirror" ] || die "no Debian mirror found in /etc/apt/sources.list*; add one, or install TimescaleDB yourself"
    mkdir -p "$WORK/lists/partial"
    printf 'deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s %s main\n' \
        "$mirror" "$TIMESCALEDB_SUITE" > "$WORK/sources.list"
    # Our own sources file and lists directory: the system's apt configuration stays untouched.
    local aptopts=(-o "Dir::Etc::SourceList=$WORK/sources.list" -o Dir::Etc::SourceParts=/dev/null
                   -o "Dir::State::Lists=$WORK/lists" -o APT::Sandbox::User=root)
    apt-get "${aptopts[@]}" update -q >/dev/null || die "apt-get update for the $TIMESCALEDB_SUITE sources failed"
    rm -rf "$WORK/src"; mkdir -p "$WORK/src"
    (cd "$WORK/src" && apt-get "${aptopts[@]}" source --download-only -q timescaledb >/dev/null) \
        || die "could not download TimescaleDB's source package"
    (cd "$WORK/src" && dpkg-source --no-check -x ./*.dsc tsdb >/dev/null)
    src="$WORK/src/tsdb"
    say "building $(basename "$WORK"/src/*.dsc .dsc)"
    (cd "$src" && ./bootstrap -DAPACHE_ONLY=1 -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF \
        -DWARNINGS_AS_ERRORS=OFF -DPG_CONFIG="$pgconfig" >"$WORK/build.log" 2>&1 \
        && make -C build -j"$(nproc)" >>"$WORK/build.log" 2>&1 \
        && as_root make -C build install >>"$WORK/build.log" 2>&1) \
        || die "building TimescaleDB failed; see $WORK/build.log"
}

preload_timescaledb() {
    local major conf
    major=$(psql_admin -c 'show server_version_num' | cut -c1-2)
    conf=/etc/postgresql/$major/main/conf.d/timescaledb.conf
    [ -d "$(dirname "$conf")" ] || die "TimescaleDB is installed but not preloaded, and $(dirname "$conf") does not exist.
  Add shared_preload_libraries = 'timescaledb' to postgresql.conf and restart PostgreSQL."
    say "adding timescaledb to shared_preload_libraries and restarting PostgreSQL $major"
    local current
    current=$(psql_admin -c 'show shared_preload_libraries')
    printf "shared_preload_libraries = '%s'\ntimescaledb.telemetry_level = off\n" \
        "${current:+$current,}timescaledb" | as_root tee "$conf" >/dev/null
    as_root pg_ctlcluster --skip-systemctl-redirect "$major" main restart 2>/dev/null \
        || as_root pg_ctlcluster "$major" main restart
    for _ in $(seq 1 30); do server_up && return 0; sleep 0.5; done
    die "PostgreSQL did not come back after the restart"
}

ensure_redis() {
    local url=${REDIS_URL:-redis://127.0.0.1:6379/0}
    if command -v redis-cli >/dev/null && redis-cli -u "$url" ping >/dev/null 2>&1; then return 0; fi
    command -v redis-server >/dev/null || { say "installing Redis"; apt_install redis-server || true; }
    if command -v redis-server >/dev/null; then
        say "starting Redis"
        mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
        redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
            --dir /var/lib/redis --logfile /var/log/redis/streamstats.log >/dev/null
        for _ in $(seq 1 20); do redis-cli -u "$url" ping >/dev/null 2>&1 && return 0; sleep 0.25; done
    fi
    say "warning: Redis is not reachable at $url (only needed with REDIS_URL set, and for the scale-out tests)"
}

main() {
    if ! server_up; then
        { [ -n "$(pg_major)" ] && start_postgres; } || install_postgres \
            || { command -v docker >/dev/null && docker info >/dev/null 2>&1 \
                 && say "no local PostgreSQL: starting docker compose services" \
                 && docker compose up -d --wait timescaledb redis; } \
            || true
        server_up || ensure_role || true
        server_up || die "cannot reach PostgreSQL at $admin_url.
  Start a PostgreSQL server with TimescaleDB and set DATABASE_URL, or run this script as root on Debian/Ubuntu."
    fi
    has_timescaledb || build_timescaledb
    has_timescaledb || die "TimescaleDB is still not available after the build"
    preloaded || preload_timescaledb
    if [ "$(psql_admin -c "select count(*) from pg_database where datname = '$dbname'")" = 0 ]; then
        say "creating database $dbname"
        psql_admin -c "create database \"$dbname\""
    fi
    ensure_redis
    say "ready: $DATABASE_URL ($(psql "$DATABASE_URL" -XAtq -c "select 'PostgreSQL ' || current_setting('server_version') || ', TimescaleDB available ' || default_version from pg_available_extensions where name = 'timescaledb'"))"
}

main "$@"
