#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for tests/test_cluster.py and for trying the SLURM
# profiles without a real cluster.
#
#   tests/cluster/slurm-local.sh up DIR     # start munged, slurmctld, slurmd; wait until the node is idle
#   source DIR/env.sh                       # SLURM_CONF=DIR/slurm.conf for sbatch, squeue, scontrol
#   tests/cluster/slurm-local.sh down DIR   # cancel the jobs, stop exactly the daemons `up` started
#
# Needs root (slurmd starts each job as its owner) and Debian's slurm-wlm and munge packages
# (apt-get install slurm-wlm munge; SLURM 22.05 on Debian 12). The node gets this machine's CPUs and
# memory (`slurmd -C`) in one partition, `local`. Configuration, state, spool and logs live under DIR;
# outside it, only the standard runtime paths: MUNGE's socket /run/munge/munge.socket.2 (a munged
# already answering there is used, else one is started with a fresh key in DIR/munge) and the link
# /run/slurm/conf that a configless slurmd makes to its copy of slurm.conf. Nothing under /etc.
# No accounting database: `sacct` cannot answer (use the plugin's `--slurm-status-command squeue`);
# jobcomp/filetxt writes one line per finished job with its state to DIR/log/jobcomp.txt, and
# `squeue --states=all` lists finished jobs for an hour (MinJobAge).
# Ports: SLURMCTLD_PORT (default 6817) and SLURMD_PORT (default 6818); `up` stops if either is taken.
set -euo pipefail

die() { echo "slurm-local: $*" >&2; exit 1; }

usage() { die "usage: $0 {up|down} DIR"; }

