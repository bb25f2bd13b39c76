#!/usr/bin/env bash
# A real single-node Slurm cluster (slurmctld + slurmd, accounting through slurmdbd on the local
# MariaDB) and a real OpenSSH server on 127.0.0.1:2222 for the test suite, with two test users
# (hut and hut2: private homes, a key pair each, both in Slurm accounting). Debian 12, run as
# root, no systemd needed. Safe to run again: it installs and starts only what is missing.
#
#   cluster.sh [start]              install, configure and start everything (default)
#   cluster.sh status               print each component; exit 0 only if all are up and accounting is on
#   cluster.sh stop-sshd|start-sshd stop (dropping open sessions too) / start the test sshd
#   cluster.sh stop-slurmctld|start-slurmctld
#   cluster.sh accounting off|on    slurm.conf without/with slurmdbd accounting; restarts slurmctld and slurmd
#   cluster.sh limits on|off        AccountingStorageEnforce=associations,limits,qos (sacctmgr limits such as
#                                   MaxSubmitJobs enforced) or not; restarts slurmctld. `start` turns it off.
#
# All generated state lives in $SCRIPTHUT_CLUSTER_DIR (default /var/tmp/scripthut-cluster);
# /etc/slurm/slurm.conf and /etc/slurm/slurmdbd.conf are symlinks into it so that plain
# sbatch/squeue/sacct work for every user, also over SSH. $DIR/cluster.env says how to reach it.
# Only processes recorded in $DIR/run/*.pid are ever stopped (and their own sshd session children).
set -euo pipefail

DIR=${SCRIPTHUT_CLUSTER_DIR:-/var/tmp/scripthut-cluster}
SSH_PORT=2222
TEST_USER=hut
TEST_USER2=hut2  # a second cluster account: per-user identities, one user's files hidden from the other
TEST_USERS=("$TEST_USER" "$TEST_USER2")
CLUSTER=scripthut
PARTITION=normal
ACCOUNT=research
DB_NAME=scripthut_slurm_acct
DB_USER=scripthut_slurm
SLURM_CONF=/etc/slurm/slurm.conf
WAIT=${SCRIPTHUT_CLUSTER_WAIT:-60}
PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd slurm-wlm-torque openssh-server mariadb-server)

