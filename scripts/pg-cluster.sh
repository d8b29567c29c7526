#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the test suite, entirely inside one directory.
#
#   scripts/pg-cluster.sh start DIR   start it; print its SQLAlchemy URL (also written to DIR/url)
#   scripts/pg-cluster.sh stop DIR    kill it and remove DIR
#   scripts/pg-cluster.sh bindir      print the PostgreSQL server binary directory, or fail
#
# Durability is off: the data is thrown away, and speed is what the tests need.
set -euo pipefail

PG_OS_USER=jobfleet-pg   # postgres refuses to run as root
PG_ROLE=jobfleet         # the superuser the tests connect as
MARKER=.jobfleet-pg-cluster

die() { echo "pg-cluster: $*" >&2; exit 1; }

bindir() {
    local pg_ctl dir
    if pg_ctl=$(command -v pg_ctl); then
        # resolve symlinks so initdb and postgres are taken from the same installation
        dirname "$(readlink -f "$pg_ctl")"
        return
    fi
    # Debian keeps the server binaries off PATH; prefer the newest major version
    while read -r dir; do
        if [ -x "$dir/pg_ctl" ]; then
            echo "$dir"
            return
        fi
    done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -t/ -k5,5nr)
    return 1
}

# Run a command as the OS user that owns the cluster, from inside DIR so that
# nothing depends on the caller's working directory being readable.
as_owner() {
    local user=$1
    shift
    if [ "$(id -u)" -eq 0 ]; then
        (cd "$DIR" && runuser -u "$user" -- "$@")
    else
        (cd "$DIR" && "$@")
    fi
}

# A start that fails leaves DIR as it found it (empty, or absent if start made it):
# a marker left behind would make the next start refuse DIR as not empty.
undo_start() {
    local status=$?
    trap - EXIT
    if [ -f "$DIR/data/postmaster.pid" ]; then
        as_owner "$(stat -c %U "$DIR/data")" "$BIN/pg_ctl" --pgdata="$DIR/data" \
            --mode=immediate --wait stop >/dev/null 2>&1 || true
    fi
    # DIR was empty when start took it: everything in it is start's own
    find "$DIR" -mindepth 1 -delete
    [ "$MADE_DIR" = no ] || rmdir -- "$DIR"
    exit "$status"
}

start() {
    local bin user port url attempt
    bin=$(bindir) || die "no PostgreSQL server binaries (pg_ctl) found"

    if [ "$(id -u)" -eq 0 ]; then
        user=$PG_OS_USER
        if ! id -u "$user" >/dev/null 2>&1; then
            # a concurrent start may win the race; that is fine as long as the user exists
            useradd --system --user-group --no-create-home --home-dir /nonexistent \
                --shell /usr/sbin/nologin "$user" || id -u "$user" >/dev/null
        fi
    else
        user=$(id -un)
    fi

    MADE_DIR=no
    [ -e "$DIR" ] || MADE_DIR=yes
    mkdir -p "$DIR"
    DIR=$(cd "$DIR" && pwd)
    [ -z "$(ls -A "$DIR")" ] || die "$DIR is not empty"
    BIN=$bin
    trap undo_start EXIT
    touch "$DIR/$MARKER"
    mkdir "$DIR/sock"
    [ "$(id -u)" -ne 0 ] || chown -R "$user:" "$DIR"
    as_owner "$user" test -w "$DIR" \
        || die "$user cannot write to $DIR (is a parent directory closed to it?)"

    as_owner "$user" "$bin/initdb" --pgdata="$DIR/data" --username="$PG_ROLE" \
        --auth=trust --encoding=UTF8 --locale=C --no-sync --no-instructions \
        >"$DIR/initdb.log" 2>&1 || { cat "$DIR/initdb.log" >&2; die "initdb failed"; }

    # Debian's compiled-in socket directory (/var/run/postgresql) is not ours to use.
    cat >>"$DIR/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR/sock'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
EOF
    cat >"$DIR/data/pg_hba.conf" <<EOF
local all all trust
host  all all 127.0.0.1/32 trust
EOF

    # Pick a random high port and let postgres tell us if it is taken:
    # probing first would race with other clusters starting at the same time.
    for attempt in 1 2 3 4 5 6 7 8 9 10; do
        port=$((20000 + RANDOM % 30000))
        : >"$DIR/postgres.log"
        [ "$(id -u)" -ne 0 ] || chown "$user:" "$DIR/postgres.log"
        if as_owner "$user" "$bin/pg_ctl" --pgdata="$DIR/data" --log="$DIR/postgres.log" \
            --wait --timeout=60 --options="-p $port" start >/dev/null; then
            url="postgresql+asyncpg://$PG_ROLE@127.0.0.1:$port/postgres"
            echo "$url" >"$DIR/url"
            trap - EXIT
            echo "$url"
            return
        fi
        grep -q 'Address already in use' "$DIR/postgres.log" \
            || { cat "$DIR/postgres.log" >&2; die "postgres did not start"; }
        echo "pg-cluster: port $port is taken (attempt $attempt), trying another" >&2
    done
    die "no free port found"
}

stop() {
    [ -d "$DIR" ] || return 0
    # refuse to rm -rf anything this script did not create
    [ -f "$DIR/$MARKER" ] || die "$DIR was not created by $0; not touching it"
    DIR=$(cd "$DIR" && pwd)
    if [ -f "$DIR/data/postmaster.pid" ]; then
        as_owner "$(stat -c %U "$DIR/data")" "$(bindir)/pg_ctl" --pgdata="$DIR/data" \
            --mode=immediate --wait stop >/dev/null \
            || echo "pg-cluster: pg_ctl stop failed; removing $DIR anyway" >&2
    fi
    rm -rf -- "$DIR"
}

usage="usage: $0 start DIR | stop DIR | bindir"
case "${1:-}" in
    start | stop)
        [ $# -eq 2 ] || die "$usage"
        DIR=$2
        "$1"
        ;;
    bindir) bindir ;;
    *) die "$usage" ;;
esac
