#!/bin/bash -l
#PBS -N ezpz-train
#PBS -l select=2
#PBS -l walltime=00:30:00
#PBS -l filesystems=home:eagle
#PBS -q debug
#PBS -A YOUR_PROJECT
#PBS -j oe
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
#   OUTDIR        output folder (default: outputs/train/$PBS_JOBID)
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

cmd=(
    "${MPIEXEC}" -n "${NRANKS}" --ppn "${PPN}" --hostfile "${PBS_NODEFILE}"
    "${BIND_ARGS[@]}"
    "${PYTHON}" -m ezpz.examples.train --outdir "${OUTDIR}" "$@"
)

echo "pbs.sh: ${NNODES} node(s) x ${PPN} rank(s) = ${NRANKS} ranks; backends=${EZPZ_TRACKER_BACKENDS}"
if [[ "${EZPZ_DRY_RUN:-0}" == "1" ]]; then
    printf '%q ' "${cmd[@]}"
    printf '\n'
    exit 0
fi
exec "${cmd[@]}"