T0=$(date +%s%N)
log() {
    local ms=$((($(date +%s%N) - T0) / 1000000))
    printf '[cluster %3d.%ds] %s\n' $((ms / 1000)) $((ms % 1000 / 100)) "$*"
}
show_logs() {
    local f
    for f in "$DIR"/log/*.log /var/log/munge/munged.log; do
        [ -s "$f" ] || continue
        printf '\n----- last lines of %s -----\n' "$f" >&2
        tail -n 25 "$f" >&2
    done
}
die() {
    printf '[cluster] ERROR: %s\n' "$*" >&2
    show_logs
    exit 1
}

# ---------------------------------------------------------------- helpers
# wait_until SECONDS DESCRIPTION CMD...: poll CMD until it succeeds; fail with the logs after SECONDS.
wait_until() {
    local limit=$1 what=$2 deadline
    shift 2
    deadline=$(($(date +%s) + limit))
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$deadline" ] || die "$what did not happen within ${limit}s"
        sleep 0.25
    done
}

# pid_of NAME PIDFILE: print the pid recorded in PIDFILE if that process is alive and is NAME.
pid_of() {
    local name=$1 file=$2 pid
    [ -r "$file" ] || return 1
    pid=$(tr -dc 0-9 <"$file")
    [ -n "$pid" ] || return 1
    alive "$pid" "$name" || return 1
    echo "$pid"
}
# alive PID NAME: PID is a live (not zombie) process named NAME.
alive() {
    local stat
    [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ] || return 1
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [ "${stat%% *}" != Z ]
}
running() { pid_of "$1" "$DIR/run/$1.pid" >/dev/null; }

# stop NAME: SIGTERM the process in $DIR/run/NAME.pid (if it is ours) and wait until it is gone.
stop() {
    local name=$1 pid
    pid=$(pid_of "$name" "$DIR/run/$name.pid") || return 0
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$(($(date +%s) + 20))
    while alive "$pid" "$name"; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
        sleep 0.1
    done
    rm -f "$DIR/run/$name.pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port_closed() { ! port_open "$1"; }

# Start a daemon detached from our stdio and from the lock descriptor (9), else a caller that
# captures our output (pytest) would wait for the daemon, and the daemon would keep the lock.
daemon() { "$@" </dev/null >>"$DIR/log/daemons.out" 2>&1 9>&-; }

lock() {
    mkdir -p "$DIR"
    exec 9>"$DIR/.lock"
    if ! flock -n 9; then
        log "waiting for another cluster.sh to finish"
        flock -w 300 9 || die "another cluster.sh holds $DIR/.lock"
    fi
}

[ "$(id -u)" -eq 0 ] || die "must run as root (installs packages, starts daemons, creates users ${TEST_USERS[*]})"

# ---------------------------------------------------------------- install
install_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || missing+=("$p")
    done
    [ ${#missing[@]} -gt 0 ] || return 0
    log "installing ${missing[*]}"
    # No init scripts during the install: we start every daemon ourselves, with our own config.
    local policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        policy=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
    fi
    local ok=1
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}"; } >"$DIR/apt.log" 2>&1 || ok=0
    [ -z "$policy" ] || rm -f "$policy"
    [ $ok = 1 ] || { tail -n 30 "$DIR/apt.log" >&2; die "apt-get install ${missing[*]} failed"; }
}

# ---------------------------------------------------------------- munge
start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return 0; fi
    log "starting munged"
    if [ ! -s /etc/munge/munge.key ]; then
        mkdir -p /etc/munge
        mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null \
            || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
        chown munge:munge /etc/munge/munge.key
        chmod 400 /etc/munge/munge.key
    fi
    install -d -o munge -g munge -m 755 /run/munge
    install -d -o munge -g munge -m 700 /var/log/munge /var/lib/munge
    daemon runuser -u munge -- /usr/sbin/munged --force
    wait_until 15 "munge -n | unmunge" sh -c 'munge -n | unmunge'
}

# ---------------------------------------------------------------- test users
home_of() { getent passwd "$1" | cut -d: -f6; }

setup_users() {
    local u
    for u in "${TEST_USERS[@]}"; do
        if ! id "$u" >/dev/null 2>&1; then
            log "creating user $u"
            useradd -m -s /bin/bash "$u"
        fi
        # useradd leaves the password locked ('!'); with UsePAM no, sshd then refuses even a valid key.
        case "$(getent shadow "$u" | cut -d: -f2)" in
            '!'*) usermod -p '*' "$u" ;;
        esac
        # Private homes, as on a real cluster: one user's jobs cannot read another's output.
        chmod 700 "$(home_of "$u")"
    done
}

# ---------------------------------------------------------------- files
setup_dirs() {
    install -d -m 755 "$DIR" "$DIR/state"
    install -d -o slurm -g slurm -m 755 "$DIR/log" "$DIR/run"
    install -d -o slurm -g slurm -m 700 "$DIR/state/ctld"
    install -d -o root -g root -m 755 "$DIR/state/d"
    install -d -m 755 /etc/slurm
}

# write_slurm_conf on|off: (re)write slurm.conf; CONF_CHANGED=1 if its content changed.
CONF_CHANGED=0
SSHD_CONF_CHANGED=0  # set by setup_ssh_files
write_slurm_conf() {
    local acct=$1 host node tmp
    host=$(hostname -s)
    if ! grep -q "^NodeName=$host " "$DIR/node.conf" 2>/dev/null; then
        # The node line as slurmd sees this machine (CPUs, sockets, cores, RealMemory), minus UpTime.
        node=$(slurmd -C 2>/dev/null | grep -m1 '^NodeName=' | sed -e 's/ UpTime=.*//') \
            || die "slurmd -C printed no node line"
        [ -n "$node" ] || die "slurmd -C printed no node line"
        node=${node/NodeName=$host /NodeName=$host NodeAddr=127.0.0.1 }
        echo "$node State=UNKNOWN" >"$DIR/node.conf"
    fi
    tmp=$(mktemp "$DIR/.slurm.conf.XXXXXX")
    {
        cat <<EOF
# Generated by tests/setup/cluster.sh (accounting $acct): a one-node test cluster.
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$DIR/state/ctld
SlurmdSpoolDir=$DIR/state/d
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MinJobAge=300
KillWait=5
InactiveLimit=0
Waittime=0
SlurmctldTimeout=10
SlurmdTimeout=30
# Slurm's default; client commands give up on an unreachable slurmctld after about this long.
MessageTimeout=10
MailProg=/bin/true
EOF
        if [ "$acct" = on ]; then
            cat <<EOF
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
EOF
            if [ -e "$DIR/enforce-limits" ]; then echo "AccountingStorageEnforce=associations,limits,qos"; fi
        else
            cat <<EOF
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
EOF
        fi
        cat "$DIR/node.conf"
        echo "PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4"
    } >"$tmp"
    chmod 644 "$tmp"
    if cmp -s "$tmp" "$DIR/slurm.conf"; then
        rm -f "$tmp"
        CONF_CHANGED=0
    else
        mv -f "$tmp" "$DIR/slurm.conf"
        CONF_CHANGED=1
    fi
    link_conf
}

