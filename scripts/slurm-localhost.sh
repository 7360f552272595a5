#!/usr/bin/env bash
# slurm-localhost.sh start|stop|status [STATE_DIR]
#
# A one-node SLURM cluster on 127.0.0.1 for trying ntklab's submitit_slurm launcher on one
# machine (a container without systemd is fine): munged, MariaDB (accounting database),
# slurmdbd, slurmctld and slurmd, started directly as root.
#
#   start   install what is missing (apt-get update once, then apt-get install -y), write the
#           configs, start every daemon that is not already running (found by its PID file),
#           wait until the node is idle. A second start does no harm.
#   stop    cancel the cluster's jobs, end exactly the daemons this script started (by the PID
#           files it wrote, each checked against its program name), remove STATE_DIR.
#   status  show which of its daemons run and what sinfo says.
#
# Everything (configs, munge key and socket, database, spool, logs, PID files) lives under
# STATE_DIR (default /tmp/ntklab-slurm). The only file written outside it is the symlink
# /etc/slurm/slurm.conf -> STATE_DIR/etc/slurm.conf, made only when /etc/slurm/slurm.conf does
# not exist, so that sinfo/sbatch/srun/sacct (and submitit, which calls them) find the cluster
# with no environment variable; stop removes it again. When /etc/slurm/slurm.conf already
# exists, start prints the `export SLURM_CONF=...` line the clients then need.
set -euo pipefail

DEFAULT_STATE_DIR=/tmp/ntklab-slurm
PARTITION=local
CLUSTER=ntklab
DB_PORT=16819            # MariaDB on 127.0.0.1 only (not the default 3306)
CTLD_PORT=6817 SLURMD_PORT=6818 DBD_PORT=6819
SYSTEM_CONF=/etc/slurm/slurm.conf

usage() { echo "usage: $0 start|stop|status [STATE_DIR]  (default STATE_DIR: $DEFAULT_STATE_DIR)" >&2; exit 2; }
say() { echo "slurm-localhost: $*" >&2; }
die() { say "error: $*"; exit 1; }

