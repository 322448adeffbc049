#!/usr/bin/env bash
# Turns this machine into a one-node SLURM cluster, to try `hydra/launcher=slurm` (submitit)
# without a real cluster: scripts/slurm_local.sh start | stop | status
#
# Meant for a Debian/Ubuntu laptop or CI machine that you control, run as root. It installs
# Debian's slurm-wlm, munge and MariaDB packages, writes /etc/slurm/slurm.conf (the path
# Debian's slurm commands read by default, so sbatch/squeue/submitit need no SLURM_CONF), and
# starts munged, MariaDB, slurmdbd, slurmctld and slurmd by hand (no systemd needed, e.g. in a
# container). The accounting daemons are there because submitit learns a job's state from
# `sacct`: without them it cannot tell that a job died, and waits for it forever. Their state,
# spool, logs and pid files live in one dir, $SLURM_LOCAL_DIR (default /var/tmp/slurm-local).
set -euo pipefail

STATE_DIR=${SLURM_LOCAL_DIR:-/var/tmp/slurm-local}
PARTITION=${SLURM_LOCAL_PARTITION:-local}
START_TIMEOUT=${SLURM_LOCAL_TIMEOUT:-60}        # seconds to wait for the node to be idle
DB_PORT=${SLURM_LOCAL_DB_PORT:-3316}            # not 3306, so a system MariaDB does not clash
CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
DBD_CONF=$CONF_DIR/slurmdbd.conf
MUNGE_KEY=/etc/munge/munge.key
PID_DIR=$STATE_DIR/pid                          # the pids this script started, one file each
LOG_DIR=$STATE_DIR/log
HOST=$(hostname -s)

die() { echo "slurm_local: $*" >&2; exit 1; }

# --- daemons: pid files written by this script, checked by pid and process name ----------

# alive NAME: the pid recorded for NAME is a live process named NAME (guards against a stale
# pid file whose pid now belongs to something else, e.g. after a reboot).
alive() {
    local pid comm
    pid=$(cat "$PID_DIR/$1.pid" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    [[ $comm == "$1" ]]
}

# launch NAME CMD...: start a daemon in the foreground mode of its own, detached by setsid,
# and record its pid. In a non-interactive script a background job is no process group
# leader, so setsid (and setpriv) exec in place and $! is the daemon itself; wait until the
# exec is done (the process bears the daemon's name), else `alive` fails for a moment.
launch() {
    local name=$1 pid i; shift
    setsid "$@" </dev/null >>"$LOG_DIR/$name.out" 2>&1 &
    pid=$!
    echo "$pid" >"$PID_DIR/$name.pid"
    for ((i = 0; i < 100; i++)); do
        alive "$name" && return 0
        [[ -d /proc/$pid ]] || break
        sleep 0.05
    done
    tail_log "$LOG_DIR/$name.out"
    die "$name did not start (log above, in $LOG_DIR)"
}

# stop_daemon NAME: TERM the recorded pid, wait up to 20 s, then KILL; forget the pid.
stop_daemon() {
    local name=$1 pid i
    if alive "$name"; then
        pid=$(cat "$PID_DIR/$name.pid")
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 200; i++)); do
            [[ -d /proc/$pid ]] || break
            sleep 0.1
        done
        if [[ -d /proc/$pid ]]; then
            echo "slurm_local: $name (pid $pid) ignored SIGTERM for 20 s; sending SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
        echo "stopped $name (pid $pid)"
    fi
    rm -f "$PID_DIR/$name.pid"
}

# A daemon of the same name that this script did not start (e.g. one systemd started after
# the packages were installed on a laptop) would hold the ports and sockets: refuse, do not
# touch it.
check_foreign() {
    local name=$1 pids
    alive "$name" && return 0
    pids=$(pgrep -d " " -x "$name" || true)
    [[ -z $pids ]] || die "a $name this script did not start is running (pid $pids); stop it" \
        "first (e.g. 'systemctl stop ${2:-$name}'), then run start again"
}

tail_log() {
    if [[ -f $1 ]]; then echo "--- last lines of $1:" >&2; tail -n 15 "$1" >&2; fi
}

# --- packages ----------------------------------------------------------------------------

ensure_packages() {
    local p missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    echo "installing ${missing[*]}"
    # Keep the packages' maintainer scripts from starting the daemons themselves (through
    # systemd or init.d): this script starts them, with its own config. Docker images often
    # ship such a policy-rc.d already; only a temporary one of ours is removed again.
    local policy=/usr/sbin/policy-rc.d ours=""
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && ours=1
    fi
    local rc=0
    { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
          "${missing[@]}" >/dev/null; } || rc=$?
    [[ -z $ours ]] || rm -f "$policy"
    ((rc == 0)) || die "apt-get install ${missing[*]} failed (exit $rc)"
}

# --- config ------------------------------------------------------------------------------