[ $# -eq 2 ] || usage
ACTION=$1
DIR=$2
DAEMONS=(slurmd slurmctld munged)  # stop order
MUNGE_SOCKET=/run/munge/munge.socket.2
CONF_LINK=/run/slurm/conf  # where a configless slurmd links its copy of the configuration

port_taken() {  # is something listening on TCP port $1?
  if command -v ss >/dev/null; then
    ss -Hltn "sport = :$1" | grep -q .
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
  fi
}

slurmd_running() {  # does any slurmd process run on this machine?
  local comm
  for comm in /proc/[0-9]*/comm; do
    [ "$(cat "$comm" 2>/dev/null)" = slurmd ] && return 0
  done
  return 1
}

pid_of() {  # the pid in DIR/run/$1.pid if that process is still the daemon $1
  local file="$DIR/run/$1.pid" pid
  [ -s "$file" ] || return 1
  pid=$(cat "$file")
  [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$1" ] || return 1
  echo "$pid"
}

abort() {  # a daemon did not start: show why, stop what did start, exit
  show_logs
  down >/dev/null
  die "$*"
}

show_logs() {
  for f in "$DIR"/log/*.log; do
    [ -s "$f" ] && { echo "--- $f (last lines)"; tail -n 15 "$f"; }
  done >&2
}

up() {
  [ "$(id -u)" = 0 ] || die "must run as root (slurmd starts jobs as their owner); not starting"
  local missing=()
  for cmd in munged munge unmunge slurmctld slurmd sinfo sbatch squeue scancel scontrol; do
    command -v "$cmd" >/dev/null || missing+=("$cmd")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    if command -v apt-get >/dev/null; then
      die "not installed: ${missing[*]} (install with: apt-get install slurm-wlm munge)"
    fi
    die "not installed: ${missing[*]}, and there is no apt-get: install SLURM (>= 22.05) and MUNGE with this system's package manager"
  fi
  local ctld_port=${SLURMCTLD_PORT:-6817} slurmd_port=${SLURMD_PORT:-6818}
  for port in "$ctld_port" "$slurmd_port"; do
    if port_taken "$port"; then
      die "TCP port $port is taken (another slurmctld/slurmd?); choose free ones with SLURMCTLD_PORT=... SLURMD_PORT=..."
    fi
  done
  for d in "${DAEMONS[@]}"; do
    if pid_of "$d" >/dev/null; then die "$d of $DIR is already running; run '$0 down $DIR' first"; fi
  done
  if [ -e "$CONF_LINK" ] || [ -L "$CONF_LINK" ]; then
    if slurmd_running; then
      die "$CONF_LINK exists and a slurmd runs on this machine (stop it first, or use that cluster)"
    fi
    # A cluster that was killed (or a machine snapshot taken while one ran) leaves the link behind.
    echo "slurm-local: removed $CONF_LINK -> $(readlink "$CONF_LINK" || true), left by a slurmd that no longer runs"
    rm -f "$CONF_LINK"
  fi

  mkdir -p "$DIR"/{munge,state,spool,log,run}
  DIR=$(cd "$DIR" && pwd)
  chmod 700 "$DIR/munge"

  # MUNGE on its standard socket: a configless slurmd authenticates before it has slurm.conf, so it
  # can only use the default socket. A munged that already answers there is used as it is.
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    echo "slurm-local: using the munged already running on $MUNGE_SOCKET"
  else
    mkdir -p "$(dirname "$MUNGE_SOCKET")"
    dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
    chmod 400 "$DIR/munge/munge.key"
    munged --force --socket="$MUNGE_SOCKET" --key-file="$DIR/munge/munge.key" --pid-file="$DIR/run/munged.pid" \
      --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed" \
      || abort "munged did not start"
  fi

  # The node as slurmd sees this machine: "NodeName=<host> CPUs=.. Boards=.. ... RealMemory=.."
  local node host
  node=$(slurmd -C | head -n 1)
  host=$(hostname -s)
  [[ $node == NodeName=* ]] || abort "slurmd -C did not describe this machine: $node"

  cat >"$DIR/slurm.conf" <<EOF
# written by $0 up $DIR
ClusterName=vgcore-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
MailProg=/bin/true
# containers often have no usable cgroups: track processes by /proc, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SwitchType=switch/none
# no slurmdbd: finished jobs are written to a text file
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.txt
# CPUs and memory are consumable: a job asking for more than the node has is refused at submission
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SchedulerType=sched/backfill
ReturnToService=2
# configless: slurmd fetches this file from slurmctld and links /run/slurm/conf to its copy, where
# srun inside a job finds it (the executor plugin's job step clears SLURM_CONF from srun's environment)
SlurmctldParameters=enable_configless
# finished jobs stay visible to squeue/scontrol (with their comment: the rule) for an hour
MinJobAge=3600
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  echo "export SLURM_CONF=$DIR/slurm.conf" >"$DIR/env.sh"
  export SLURM_CONF="$DIR/slurm.conf"

  slurmctld -c || abort "slurmctld did not start"
  env -u SLURM_CONF slurmd --conf-server "127.0.0.1:$ctld_port" || abort "slurmd did not start"

  local deadline=$((SECONDS + ${SLURM_LOCAL_TIMEOUT:-60})) state=""
  while [ $SECONDS -lt $deadline ]; do
    state=$(sinfo -h -N -o %T 2>/dev/null | head -n 1 || true)
    [ "$state" = idle ] && break
    sleep 1
  done
  [ "$state" = idle ] || abort "the node did not become idle within ${SLURM_LOCAL_TIMEOUT:-60} s (last state: '${state:-no answer}')"
  echo "slurm-local: cluster up: $(sinfo -h -o '%P %D node(s) %c CPUs %m MB %T'); source $DIR/env.sh"
}

down() {
  DIR=$(cd "$DIR" 2>/dev/null && pwd) || die "no such directory: $DIR"
  export SLURM_CONF="$DIR/slurm.conf"
  if pid_of slurmctld >/dev/null; then  # cancel this cluster's jobs first, so that none outlives it
    scancel --quiet --user=root 2>/dev/null || true
    for _ in $(seq 50); do
      [ -z "$(squeue -h -t running,completing -o %i 2>/dev/null)" ] && break
      sleep 0.2
    done
  fi
  for d in "${DAEMONS[@]}"; do
    local pid
    pid=$(pid_of "$d") || continue
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
      [ -d "/proc/$pid" ] || break
      sleep 0.2
    done
    if [ -d "/proc/$pid" ]; then kill -9 "$pid" 2>/dev/null || true; fi
    rm -f "$DIR/run/$d.pid"
  done
  if [ -L "$CONF_LINK" ] && [[ $(readlink "$CONF_LINK") == "$DIR"/* ]]; then rm -f "$CONF_LINK"; fi
  echo "slurm-local: cluster in $DIR stopped"
}

case $ACTION in
  up) up ;;
  down) down ;;
  *) usage ;;
esac