[[ $# -ge 1 && $# -le 2 ]] || usage
ACTION=$1
STATE=${2:-$DEFAULT_STATE_DIR}
[[ $STATE == /* ]] || STATE="$(pwd)/$STATE"
STATE=${STATE%/}
[[ -n $STATE && $STATE != / ]] || die "refusing state dir '/'"

ETC=$STATE/etc RUN=$STATE/run LOG=$STATE/log SPOOL=$STATE/spool
MUNGE_SOCKET=$RUN/munge.socket
CONF=$ETC/slurm.conf
# Used by this script's own calls and by the daemons it starts (slurmdbd finds slurmdbd.conf
# next to it); the user never has to set it.
export SLURM_CONF=$CONF

# name -> program name as /proc/PID/comm shows it (15 characters at most)
declare -A COMM=([munged]=munged [mariadbd]=mariadbd [slurmdbd]=slurmdbd [slurmctld]=slurmctld [slurmd]=slurmd)
ORDER=(munged mariadbd slurmdbd slurmctld slurmd)

pidfile() { echo "$RUN/$1.pid"; }

# The PID in NAME's PID file when that process is alive and is NAME's program; else nothing.
running_pid() {
    local f pid
    f=$(pidfile "$1")
    [[ -s $f ]] || return 1
    pid=$(tr -dc 0-9 <"$f")
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "${COMM[$1]}" ]] || return 1
    echo "$pid"
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND until it succeeds
    local limit=$1 what=$2 i
    shift 2
    for ((i = 0; i < limit * 4; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.25
    done
    die "$what did not come up within ${limit}s; see $LOG/"
}

# ---------------------------------------------------------------------------------- install
install_packages() {
    local missing=() bin
    local -A need=([munged]=munge [slurmctld]=slurmctld [slurmd]=slurmd [sbatch]=slurm-client
        [slurmdbd]=slurmdbd [mariadbd]=mariadb-server [mariadb-install-db]=mariadb-server
        [mariadb]=mariadb-client)
    for bin in "${!need[@]}"; do
        command -v "$bin" >/dev/null 2>&1 || [[ -x /usr/sbin/$bin ]] || missing+=("${need[$bin]}")
    done
    ((${#missing[@]})) || return 0
    mapfile -t missing < <(printf '%s\n' slurm-wlm "${missing[@]}" | sort -u)
    say "installing ${missing[*]}"
    # No service may start from a package's postinst: this script starts its own daemons, and
    # nothing it did not start may be left running. policy-rc.d 101 = "action forbidden".
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
    fi
    local rc=0
    mkdir -p "$LOG"
    { DEBIAN_FRONTEND=noninteractive apt-get update -q \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"; } \
        >"$LOG/apt.log" 2>&1 || rc=$?
    ((made_policy)) && rm -f "$policy"
    ((rc == 0)) || die "apt-get failed (exit $rc); see $LOG/apt.log"
}

# ---------------------------------------------------------------------------------- configs
write_configs() {
    mkdir -p "$ETC" "$RUN" "$LOG" "$SPOOL/ctld" "$SPOOL/d" "$STATE/munge" "$STATE/mysql"
    chmod 700 "$STATE/munge"
    # munged refuses a key readable by others and a socket dir writable by others
    chmod 755 "$STATE" "$RUN"
    if [[ ! -s $STATE/munge/munge.key ]]; then
        dd if=/dev/urandom of="$STATE/munge/munge.key" bs=1024 count=1 status=none
        chmod 400 "$STATE/munge/munge.key"
    fi
    [[ -s $CONF ]] && return 0   # keep the configs of a cluster that may be running

    # The machine as slurmd measures it: CPUs, sockets, cores, threads, RealMemory (MiB).
    local node
    node=$(slurmd -C | head -1 | sed -E 's/^NodeName=[^ ]+ //; s/ *UpTime=.*//')
    [[ $node == *CPUs=* && $node == *RealMemory=* ]] || die "cannot read the machine from slurmd -C"
    local cpus mem
    cpus=$(sed -E 's/.*CPUs=([0-9]+).*/\1/' <<<"$node")
    mem=$(sed -E 's/.*RealMemory=([0-9]+).*/\1/' <<<"$node")

    cat >"$CONF" <<EOF
# Written by slurm-localhost.sh; one node on 127.0.0.1, state under $STATE
ClusterName=$CLUSTER
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# cred_expire also sets how long a requeued job waits before it may start again (default 120 s)
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10
CredType=cred/munge
StateSaveLocation=$SPOOL/ctld
SlurmdSpoolDir=$SPOOL/d
SlurmctldPidFile=$(pidfile slurmctld)
SlurmdPidFile=$(pidfile slurmd)
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups: this runs in containers without a writable cgroup tree or systemd.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
MpiDefault=none
MailProg=/bin/true
SwitchType=switch/none
LaunchParameters=use_interactive_step
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# refuse at submission a job that can never run here (more CPUs or memory than the node has)
# instead of leaving it pending forever with reason PartitionConfig
EnforcePartLimits=ALL
SlurmdTimeout=60
InactiveLimit=0
KillWait=30
MinJobAge=300
MaxArraySize=10001
# Accounting: slurmdbd with a local MariaDB, so sacct (and submitit, which polls sacct)
# reports every job's state; job completions also go to a text file.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
# munge socket for connections to slurmdbd (AuthInfo is not used for them)
AccountingStoragePass=$MUNGE_SOCKET
JobCompType=jobcomp/filetxt
JobCompLoc=$LOG/jobcomp.txt
# Preemption as on a shared cluster: a job of the 'urgent' partition takes the node from jobs
# of the default partition, which get SIGCONT+SIGTERM, KillWait seconds to save, then SIGKILL,
# and are requeued (they start again later, with SLURM_RESTART_COUNT set). GraceTime stays 0:
# with a grace time, a job that exits by itself within it ends FAILED and is not requeued.
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
NodeName=localhost NodeAddr=127.0.0.1 $node State=UNKNOWN
PartitionName=$PARTITION Nodes=localhost Default=YES MaxTime=INFINITE State=UP PriorityTier=1 GraceTime=0 DefMemPerCPU=$((mem / cpus))
PartitionName=urgent Nodes=localhost Default=NO MaxTime=INFINITE State=UP PriorityTier=2 PreemptMode=OFF DefMemPerCPU=$((mem / cpus))
EOF

    cat >"$ETC/slurmdbd.conf" <<EOF
# Written by slurm-localhost.sh
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$(pidfile slurmdbd)
LogFile=$LOG/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$ETC/slurmdbd.conf"   # slurmdbd refuses a config others can read

    cat >"$ETC/my.cnf" <<EOF
[mysqld]
datadir=$STATE/mysql
socket=$RUN/mysqld.sock
pid-file=$(pidfile mariadbd)
log-error=$LOG/mariadb.log
bind-address=127.0.0.1
port=$DB_PORT
user=root
skip-name-resolve
innodb_buffer_pool_size=64M
innodb_lock_wait_timeout=900
EOF
}

# ---------------------------------------------------------------------------------- daemons
start_munged() {
    running_pid munged >/dev/null && return 0
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
    munged --force --key-file="$STATE/munge/munge.key" --socket="$MUNGE_SOCKET" \
        --pid-file="$(pidfile munged)" --log-file="$LOG/munged.log" --seed-file="$STATE/munge/munged.seed"
    wait_for 10 munged bash -c "munge -n --socket='$MUNGE_SOCKET' | unmunge --socket='$MUNGE_SOCKET'"
}

sql() { mariadb --socket="$RUN/mysqld.sock" -u root -e "$1"; }

start_mariadbd() {
    running_pid mariadbd >/dev/null && return 0
    if [[ ! -d $STATE/mysql/mysql ]]; then
        mariadb-install-db --defaults-file="$ETC/my.cnf" --auth-root-authentication-method=socket \
            --skip-test-db >"$LOG/mariadb-install.log" 2>&1 || die "mariadb-install-db failed; see $LOG/mariadb-install.log"
    fi
    # mariadbd does not daemonize; setsid + nohup detach it from this shell
    setsid nohup mariadbd --defaults-file="$ETC/my.cnf" </dev/null >>"$LOG/mariadb.log" 2>&1 &
    wait_for 60 mariadbd sql "SELECT 1"
    sql "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
         GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"
}

start_slurmdbd() {
    running_pid slurmdbd >/dev/null && return 0
    slurmdbd
    wait_for 60 slurmdbd sacctmgr -n show cluster
}

start_slurmctld() {
    running_pid slurmctld >/dev/null && return 0
    # the cluster must exist in the database before slurmctld reports jobs to it
    if [[ -z $(sacctmgr -n -P show cluster "$CLUSTER" format=cluster) ]]; then
        sacctmgr -i add cluster "$CLUSTER" >/dev/null
    fi
    slurmctld
    wait_for 30 slurmctld scontrol ping
}

start_slurmd() {
    running_pid slurmd >/dev/null && return 0
    slurmd -N localhost
    wait_for 60 "node localhost (idle)" bash -c "sinfo -h -n localhost -o %T | grep -qx idle"
}

link_system_conf() {
    if [[ -L $SYSTEM_CONF && $(readlink "$SYSTEM_CONF") == "$CONF" ]]; then
        return 0
    fi
    if [[ -e $SYSTEM_CONF || -L $SYSTEM_CONF ]]; then
        say "$SYSTEM_CONF exists and is not this cluster's: run  export SLURM_CONF=$CONF  before sinfo/sbatch/ntklab"
        return 0
    fi
    mkdir -p "$(dirname "$SYSTEM_CONF")"
    ln -s "$CONF" "$SYSTEM_CONF"
}

start() {
    [[ $(id -u) == 0 ]] || die "run as root (the daemons and apt-get need it)"
    install_packages
    write_configs
    local name
    for name in "${ORDER[@]}"; do
        if running_pid "$name" >/dev/null; then
            say "$name already running (pid $(running_pid "$name"))"
        else
            "start_$name"
            say "$name started (pid $(running_pid "$name" || echo '?'))"
        fi
    done
    link_system_conf
    sinfo
}

# ---------------------------------------------------------------------------------- stop
stop_daemon() {  # stop_daemon NAME: SIGTERM the PID-file process, SIGKILL after 30 s
    local pid i
    pid=$(running_pid "$1") || return 0
    kill -TERM "$pid"
    for ((i = 0; i < 120; i++)); do
        kill -0 "$pid" 2>/dev/null || { say "$1 stopped (pid $pid)"; return 0; }
        sleep 0.25
    done
    kill -KILL "$pid" 2>/dev/null || true
    say "$1 killed (pid $pid)"
}

# slurmstepd processes of this cluster's jobs: they carry SLURM_CONF=$CONF from slurmd's env
stepds() {
    local pid
    for pid in $(pgrep -x slurmstepd || true); do
        { tr '\0' '\n' <"/proc/$pid/environ"; } 2>/dev/null | grep -qx "SLURM_CONF=$CONF" && echo "$pid"
    done
}

stop() {
    [[ -d $STATE ]] || { say "nothing to stop: $STATE does not exist"; return 0; }
    [[ -f $CONF ]] || die "$STATE holds no slurm-localhost cluster (no etc/slurm.conf); not removing it"
    local i name pid
    if running_pid slurmctld >/dev/null; then
        squeue -h -o %F 2>/dev/null | sort -u | xargs -r scancel --quiet 2>/dev/null || true
        for ((i = 0; i < 60; i++)); do
            [[ -z $(squeue -h -o %i 2>/dev/null) && -z $(stepds) ]] && break
            sleep 0.5
        done
    fi
    for ((i = ${#ORDER[@]} - 1; i >= 0; i--)); do
        stop_daemon "${ORDER[$i]}"
    done
    for pid in $(stepds); do   # a job step that outlived its slurmd
        kill -KILL "$pid" 2>/dev/null && say "killed leftover slurmstepd $pid"
    done
    if [[ -L $SYSTEM_CONF && $(readlink "$SYSTEM_CONF") == "$CONF" ]]; then
        rm -f "$SYSTEM_CONF"
    fi
    rm -rf "$STATE"
    say "stopped; removed $STATE"
}

status() {
    local name pid
    for name in "${ORDER[@]}"; do
        if pid=$(running_pid "$name"); then echo "$name: running (pid $pid)"; else echo "$name: not running"; fi
    done
    if running_pid slurmctld >/dev/null; then sinfo; fi
}

case $ACTION in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) usage ;;
esac
