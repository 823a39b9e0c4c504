#!/bin/bash -l
#PBS -N ezpz-train
#PBS -l select=2
#PBS -l walltime=00:30:00
#PBS -l filesystems=home:eagle
#PBS -q debug
#PBS -A YOUR_PROJECT
#PBS -j oe
#PBS -r y
#
# Restarts (docs/restarts.md): PBS sends SIGTERM at the walltime (then SIGKILL
# after the kill_delay); every rank saves the run on SIGTERM. With RESUBMIT=1
# the job stops itself STOP_BEFORE seconds before the walltime instead, and
# submits its continuation (same OUTDIR, EZPZ_RESUME=auto), which resumes the
# run from the example's last checkpoint. Jobs rerun by the server (qrerun,
# node failure; "#PBS -r y") keep their job id and OUTDIR and resume as well.
#
# Run the ezpz example on every accelerator of a PBS job (Polaris/Aurora style,
# PALS mpiexec). Edit the #PBS lines (-A, -q, filesystems) for your site, then:
#
#   qsub jobscripts/pbs.sh
#   qsub -v EZPZ_TRACKER_BACKENDS=csv,mlflow,WANDB_MODE=offline jobscripts/pbs.sh
#
# Inside an interactive job, extra arguments go to the example:
#   bash jobscripts/pbs.sh --steps 1000 --hidden 1024
#
# Environment knobs (all optional):
#   PYTHON        python with ezpz installed (default: python3 on PATH; activate
#                 your environment before qsub or in the "Environment" block)
#   PPN           ranks per node (default: GPUs per node: nvidia-smi on Polaris,
#                 12 XPU tiles on Aurora, else 1)
#   DEPTH         CPU cores per rank for --cpu-bind depth (default: 8)
#   CPU_BIND      binding flags for mpiexec (default: "--cpu-bind depth --depth=$DEPTH";
#                 set to "" for launchers without them)
#   MPIEXEC       launcher (default: mpiexec)
#   OUTDIR        output folder (default: outputs/train/$PBS_JOBID; passed on to
#                 a resubmitted job, so the run continues there)
#   EZPZ_RESUME   auto (default here): continue the newest unfinished run in OUTDIR
#   RESUBMIT      1: stop STOP_BEFORE s (default 120) before the walltime and qsub
#                 the continuation, at most MAX_RESTARTS (default 5) times
#   EZPZ_DRY_RUN  1: print the launch command and exit
# Tracking (see docs/training.md): EZPZ_TRACKER_BACKENDS, WANDB_MODE,
# WB_PROJECT, MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_NAME, EZPZ_TRACK_MEMORY.
set -euo pipefail

cd "${PBS_O_WORKDIR:-$PWD}"

# ---- Environment: load your modules / activate your venv here -------------
# module use /soft/modulefiles && module load conda && conda activate base
PYTHON="${PYTHON:-python3}"
MPIEXEC="${MPIEXEC:-mpiexec}"

if [[ -z "${PBS_NODEFILE:-}" || ! -r "${PBS_NODEFILE}" ]]; then
    echo "pbs.sh: PBS_NODEFILE is not set or not readable; run inside a PBS job" >&2
    exit 2
fi

detect_ppn() {
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi -L | grep -c '^GPU'
    elif command -v xpu-smi >/dev/null 2>&1; then
        echo 12 # Aurora: 6 GPUs x 2 tiles, one rank per tile
    else
        echo 1
    fi
}

NNODES="$(sort -u "${PBS_NODEFILE}" | wc -l)"
PPN="${PPN:-$(detect_ppn)}"
NRANKS=$((NNODES * PPN))
DEPTH="${DEPTH:-8}"
read -r -a BIND_ARGS <<<"${CPU_BIND-"--cpu-bind depth --depth=${DEPTH}"}"

# ---- Tracking, configured through the environment -------------------------
# Compute nodes usually have no internet: W&B writes offline runs that
# `wandb sync` uploads later from a login node (docs/training.md).
export EZPZ_TRACKER_BACKENDS="${EZPZ_TRACKER_BACKENDS:-csv,wandb}"
export WANDB_MODE="${WANDB_MODE:-offline}"
export WB_PROJECT="${WB_PROJECT:-ezpz-train}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-${DEPTH}}"
OUTDIR="${OUTDIR:-outputs/train/${PBS_JOBID:-interactive}}"
# One run across restarts: History(resume="auto") and the example's --resume.
export EZPZ_RESUME="${EZPZ_RESUME:-auto}"
RESUBMIT="${RESUBMIT:-0}"
STOP_BEFORE="${STOP_BEFORE:-120}"
MAX_RESTARTS="${MAX_RESTARTS:-5}"
RESTART_COUNT="${RESTART_COUNT:-0}"

cmd=(
    "${MPIEXEC}" -n "${NRANKS}" --ppn "${PPN}" --hostfile "${PBS_NODEFILE}"
    "${BIND_ARGS[@]}"
    "${PYTHON}" -m ezpz.examples.train --outdir "${OUTDIR}" "$@" --resume
)

echo "pbs.sh: ${NNODES} node(s) x ${PPN} rank(s) = ${NRANKS} ranks; backends=${EZPZ_TRACKER_BACKENDS}"
if [[ "${EZPZ_DRY_RUN:-0}" == "1" ]]; then
    printf '%q ' "${cmd[@]}"
    printf '\n'
    exit 0
fi

if [[ "${RESUBMIT}" != "1" ]]; then
    exec "${cmd[@]}"
fi
# RESUBMIT=1: SIGTERM to mpiexec (forwarded to every rank, which saves the run)
# STOP_BEFORE seconds before the walltime, then submit the continuation.
walltime_s() {
    local spec
    spec="$(qstat -f "${PBS_JOBID}" 2>/dev/null | awk -F' = ' '/Resource_List.walltime/ {print $2}')"
    [[ -n "${spec}" ]] || return 1
    IFS=: read -r h m s <<<"${spec}"
    echo $((10#${h} * 3600 + 10#${m} * 60 + 10#${s}))
}
"${cmd[@]}" &
launcher=$!
if limit="$(walltime_s)" && ((limit > STOP_BEFORE)); then
    (
        sleep $((limit - STOP_BEFORE - SECONDS))
        kill -TERM "${launcher}" 2>/dev/null
    ) &
    timer=$!
fi
status=0
wait "${launcher}" || status=$?
[[ -n "${timer:-}" ]] && kill "${timer}" 2>/dev/null
if ((status != 0 && RESTART_COUNT < MAX_RESTARTS)); then
    echo "pbs.sh: stopped with status ${status}; submitting the continuation"
    qsub -v "OUTDIR=${OUTDIR},RESUBMIT=1,RESTART_COUNT=$((RESTART_COUNT + 1)),EZPZ_TRACKER_BACKENDS=${EZPZ_TRACKER_BACKENDS}" \
        "${PBS_O_WORKDIR:-$PWD}/jobscripts/pbs.sh"
fi
exit "${status}"