# slurm.conf for this machine: its short host name, its CPU count and 90% of its memory
# (slurmd drains a node whose RealMemory is more than it finds, so leave headroom).
render_conf() {
    local cpus mem_mib real_mem def_mem
    cpus=$(nproc)
    mem_mib=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
    real_mem=$((mem_mib * 9 / 10))
    # Without a default, a job that asks for no memory gets the whole node under
    # CR_CPU_Memory, and jobs then run one at a time.
    def_mem=$((real_mem / cpus))
    cat <<EOF
# Written by scripts/slurm_local.sh: a one-node cluster on $HOST. Rewritten (and the
# daemons restarted) by 'scripts/slurm_local.sh start' whenever it would differ.
ClusterName=local
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$STATE_DIR/state
SlurmdSpoolDir=$STATE_DIR/spool
SlurmctldPidFile=$STATE_DIR/run/slurmctld.pid
SlurmdPidFile=$STATE_DIR/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
# No cgroups: works in containers and without systemd; processes are tracked by parent pid.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
MailProg=/bin/true
# Each CPU and MiB is scheduled on its own, so several 1-CPU jobs run at once.
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=$def_mem
# A node that was down (e.g. the daemons were stopped) becomes usable when slurmd is back.
ReturnToService=2
# Requeue (what submitit does on a timeout: scontrol requeue from the job's USR2 handler).
# A requeued job may start again only after the credential lifetime, 120 s by default, and
# then waits for the next pass of the main scheduler (every 60 s by default): 10 s and 5 s
# bring a requeued job back 12-16 s after the requeue instead of about 2.5 min.
JobRequeue=1
AuthInfo=cred_expire=10
SchedulerParameters=sched_interval=5
# Time limits are checked every 30 s (fixed in slurmctld): --signal=SIG@N comes N to N+30 s
# before the limit, and a job ends as TIMEOUT 0-30 s after it (+OverTimeLimit minutes),
# with SIGTERM, then SIGKILL KillWait seconds later. So give a job at least N+60 s: with
# less the signal can come in its first second, before a handler is set (submitit sends
# USR2@90: timeout_min=2 can kill the job at its start, timeout_min=3 is safe).
KillWait=30
OverTimeLimit=0
# slurmdbd keeps the jobs' records for sacct, which submitit polls.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
JobAcctGatherType=jobacct_gather/linux
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$real_mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
}

render_dbd_conf() {
    cat <<EOF
# Written by scripts/slurm_local.sh.
AuthType=auth/munge
DbdHost=$HOST
DbdAddr=127.0.0.1
SlurmUser=root
LogFile=$LOG_DIR/slurmdbd.log
PidFile=$STATE_DIR/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$(cat "$STATE_DIR/db.pass")
StorageLoc=slurm_acct_db
EOF
}

# --- start -------------------------------------------------------------------------------

start_munged() {
    alive munged && return 0
    # The layout Debian's munge expects, owned by the munge user (munged refuses a key or
    # dirs that others can read or write).
    install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
    install -d -o munge -g munge -m 0755 /run/munge
    if [[ ! -s $MUNGE_KEY ]]; then
        head -c 1024 /dev/urandom >"$MUNGE_KEY"
    fi
    chown munge:munge "$MUNGE_KEY"
    chmod 0400 "$MUNGE_KEY"
    # munged will not run as root; setpriv switches user and then execs, keeping the pid.
    launch munged setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged --foreground
    local i
    for ((i = 0; i < 100; i++)); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
        alive munged || break
        sleep 0.1
    done
    tail_log "$LOG_DIR/munged.out"
    die "munged did not start (log above)"
}

