#!/usr/bin/env bash
# Install and start a single-node Slurm cluster (munge auth, select/cons_tres,
# no accounting) on this machine, so that `snakemake --profile slurm` can be
# tested for real (tests/test_slurm.py, `make test-slurm`).
#
# Debian/Ubuntu only (apt-get install slurm-wlm munge); needs root. Idempotent:
# packages already installed are kept, a slurm.conf this script wrote is
# rewritten, daemons already answering are left running. A slurm.conf that this
# script did not write is never overwritten (the machine is a real cluster
# node then): the script stops with a message instead.
#
# The one node is this host with its real CPU count and memory (`slurmd -C`);
# one partition `ci` holds it. Process tracking is `linuxproc` and task
# binding `none` so that containers without a writable cgroup tree work.
set -euo pipefail

CONF_DIR=/etc/slurm
CONF="$CONF_DIR/slurm.conf"
MARK="# written by clumpcat .ci/slurm-setup.sh"
LOG_DIR=/var/log/slurm

say() { echo "slurm-setup: $*"; }
die() { echo "slurm-setup: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (it installs packages and starts daemons): sudo $0"

# --- packages -----------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    command -v apt-get >/dev/null || die "apt-get not found: install slurm-wlm and munge with this system's package manager, then rerun"
    say "installing slurm-wlm and munge (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq slurm-wlm munge >/dev/null
fi

# --- munge --------------------------------------------------------------------
if [ ! -s /etc/munge/munge.key ]; then
    say "creating /etc/munge/munge.key"
    if command -v mungekey >/dev/null; then
        mungekey --create --force
    else
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
    fi
fi
chown munge:munge /etc/munge/munge.key
chmod 400 /etc/munge/munge.key
install -d -o munge -g munge -m 0755 /run/munge
install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    say "starting munged"
    runuser -u munge -- /usr/sbin/munged --force
    for _ in $(seq 20); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.5; done
    munge -n | unmunge >/dev/null || die "munged does not answer (see /var/log/munge/munged.log)"
fi

# --- slurm.conf -----------------------------------------------------------------
if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    die "$CONF exists and was not written by this script; leaving this machine's Slurm alone"
fi
HOST=$(hostname -s)
# `slurmd -C` reports this host as Slurm sees it: CPUs, sockets, cores, memory.
NODE=$(slurmd -C | head -n 1 | sed "s/^NodeName=[^ ]*/NodeName=$HOST/")
REAL_MEM=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$NODE")
# Leave 5 % of the memory to the daemons: a node whose RealMemory exceeds what
# slurmd measures is drained as "Low RealMemory".
NODE=$(sed "s/RealMemory=[0-9]*/RealMemory=$((REAL_MEM * 95 / 100))/" <<<"$NODE")
install -d -m 0755 "$CONF_DIR" "$LOG_DIR"
install -d -o slurm -g slurm -m 0755 /var/lib/slurm/slurmctld
install -d -m 0755 /var/lib/slurm/slurmd
NEW=$(mktemp)
cat >"$NEW" <<EOF
$MARK
ClusterName=clumpcat-ci
SlurmctldHost=$HOST
AuthType=auth/munge
CredType=cred/munge
SlurmUser=slurm
SlurmdUser=root
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=60
MinJobAge=300
$NODE State=UNKNOWN
PartitionName=ci Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
CHANGED=0
if ! cmp -s "$NEW" "$CONF"; then
    install -m 0644 "$NEW" "$CONF"
    CHANGED=1
    say "wrote $CONF ($NODE)"
fi
rm -f "$NEW"

# --- daemons --------------------------------------------------------------------
running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
if [ "$CHANGED" = 1 ]; then
    # A new configuration: restart whatever this script started before.
    for pidfile in /run/slurmd.pid /run/slurmctld.pid; do
        if running "$pidfile"; then kill "$(cat "$pidfile")"; sleep 1; fi
    done
fi
if ! running /run/slurmctld.pid; then
    say "starting slurmctld"
    /usr/sbin/slurmctld
fi
if ! running /run/slurmd.pid; then
    say "starting slurmd"
    /usr/sbin/slurmd
fi
for _ in $(seq 60); do
    sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)' && break
    sleep 1
done
STATE=$(sinfo -h -o %T 2>/dev/null || true)
case "$STATE" in
    idle* | mixed* | allocated*) ;;
    *)
        # A node left down/drained by an earlier configuration comes back here.
        scontrol update nodename="$HOST" state=resume 2>/dev/null || true
        sleep 2
        STATE=$(sinfo -h -o %T 2>/dev/null || true)
        ;;
esac
case "$STATE" in
    idle* | mixed* | allocated*) say "cluster up: $(sinfo -h -o '%P %D %c %m %T')" ;;
    *) die "node state '$STATE' (see $LOG_DIR/slurmctld.log and $LOG_DIR/slurmd.log)" ;;
esac