link_conf() {
    [ "$(readlink "$SLURM_CONF" 2>/dev/null)" = "$DIR/slurm.conf" ] || ln -sfn "$DIR/slurm.conf" "$SLURM_CONF"
}

accounting_state() { grep -q '^AccountingStorageType=accounting_storage/slurmdbd' "$DIR/slurm.conf" 2>/dev/null && echo on || echo off; }

# ---------------------------------------------------------------- MariaDB + slurmdbd
mysql_root() {
    if mariadb -h 127.0.0.1 -u root -e 'SELECT 1' >/dev/null 2>&1; then
        mariadb -h 127.0.0.1 -u root "$@"
    else
        mariadb -u root "$@"
    fi
}

start_mariadb() {
    if mariadb-admin -h 127.0.0.1 -u root ping >/dev/null 2>&1 || mariadb-admin -u root ping >/dev/null 2>&1; then
        return 0
    fi
    log "starting MariaDB"
    install -d -o mysql -g mysql -m 755 /run/mysqld
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
    wait_until 30 "MariaDB answering" sh -c 'mariadb-admin -h 127.0.0.1 -u root ping || mariadb-admin -u root ping'
}

setup_database() {
    local pw fresh=0
    [ -s "$DIR/db.password" ] || { head -c 24 /dev/urandom | base64 | tr -dc A-Za-z0-9 >"$DIR/db.password"; }
    chmod 600 "$DIR/db.password"
    pw=$(cat "$DIR/db.password")
    # A new state directory (new job ids from 1) gets a new accounting database, so that sacct
    # never mixes in jobs of an earlier cluster with the same ids.
    [ -e "$DIR/state/db.initialised" ] || fresh=1
    if [ $fresh = 1 ]; then
        log "creating MariaDB database $DB_NAME and user $DB_USER"
        stop slurmdbd
        mysql_root -e "DROP DATABASE IF EXISTS \`$DB_NAME\`"
    fi
    mysql_root <<EOF
CREATE DATABASE IF NOT EXISTS \`$DB_NAME\`;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$pw';
CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$pw';
ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$pw';
ALTER USER '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$pw';
GRANT ALL PRIVILEGES ON \`$DB_NAME\`.* TO '$DB_USER'@'localhost';
GRANT ALL PRIVILEGES ON \`$DB_NAME\`.* TO '$DB_USER'@'127.0.0.1';
EOF
    local tmp
    tmp=$(mktemp "$DIR/.slurmdbd.conf.XXXXXX")
    cat >"$tmp" <<EOF
# Generated by tests/setup/cluster.sh
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=slurm
DebugLevel=info
LogFile=$DIR/log/slurmdbd.log
PidFile=$DIR/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3306
StorageUser=$DB_USER
StoragePass=$pw
StorageLoc=$DB_NAME
EOF
    chown slurm:slurm "$tmp"
    chmod 600 "$tmp"
    mv -f "$tmp" "$DIR/slurmdbd.conf"
    [ "$(readlink /etc/slurm/slurmdbd.conf 2>/dev/null)" = "$DIR/slurmdbd.conf" ] \
        || ln -sfn "$DIR/slurmdbd.conf" /etc/slurm/slurmdbd.conf
}

start_slurmdbd() {
    running slurmdbd && return 0
    port_closed 6819 || die "port 6819 is taken by a slurmdbd this script did not start"
    log "starting slurmdbd"
    daemon /usr/sbin/slurmdbd
    wait_until "$WAIT" "slurmdbd answering sacctmgr" sacctmgr -n -P list cluster format=cluster
}

# Cluster, account and users in the accounting database (idempotent).
setup_associations() {
    local u
    sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER" \
        || sacctmgr -i add cluster "$CLUSTER" >/dev/null
    sacctmgr -n -P list account "$ACCOUNT" format=account | grep -qx "$ACCOUNT" \
        || sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" Description="ScriptHut tests" Organization=scripthut >/dev/null
    for u in "${TEST_USERS[@]}" root; do
        sacctmgr -n -P list assoc user="$u" account="$ACCOUNT" cluster="$CLUSTER" format=user | grep -qx "$u" \
            || sacctmgr -i add user "$u" Account="$ACCOUNT" DefaultAccount="$ACCOUNT" Cluster="$CLUSTER" >/dev/null
    done
    touch "$DIR/state/db.initialised"
}

# ---------------------------------------------------------------- slurmctld / slurmd
controller_up() { scontrol ping 2>/dev/null | grep -q 'is UP'; }
# The node answers and can take jobs: idle, mixed or allocated, without '*' (not responding),
# drain or down.
node_ready() {
    local state
    state=$(timeout 10 sinfo -h -n "$(hostname -s)" -o %T 2>/dev/null) || return 1
    case "$state" in idle | mixed | allocated | completing) return 0 ;; *) return 1 ;; esac
}
# slurmctld has registered with slurmdbd (the cluster's control host is known), so jobs reach sacct.
registered() { [ -n "$(sacctmgr -n -P list cluster "$CLUSTER" format=controlhost 2>/dev/null)" ]; }
sacct_works() {
    local out
    out=$(sacct -n -X -S now-1hours 2>&1) || return 1
    ! grep -qi 'disabled' <<<"$out"
}
sacct_disabled() {
    local out
    out=$(sacct -n -X 2>&1) || true
    grep -qi 'accounting storage is disabled' <<<"$out"
}

start_slurmctld() {
    running slurmctld && return 0
    port_closed 6817 || die "port 6817 is taken by a slurmctld this script did not start"
    log "starting slurmctld"
    daemon /usr/sbin/slurmctld
    wait_until "$WAIT" "slurmctld answering scontrol ping" controller_up
}

SLURMD_STARTED_AT=""
start_slurmd() {
    running slurmd && return 0
    log "starting slurmd"
    SLURMD_STARTED_AT=$(date +%s)
    daemon /usr/sbin/slurmd
    wait_until 15 "slurmd listening on port 6818" port_open 6818
}
# The slurmd started by this invocation has registered with slurmctld (a restored node state can
# say idle before that).
slurmd_registered() {
    [ -n "$SLURMD_STARTED_AT" ] || return 0
    local t
    t=$(scontrol show node "$(hostname -s)" 2>/dev/null | grep -o 'SlurmdStartTime=[^ ]*' | cut -d= -f2)
    [ -n "$t" ] && [ "$t" != None ] && [ "$(date -d "$t" +%s)" -ge "$SLURMD_STARTED_AT" ]
}

wait_node_ready() {
    local deadline=$(($(date +%s) + WAIT)) state
    until node_ready && slurmd_registered; do
        state=$(timeout 10 sinfo -h -o '%T %E' 2>/dev/null || true)
        case "$state" in
            drain* | down* | fail*)
                # A node left down/drained by an earlier run (e.g. killed slurmd): put it back.
                scontrol update NodeName="$(hostname -s)" State=RESUME >/dev/null 2>&1 || true ;;
        esac
        [ "$(date +%s)" -lt "$deadline" ] || die "node not idle within ${WAIT}s (sinfo: ${state:-no answer})"
        sleep 0.25
    done
}

wait_accounting() {
    wait_until "$WAIT" "slurmctld registered with slurmdbd" registered
    wait_until "$WAIT" "sacct working" sacct_works
}

restart_slurm() {
    stop slurmctld
    stop slurmd
    start_slurmctld
    start_slurmd
    wait_node_ready
}

# ---------------------------------------------------------------- sshd
setup_ssh_files() {
    [ -s "$DIR/ssh_host_ed25519_key" ] || ssh-keygen -q -t ed25519 -N '' -C scripthut-test-host -f "$DIR/ssh_host_ed25519_key"
    # A user CA the sshd trusts: tests sign their own keys with it to log in by OpenSSH certificate.
    [ -s "$DIR/user_ca" ] || ssh-keygen -q -t ed25519 -N '' -C scripthut-test-user-ca -f "$DIR/user_ca"
    chmod 600 "$DIR/ssh_host_ed25519_key" "$DIR/user_ca"
    printf '[127.0.0.1]:%s %s\n' "$SSH_PORT" "$(cut -d' ' -f1,2 "$DIR/ssh_host_ed25519_key.pub")" >"$DIR/known_hosts"
    chmod 644 "$DIR/known_hosts"
    local u
    for u in "${TEST_USERS[@]}"; do authorize_key "$u"; done

    cat >"$DIR/sshd_config.new" <<EOF
# Generated by tests/setup/cluster.sh: the test sshd, on loopback only.
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey $DIR/ssh_host_ed25519_key
PidFile $DIR/run/sshd.pid
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin no
UsePAM no
AuthorizedKeysFile .ssh/authorized_keys
TrustedUserCAKeys $DIR/user_ca.pub
MaxSessions 50
MaxStartups 50:30:100
LoginGraceTime 30
X11Forwarding no
PrintMotd no
Subsystem sftp internal-sftp
EOF
    install -d -m 755 /run/sshd
    /usr/sbin/sshd -t -f "$DIR/sshd_config.new" || die "sshd rejects $DIR/sshd_config.new"
    # A running sshd keeps the config it started with: restart it below when the config changed.
    if cmp -s "$DIR/sshd_config.new" "$DIR/sshd_config"; then
        rm "$DIR/sshd_config.new"
    else
        mv "$DIR/sshd_config.new" "$DIR/sshd_config"
        SSHD_CONF_CHANGED=1
    fi
}

# authorize_key USER: USER's own key pair in $DIR (USER_ed25519), in USER's authorized_keys.
authorize_key() {
    local user=$1 home ak pub
    [ -s "$DIR/${user}_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C "scripthut-test-$user" -f "$DIR/${user}_ed25519"
    chmod 600 "$DIR/${user}_ed25519"
    home=$(home_of "$user")
    ak="$home/.ssh/authorized_keys"
    pub=$(cat "$DIR/${user}_ed25519.pub")
    install -d -o "$user" -g "$user" -m 700 "$home/.ssh"
    touch "$ak"
    grep -qxF "$pub" "$ak" || echo "$pub" >>"$ak"
    chown "$user:$user" "$ak"
    chmod 600 "$ak"
}

start_sshd() {
    running sshd && return 0
    port_closed "$SSH_PORT" || die "port $SSH_PORT is taken by a process this script did not start"
    log "starting sshd on 127.0.0.1:$SSH_PORT"
    install -d -m 755 /run/sshd
    daemon /usr/sbin/sshd -f "$DIR/sshd_config" -E "$DIR/log/sshd.log"
    wait_until 15 "sshd listening on 127.0.0.1:$SSH_PORT" port_open "$SSH_PORT"
    wait_until 5 "sshd pid file" running sshd
}

stop_sshd() {
    local pid child
    if pid=$(pid_of sshd "$DIR/run/sshd.pid"); then
        # Open sessions are children of our listener: drop them too, as a server going away would.
        for child in $(ps -o pid= --ppid "$pid" 2>/dev/null); do kill -TERM "$child" 2>/dev/null || true; done
        stop sshd
    fi
    wait_until 10 "port $SSH_PORT closed" port_closed "$SSH_PORT"
}

# ---------------------------------------------------------------- cluster.env
write_env() {
    cat >"$DIR/cluster.env" <<EOF
CLUSTER_DIR=$DIR
SSH_HOST=127.0.0.1
SSH_PORT=$SSH_PORT
SSH_USER=$TEST_USER
SSH_KEY=$DIR/${TEST_USER}_ed25519
SSH_USER2=$TEST_USER2
SSH_KEY2=$DIR/${TEST_USER2}_ed25519
SSH_KNOWN_HOSTS=$DIR/known_hosts
SLURM_CLUSTER=$CLUSTER
SLURM_PARTITION=$PARTITION
SLURM_ACCOUNT=$ACCOUNT
SLURM_CONF=$SLURM_CONF
EOF
    chmod 644 "$DIR/cluster.env"
}

# ---------------------------------------------------------------- commands
cmd_start() {
    lock
    rm -f "$DIR/enforce-limits"  # limits are a test's own, for its duration (cmd_limits)
    install_packages
    setup_users
    setup_dirs
    start_munge
    write_slurm_conf on
    start_mariadb
    setup_database
    start_slurmdbd
    setup_associations
    if [ $CONF_CHANGED = 1 ] && { running slurmctld || running slurmd; }; then
        log "slurm.conf changed: restarting slurmctld and slurmd"
        stop slurmctld
        stop slurmd
    fi
    start_slurmctld
    start_slurmd
    wait_node_ready
    wait_accounting
    setup_ssh_files
    if [ $SSHD_CONF_CHANGED = 1 ] && running sshd; then
        log "sshd_config changed: restarting sshd"
        stop_sshd
    fi
    start_sshd
    write_env
    log "ready: Slurm cluster '$CLUSTER' (node $(hostname -s), partition $PARTITION, account $ACCOUNT, accounting on)," \
        "sshd on 127.0.0.1:$SSH_PORT for ${TEST_USERS[*]}; settings in $DIR/cluster.env"
}

cmd_status() {
    local ok=0 c state
    for c in slurmdbd slurmctld slurmd sshd; do
        if running "$c"; then echo "$c: up"; else echo "$c: down"; ok=1; fi
    done
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then echo "munged: up"; else echo "munged: down"; ok=1; fi
    if running slurmctld; then
        state=$(timeout 10 sinfo -h -o %T 2>/dev/null || true)
        echo "node: ${state:-no answer}"
        node_ready || ok=1
    else
        ok=1
    fi
    state=$(accounting_state)
    echo "accounting: $state"
    [ "$state" = on ] || ok=1
    [ -s "$DIR/cluster.env" ] || { echo "cluster.env: missing"; ok=1; }
    # Written by an older cluster.sh, without the second user: start adds it.
    grep -q '^SSH_USER2=' "$DIR/cluster.env" 2>/dev/null || { echo "second test user: missing"; ok=1; }
    return $ok
}

cmd_accounting() {
    local want=${1:-}
    case "$want" in on | off) ;; *) die "usage: cluster.sh accounting on|off" ;; esac
    lock
    [ -s "$DIR/node.conf" ] || die "cluster not set up: run cluster.sh start first"
    start_munge
    if [ "$want" = on ]; then
        start_mariadb
        start_slurmdbd
    fi
    write_slurm_conf "$want"
    if [ $CONF_CHANGED = 1 ] || ! running slurmctld || ! running slurmd; then
        log "accounting $want: restarting slurmctld and slurmd"
        restart_slurm
    fi
    if [ "$want" = on ]; then
        wait_accounting
    else
        wait_until "$WAIT" "sacct saying accounting storage is disabled" sacct_disabled
    fi
    log "accounting $want"
}

cmd_limits() {
    local want=${1:-}
    case "$want" in on | off) ;; *) die "usage: cluster.sh limits on|off" ;; esac
    lock
    [ -s "$DIR/node.conf" ] || die "cluster not set up: run cluster.sh start first"
    if [ "$want" = on ]; then touch "$DIR/enforce-limits"; else rm -f "$DIR/enforce-limits"; fi
    write_slurm_conf "$(accounting_state)"
    if [ $CONF_CHANGED = 1 ] || ! running slurmctld; then
        log "limits $want: restarting slurmctld"
        stop slurmctld
        start_slurmctld
        wait_node_ready
    fi
    log "limits $want"
}

case "${1:-start}" in
    start) cmd_start ;;
    status) cmd_status ;;
    stop-sshd) lock; stop_sshd; log "sshd stopped" ;;
    start-sshd) lock; [ -s "$DIR/sshd_config" ] || die "run cluster.sh start first"; start_sshd; log "sshd up" ;;
    stop-slurmctld)
        lock
        stop slurmctld
        wait_until 10 "port 6817 closed" port_closed 6817
        log "slurmctld stopped"
        ;;
    start-slurmctld)
        lock
        [ -s "$DIR/slurm.conf" ] || die "run cluster.sh start first"
        start_munge
        start_slurmctld
        start_slurmd
        wait_node_ready
        log "slurmctld up"
        ;;
    accounting) cmd_accounting "${2:-}" ;;
    limits) cmd_limits "${2:-}" ;;
    -h | --help | help) sed -n '2,17p' "$0" ;;
    *) die "unknown command '$1' (try: start, status, stop-sshd, start-sshd, stop-slurmctld, start-slurmctld, accounting on|off, limits on|off)" ;;
esac
