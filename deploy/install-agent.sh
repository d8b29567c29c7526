#!/bin/sh
# Install the jobfleet agent on this host and enroll it from a token file.
#
#   sudo sh install-agent.sh --server https://jobfleet.example:8080 \
#       [--server https://jobfleet-b.example:8080 ...] --ip 10.0.0.12 \
#       --token-file ./token [--biz 2] [--bk-cloud-id 0] [--ca-file ca.pem] \
#       [--zipapp jobfleet-agent.pyz | --package jobfleet==0.1.0 | --package ./jobfleet.whl] \
#       [--label key=value ...] [--no-start]
#
# The token is copied to /etc/jobfleet-agent/enroll.token (mode 0600, root) and
# read from there by the agent (--enroll-token-file): it never appears on a
# command line or in the environment of the service. After the first start the
# agent holds its own credential in /var/lib/jobfleet-agent and the token file
# may be removed.
#
# --zipapp takes the one-file agent (`make agent-zipapp` builds
# dist/jobfleet-agent.pyz; any python3 >= 3.11 runs it, no pip needed). Without it,
# the agent is installed with pip into a virtual environment in
# /opt/jobfleet-agent/venv (python3 >= 3.11 and its venv module needed).
# Either way /opt/jobfleet-agent/bin/jobfleet-agent runs the agent.
set -eu

PREFIX=/opt/jobfleet-agent
CONF=/etc/jobfleet-agent
UNIT=/etc/systemd/system/jobfleet-agent.service
HERE=$(cd "$(dirname "$0")" && pwd)

servers=""
ip=""
token_file=""
zipapp=""
package="jobfleet"
extra=""
start=yes

die() { echo "install-agent: $*" >&2; exit 2; }
quote() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --server) [ $# -ge 2 ] || die "--server needs a URL"; servers="$servers --server $2"; shift 2 ;;
        --ip) [ $# -ge 2 ] || die "--ip needs an address"; ip=$2; shift 2 ;;
        --token-file) [ $# -ge 2 ] || die "--token-file needs a path"; token_file=$2; shift 2 ;;
        --zipapp) [ $# -ge 2 ] || die "--zipapp needs a path"; zipapp=$2; shift 2 ;;
        --package) [ $# -ge 2 ] || die "--package needs a requirement"; package=$2; shift 2 ;;
        --biz|--bk-cloud-id|--ca-file|--label|--hostname|--ipv6)
            [ $# -ge 2 ] || die "$1 needs a value"
            case "$2" in *[[:space:]]*) die "$1: no spaces, please" ;; esac
            extra="$extra $1 $2"; shift 2 ;;
        --no-start) start=no; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

[ -n "$servers" ] || die "give at least one --server URL"
[ -n "$ip" ] || die "give this host's --ip as jobfleet knows it"
[ "$(id -u)" -eq 0 ] || die "run as root: the agent switches to each task's account"
if [ ! -s /var/lib/jobfleet-agent/credential.json ]; then
    [ -n "$token_file" ] || die "give --token-file (the host is not enrolled yet)"
    [ -r "$token_file" ] || die "cannot read $token_file"
fi

umask 077
mkdir -p "$PREFIX/bin" "$CONF"
chmod 0755 "$PREFIX" "$PREFIX/bin"
chmod 0700 "$CONF"

# the program: a zipapp, or a virtual environment
if [ -n "$zipapp" ]; then
    [ -r "$zipapp" ] || die "cannot read $zipapp"
    install -m 0644 "$zipapp" "$PREFIX/jobfleet-agent.pyz"
    # -I -S: nothing of the host's Python environment (the archive holds what it needs);
    # -OO: no docstrings in memory (0.5 MiB of an idle agent)
    run='exec python3 -I -S -OO /opt/jobfleet-agent/jobfleet-agent.pyz "$@"'
else
    command -v python3 >/dev/null || die "python3 (3.11 or later) is needed"
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "python3 is older than 3.11; use --zipapp with a newer python3"
    [ -x "$PREFIX/venv/bin/python" ] || python3 -m venv "$PREFIX/venv"
    "$PREFIX/venv/bin/python" -m pip install -q --upgrade "$package"
    run='exec /opt/jobfleet-agent/venv/bin/python -m jobfleet agent "$@"'
fi
printf '#!/bin/sh\n%s\n' "$run" > "$PREFIX/bin/jobfleet-agent"
chmod 0755 "$PREFIX/bin/jobfleet-agent"

# the token, 0600 root: never on a command line
if [ -n "$token_file" ]; then
    install -m 0600 -o root -g root "$token_file" "$CONF/enroll.token"
fi
# the arguments of the service (no secret in them)
printf 'JOBFLEET_AGENT_ARGS=%s\n' "$(quote "$servers --ip $ip$extra")" > "$CONF/agent.env"
chmod 0600 "$CONF/agent.env"

if [ -f "$HERE/systemd/jobfleet-agent.service" ]; then
    install -m 0644 "$HERE/systemd/jobfleet-agent.service" "$UNIT"
fi
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    if [ "$start" = yes ]; then
        systemctl enable --now jobfleet-agent.service
        echo "jobfleet agent started: journalctl -u jobfleet-agent -f"
    fi
else
    echo "no systemd here: start it with"
    echo "  $PREFIX/bin/jobfleet-agent --state-dir /var/lib/jobfleet-agent" \
         "--enroll-token-file $CONF/enroll.token$servers --ip $ip$extra"
fi
