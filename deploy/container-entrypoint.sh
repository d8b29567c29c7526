#!/bin/sh
# Entry point of the jobfleet image: runs `jobfleet "$@"`.
#
# In a cluster every node needs the same secret.key, tls/ (the agents' CA) and
# bootstrap.json (the admin credentials). With JOBFLEET_SHARED_DIR set to a volume
# the nodes share (mode 0700, uid 10001):
# - the seed node (JOBFLEET_SEED=1) copies them there once it has made them;
# - every other node waits for them and copies them into its own data directory
#   before it starts for the first time.
# Without JOBFLEET_SHARED_DIR, copy those files yourself (docs/deploy.md).
set -eu
data=${JOBFLEET_DATA_DIR:-/var/lib/jobfleet}
shared=${JOBFLEET_SHARED_DIR:-}
files="secret.key bootstrap.json tls"

if [ -n "$shared" ] && [ "${1:-}" = server ]; then
    if [ "${JOBFLEET_SEED:-0}" = 1 ]; then
        (
            until [ -f "$data/bootstrap.json" ] && [ -f "$data/tls/ca.pem" ]; do sleep 1; done
            for f in $files; do
                [ -e "$shared/$f" ] || cp -a "$data/$f" "$shared/$f"
            done
            echo "jobfleet-entrypoint: shared the cluster's keys in $shared" >&2
        ) &
    elif [ ! -f "$data/secret.key" ]; then
        echo "jobfleet-entrypoint: waiting for the seed node's keys in $shared" >&2
        until [ -f "$shared/secret.key" ] && [ -f "$shared/bootstrap.json" ] \
            && [ -f "$shared/tls/ca.pem" ]; do sleep 1; done
        for f in $files; do cp -a "$shared/$f" "$data/$f"; done
    fi
fi
exec jobfleet "$@"
