#!/usr/bin/env bash
# A one-node Slurm (Debian's slurmctld, slurmd and munge) on this machine, on loopback, for
# trying greenai's Slurm launches without a cluster, and for the tests and CI.
#
#   sudo scripts/local-slurm.sh start   # installs the packages if missing, starts munge + Slurm
#   export SLURM_CONF=/tmp/greenai-slurm/slurm.conf   # what `start` prints
#   python -m greenai.train -m hydra/launcher=slurm hydra.launcher.partition=debug \
#       hydra.launcher.gpus_per_node=0 searcher=random space=paper3 hydra.sweeper.n_trials=4
#   sudo scripts/local-slurm.sh stop
#
# Runs as root (Slurm's daemons and munge need it). State lives in $GREENAI_SLURM_DIR
# (/tmp/greenai-slurm); the system's /etc/slurm is left alone. Job accounting (slurmdbd on a
# local MariaDB) is part of it: submitit asks `sacct` whether a job was cancelled or timed out,
# and without accounting it would wait for such a job forever.
set -euo pipefail
dir=${GREENAI_SLURM_DIR:-/tmp/greenai-slurm}
conf=$dir/slurm.conf
export SLURM_CONF=$conf

packages="slurmctld slurmd slurmdbd slurm-client munge mariadb-server"

install() {
  command -v slurmctld >/dev/null && command -v slurmdbd >/dev/null && command -v munged >/dev/null && command -v mariadbd >/dev/null && return
  export DEBIAN_FRONTEND=noninteractive
  # shellcheck disable=SC2086
  apt-get install -y $packages >/dev/null || { apt-get update >/dev/null && apt-get install -y $packages >/dev/null; }
}

start_mariadb() {
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
  if ! mariadb -e "SELECT 1" >/dev/null 2>&1; then
    [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
    (mariadbd --user=mysql --datadir=/var/lib/mysql --socket=/run/mysqld/mysqld.sock --bind-address=127.0.0.1 >"$dir/log/mariadb.log" 2>&1 &)
    for _ in $(seq 100); do mariadb -e "SELECT 1" >/dev/null 2>&1 && break; sleep 0.2; done
  fi
  mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db; CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
              GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
}

start_slurmdbd() {
  cat > "$dir/slurmdbd.conf" <<CONF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
PidFile=$dir/slurmdbd.pid
LogFile=$dir/log/slurmdbd.log
CONF
  chmod 600 "$dir/slurmdbd.conf"
  slurmdbd  # finds slurmdbd.conf beside $SLURM_CONF
  for _ in $(seq 100); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.2; done
  sacctmgr -i add cluster greenai >/dev/null 2>&1 || true
}

start_munge() {
  [ -f /etc/munge/munge.key ] || { mungekey --create >/dev/null 2>&1 || dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; }
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge && chown munge:munge /run/munge /var/log/munge /var/lib/munge
  if ! munge -n >/dev/null 2>&1; then
    runuser -u munge -- munged
    for _ in $(seq 50); do munge -n >/dev/null 2>&1 && break; sleep 0.1; done
  fi
  munge -n | unmunge >/dev/null
}

write_config() {
  mkdir -p "$dir/state" "$dir/spool" "$dir/log"
  node=$(slurmd -C | head -1)
  cat > "$conf" <<CONF
ClusterName=greenai
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
KillWait=5
MinJobAge=600
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
}

start() {
  install
  mkdir -p "$dir/log"
  start_munge
  stop_daemons
  write_config
  start_mariadb
  start_slurmdbd
  # -c: a fresh cluster each start. Jobs recovered from an earlier, killed session would
  # otherwise show as running though their processes are gone.
  slurmctld -c -f "$conf"
  slurmd -c -f "$conf"
  for _ in $(seq 100); do
    sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)' && break
    sleep 0.2
  done
  sinfo -h -o %T | grep -qE '^(idle|mixed|allocated)' || { echo "Slurm did not come up; see $dir/log" >&2; exit 1; }
  echo "export SLURM_CONF=$conf"
}

stop_daemons() {
  for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/slurmdbd.pid"; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  for _ in $(seq 50); do pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null || break; sleep 0.1; done
  pkill -x slurmd 2>/dev/null || true
  pkill -x slurmctld 2>/dev/null || true
  pkill -x slurmdbd 2>/dev/null || true
}

case "${1:-start}" in
  start) start ;;
  stop) stop_daemons ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