start_accounting() {
    local db=$STATE_DIR/db sock=$STATE_DIR/db/mysqld.sock i
    # Our own data dir and port, so a system MariaDB is neither used nor disturbed.
    if [[ ! -d $db/mysql ]]; then
        install -d -o mysql -g mysql -m 0750 "$db"
        mariadb-install-db --no-defaults --user=mysql --datadir="$db" --skip-test-db \
            --auth-root-authentication-method=socket >"$LOG_DIR/mariadb-install.out" 2>&1 ||
            { tail_log "$LOG_DIR/mariadb-install.out"; die "mariadb-install-db failed"; }
    fi
    if ! alive mariadbd; then
        launch mariadbd /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$db" \
            --socket="$sock" --port="$DB_PORT" --bind-address=127.0.0.1 --skip-name-resolve \
            --pid-file="$db/mariadbd.pid"
        for ((i = 0; i < 300; i++)); do
            mariadb --no-defaults --socket="$sock" -e 'select 1' >/dev/null 2>&1 && break
            alive mariadbd || { tail_log "$LOG_DIR/mariadbd.out"; die "mariadbd died"; }
            sleep 0.1
        done
    fi
    if [[ ! -s $STATE_DIR/db.pass ]]; then
        (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$STATE_DIR/db.pass")
    fi
    mariadb --no-defaults --socket="$sock" <<EOF
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$(cat "$STATE_DIR/db.pass")';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
EOF
    # slurmdbd refuses a config that others can read (it holds the password).
    (umask 077; render_dbd_conf >"$DBD_CONF")
    if ! alive slurmdbd; then
        launch slurmdbd /usr/sbin/slurmdbd -D
        for ((i = 0; i < 600; i++)); do
            sacctmgr -n list cluster >/dev/null 2>&1 && break
            alive slurmdbd || { tail_log "$LOG_DIR/slurmdbd.log"; die "slurmdbd died"; }
            sleep 0.1
        done
        ((i < 600)) || { tail_log "$LOG_DIR/slurmdbd.log"; die "slurmdbd did not answer"; }
    fi
    # slurmctld only sends jobs to a cluster the database knows.
    sacctmgr -n -P list cluster format=cluster | grep -qx local ||
        sacctmgr -i add cluster local >/dev/null
}

# wait_idle: the node is usable once sinfo reports it idle (or running jobs already).
wait_idle() {
    local deadline=$((SECONDS + START_TIMEOUT)) state="" name resumed=""
    while ((SECONDS < deadline)); do
        state=$(sinfo -h -N -n "$HOST" -o %T 2>/dev/null || true)
        case $state in
            idle | mixed | allocated | completing) return 0 ;;
            drain* | inval*)
                # A drain is kept in the saved state across restarts (ReturnToService does
                # not clear it), e.g. one from an earlier config with too much RealMemory:
                # resume once; a node that this config still cannot satisfy drains again.
                if [[ -z $resumed ]]; then
                    echo "slurm_local: node $HOST is $state ($(sinfo -h -N -n "$HOST" -o %E));" \
                        "resuming it"
                    scontrol update NodeName="$HOST" State=RESUME 2>/dev/null || true
                    resumed=1
                fi ;;
        esac
        for name in munged slurmctld slurmd; do
            alive "$name" || { tail_log "$LOG_DIR/$name.out"; tail_log "$LOG_DIR/$name.log"
                               die "$name exited during start (logs above, in $LOG_DIR)"; }
        done
        sleep 0.5
    done
    echo "sinfo: ${state:-no answer}" >&2
    sinfo -R >&2 || true
    tail_log "$LOG_DIR/slurmctld.log"; tail_log "$LOG_DIR/slurmd.log"
    die "node $HOST not idle after ${START_TIMEOUT}s; see $LOG_DIR/slurmctld.log and" \
        "$LOG_DIR/slurmd.log (the daemons are left running to look at; 'stop' ends them)"
}

cmd_start() {
    [[ $(id -u) == 0 ]] || die "run as root (it installs packages and writes /etc/slurm)"
    ensure_packages slurmctld slurmd slurm-client munge slurmdbd mariadb-server

    mkdir -p "$STATE_DIR"/{state,spool,run} "$PID_DIR" "$LOG_DIR" "$CONF_DIR"
    chmod 755 "$STATE_DIR"
    local conf
    conf=$(render_conf)

    # Already up with this very config: start nothing (the quick path); only make sure
    # the node is usable.
    if [[ -f $CONF && $conf == "$(cat "$CONF")" ]] && alive munged && alive slurmctld &&
        alive slurmd && alive mariadbd && alive slurmdbd; then
        echo "slurm_local: already running (pids in $PID_DIR)"
        wait_idle
        sinfo
        return 0
    fi
    # A new config needs new slurm daemons (munged does not read it).
    if [[ ! -f $CONF || $conf != "$(cat "$CONF")" ]]; then
        stop_daemon slurmd; stop_daemon slurmctld; stop_daemon slurmdbd; stop_daemon mariadbd
        printf '%s\n' "$conf" >"$CONF"
        echo "wrote $CONF"
    fi
    check_foreign munged munge; check_foreign slurmctld; check_foreign slurmd
    check_foreign slurmdbd

    start_munged
    start_accounting
    # -D: stay in the foreground (setsid detaches them), so the recorded pid is the daemon's.
    alive slurmctld || launch slurmctld /usr/sbin/slurmctld -D
    alive slurmd || launch slurmd /usr/sbin/slurmd -D
    wait_idle
    echo "slurm_local: one-node cluster up: partition '$PARTITION' on $HOST (logs in $LOG_DIR)"
    sinfo
}

cmd_stop() {
    local name jobs
    # Jobs are not daemons: their processes outlive slurmd (and slurmd finds them again
    # when it comes back), so say so rather than leave them unnoticed.
    if alive slurmctld; then
        jobs=$(squeue -h -t running,completing -o %i 2>/dev/null | wc -l)
        ((jobs == 0)) || echo "slurm_local: $jobs job(s) still running; their processes" \
            "keep running (scancel them first to end them)" >&2
    fi
    # slurmd first, so slurmctld does not mark the node down mid-stop; munged last.
    for name in slurmd slurmctld slurmdbd mariadbd munged; do
        stop_daemon "$name"
    done
}

cmd_status() {
    local name rc=0
    for name in munged mariadbd slurmdbd slurmctld slurmd; do
        if alive "$name"; then
            echo "$name: running (pid $(cat "$PID_DIR/$name.pid"))"
        else
            echo "$name: not running"
            rc=1
        fi
    done
    # sinfo waits for a missing controller for a while: ask only when slurmctld is up.
    if alive slurmctld; then sinfo || rc=1; fi
    return "$rc"
}

case ${1:-} in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: $0 start | stop | status" >&2; exit 2 ;;
esac
