#!/usr/bin/env bash
# A minicondor (Debian 13 "trixie" package) in a chroot, reachable on 127.0.0.1:9618.
#
#   bash ci/engines/htcondor.sh deps     debootstrap on the host; build the chroot (once)
#   bash ci/engines/htcondor.sh start    deps, mount, start condor_master, wait for a slot,
#                                        print CONDOR_SCHEDD=… and CONDOR_TOKEN=<file>
#                                        (a running pool is left as it is: `stop` first to
#                                        apply a changed configuration)
#   bash ci/engines/htcondor.sh stop     condor_off, kill the daemons, unmount everything
#   bash ci/engines/htcondor.sh status   exit 0 iff a slot is visible
#   bash ci/engines/htcondor.sh rm ID    condor_rm ID inside the chroot (tests: a kill from outside)
#
# Debian 12 has no HTCondor daemons and the PyPI wheel has none, so they run in a
# trixie chroot under $IDDS_ENGINES_DIR/condor-root (default /var/tmp/idds-engines).
# This sandbox forbids mount namespaces: the config turns off MOUNT_UNDER_SCRATCH,
# PID namespaces and cgroups. Jobs run inside the chroot, so the host paths they
# use are bind-mounted at the same paths: the Python that runs the worker
# (sys.base_prefix and the venv), the repository, /tmp, and $IDDS_CONDOR_BINDS
# (colon-separated extra directories).
# The execute node advertises IDDS_CONDOR_CPUS CPUs (default 8 x cores, one partitionable
# slot): no-op and short test jobs then keep the real cores busy.
# HTCondor never runs a job as root, so jobs run as the chroot user "idds"
# (the IDTOKEN's identity is idds@HOST): the directories a job writes (the
# backend's shared dir, the job's own files) must be writable by that user.
set -euo pipefail

BASE=${IDDS_ENGINES_DIR:-/var/tmp/idds-engines}
ROOT=$BASE/condor-root
STATE=$BASE/condor
HERE=$(cd "$(dirname "$0")/../.." && pwd)
HOST=$(hostname -s)
PY=${IDDS_PYTHON:-$HERE/.venv/bin/python}

log() { echo "htcondor.sh: $*" >&2; }
# the cores this machine gives us (nproc alone would follow OMP_NUM_THREADS)
cores() { env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc; }

mirror() {
    local m=""
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        m=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
    fi
    if [ -z "$m" ] && [ -f /etc/apt/sources.list ]; then
        m=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list)
    fi
    echo "${m:-http://deb.debian.org/debian}"
}

in_root() { chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root "$@"; }

is_mounted() { mountpoint -q "$1" 2>/dev/null; }

mount_all() {
    local d
    mkdir -p "$ROOT/proc" "$ROOT/sys" "$ROOT/dev"
    is_mounted "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
    is_mounted "$ROOT/sys" || mount --rbind /sys "$ROOT/sys"
    is_mounted "$ROOT/dev" || mount --rbind /dev "$ROOT/dev"
    cp -f /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
    grep -q "[[:space:]]$HOST\$" "$ROOT/etc/hosts" 2>/dev/null \
        || echo "127.0.0.1 $HOST" >> "$ROOT/etc/hosts"
}

binds() {
    # host directories jobs need, at the same paths
    local py_base venv
    py_base=$("$PY" -c 'import sys; print(sys.base_prefix)')
    venv=$("$PY" -c 'import sys; print(sys.prefix)')
    printf '%s\n' "$py_base" "$venv" "$HERE" /tmp
    if [ -n "${IDDS_CONDOR_BINDS:-}" ]; then tr ':' '\n' <<<"$IDDS_CONDOR_BINDS"; fi
}

mount_binds() {
    local d
    while IFS= read -r d; do
        [ -n "$d" ] && [ -d "$d" ] || continue
        mkdir -p "$ROOT$d"
        is_mounted "$ROOT$d" || mount --bind "$d" "$ROOT$d"
        echo "$d" >> "$STATE/binds"
    done < <(binds | awk '!seen[$0]++' | sort | awk 'p == "" || index($0, p "/") != 1 {print; p = $0}')
}

umount_all() {
    local m pass
    # deepest first, a few passes (a covered mount shows up once its cover is gone)
    for pass in 1 2 3 4 5; do
        m=$(awk -v r="$ROOT" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r)
        [ -n "$m" ] || return 0
        for m in $m; do
            umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
        done
    done
}

deps() {
    mkdir -p "$BASE" "$STATE"
    if ! command -v debootstrap >/dev/null 2>&1; then
        log "installing debootstrap"
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >/dev/null
    fi
    if [ -x "$ROOT/usr/sbin/condor_master" ]; then return 0; fi
    if [ ! -x "$ROOT/usr/bin/apt-get" ]; then
        log "debootstrap trixie into $ROOT (about a minute)"
        umount_all
        rm -rf "$ROOT"
        debootstrap --variant=minbase trixie "$ROOT" "$(mirror)" > "$STATE/debootstrap.log" 2>&1 \
            || { tail -n 20 "$STATE/debootstrap.log" >&2; log "debootstrap failed"; exit 1; }
    fi
    mount_all
    log "installing minicondor in the chroot"
    in_root apt-get update -q > "$STATE/apt.log" 2>&1
    DEBIAN_FRONTEND=noninteractive in_root apt-get install -y -q --no-install-recommends \
        minicondor >> "$STATE/apt.log" 2>&1 \
        || { tail -n 20 "$STATE/apt.log" >&2; log "apt-get install minicondor failed"; exit 1; }
}

job_user() {
    if ! grep -q '^idds:' "$ROOT/etc/passwd"; then
        in_root useradd --system --no-create-home --home-dir /nonexistent --shell /bin/sh \
            --user-group idds
    fi
    # the bind-mounted interpreter may live under /root (pyenv): let the job user through
    chmod 711 "$ROOT/root"
}

CONFIG=$ROOT/etc/condor/config.d/99-idds.conf

new_config() {
    # the configuration `start` wants, as $CONFIG.new
    local cpus disk
    cpus=${IDDS_CONDOR_CPUS:-$(( $(cores) * 8 ))}
    disk=$(( cpus * 2 * 1024 * 1024 ))  # KiB: 2 GiB per CPU
    mkdir -p "$ROOT/etc/condor/config.d"
    cat > "$CONFIG.new" <<CONF
# written by ci/engines/htcondor.sh
# this sandbox forbids mount/PID namespaces and cgroups
MOUNT_UNDER_SCRATCH =
USE_PID_NAMESPACES = False
BASE_CGROUP =
CGROUP_MEMORY_LIMIT_POLICY = none
# loopback only, and quick
CONDOR_HOST = 127.0.0.1
NETWORK_INTERFACE = 127.0.0.1
NUM_CPUS = $cpus
# a fixed disk to share out, not the host's free space: HTCondor asks 1 GiB per job by
# default, so a nearly full disk would leave every job idle with no match
DISK = $disk
SCHEDD_INTERVAL = 2
NEGOTIATOR_INTERVAL = 2
NEGOTIATOR_CYCLE_DELAY = 1
SCHEDD_MIN_INTERVAL = 1
STARTER_UPDATE_INTERVAL = 2
JOB_START_DELAY = 0
UPDATE_INTERVAL = 5
# many short jobs: a claimed slot runs the next idle job at once for an hour (no
# renegotiation every 5 minutes), and no fsync per job queue or event log write
CLAIM_WORKLIFE = 3600
CONDOR_FSYNC = False
ENABLE_USERLOG_FSYNC = False
STARTD_CRON_JOBLIST =
# IDTOKENS for the host's htcondor2 bindings
SEC_DEFAULT_AUTHENTICATION_METHODS = FS, IDTOKENS
ALLOW_WRITE = \$(ALLOW_WRITE), *@$HOST, *@127.0.0.1, root@*, condor@*
ALLOW_ADMINISTRATOR = \$(ALLOW_ADMINISTRATOR), root@*
CONF
}

master_pid() {
    # the condor_master whose root is the chroot
    local p
    for p in /proc/[0-9]*; do
        if [ "$(cat "$p/comm" 2>/dev/null)" = condor_master ] \
            && [ "$(readlink "$p/root" 2>/dev/null)" = "$ROOT" ]; then
            echo "${p#/proc/}"; return 0
        fi
    done
    return 1
}

slot_ready() {
    local out
    out=$(in_root condor_status -af Name 2>/dev/null || true)
    [ -n "$out" ]
}

token() {
    mkdir -p "$STATE"
    if [ ! -s "$STATE/token" ]; then
        in_root condor_token_create -identity "idds@$HOST" > "$STATE/token.tmp"
        mv "$STATE/token.tmp" "$STATE/token"
        chmod 600 "$STATE/token"
    fi
}

report() {
    echo "CONDOR_SCHEDD=127.0.0.1:9618"
    echo "CONDOR_TOKEN=$STATE/token"
    echo "CONDOR_ROOT=$ROOT"
    echo "CONDOR_JOB_USER=idds"
}

start() {
    deps
    mount_all
    mount_binds
    new_config
    if master_pid >/dev/null; then
        # a pool busy with many jobs may miss one condor_status: give it 30 s before
        # restarting it (which would lose the jobs running in it)
        for _ in $(seq 30); do
            if slot_ready; then
                cmp -s "$CONFIG.new" "$CONFIG" || log "the running pool has another" \
                    "configuration than this script writes: stop and start it to apply this one"
                rm -f "$CONFIG.new"; job_user; token; report; return 0
            fi
            sleep 1
        done
        log "the running pool shows no slot for 30 s: restarting it"
        stop; deps; mount_all; mount_binds
    fi
    job_user
    mv "$CONFIG.new" "$CONFIG"
    rm -f "$STATE/token"
    in_root condor_master
    sleep 0.5
    master_pid > "$STATE/master.pid" || true
    for _ in $(seq 120); do
        if slot_ready; then token; report; return 0; fi
        sleep 0.5
    done
    log "no slot after 60 s; last MasterLog/StartLog lines:"
    tail -n 20 "$ROOT/var/log/condor/MasterLog" "$ROOT/var/log/condor/StartLog" >&2 2>/dev/null || true
    exit 1
}

stop() {
    if [ -x "$ROOT/usr/sbin/condor_off" ] && is_mounted "$ROOT/proc"; then
        in_root condor_off -master -fast >/dev/null 2>&1 || true
        for _ in $(seq 50); do
            pgrep -f condor_master >/dev/null 2>&1 || break
            sleep 0.2
        done
    fi
    # whatever still runs from inside the chroot
    local p
    for p in /proc/[0-9]*; do
        if [ "$(readlink "$p/root" 2>/dev/null)" = "$ROOT" ]; then
            kill -9 "${p#/proc/}" 2>/dev/null || true
        fi
    done
    rm -f "$STATE/master.pid" "$STATE/binds"
    umount_all
}

case "${1:-}" in
    deps) deps; umount_all ;;
    start) start ;;
    stop) stop ;;
    status) is_mounted "$ROOT/proc" && slot_ready && report ;;
    rm) shift; in_root condor_rm "$@" ;;
    *) echo "usage: $0 deps|start|stop|status|rm ID" >&2; exit 2 ;;
esac
