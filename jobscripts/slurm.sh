#!/bin/bash
#SBATCH --job-name=ezpz-train
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=8
#SBATCH --time=00:30:00
#SBATCH --output=%x-%j.out
#SBATCH --open-mode=append
# Restarts (docs/restarts.md): 120 s before the time limit Slurm sends USR1 to
# this script (B:), which stops the training with SIGTERM (every rank saves the
# run) and requeues the job; the requeued job (same job id, same OUTDIR)
# resumes the run (EZPZ_RESUME=auto) from the example's last checkpoint.
#SBATCH --signal=B:USR1@120
#SBATCH --requeue
#
# Run the ezpz example on every accelerator of a Slurm job with srun. Edit the
# #SBATCH lines (account, partition/constraint, GPUs) for your site, then:
#
#   sbatch jobscripts/slurm.sh
#   EZPZ_TRACKER_BACKENDS=csv,mlflow sbatch jobscripts/slurm.sh --steps 1000
#
# Arguments after the script name go to the example (sbatch passes them on).
#
# Environment knobs (all optional):
#   PYTHON        python with ezpz installed (default: python3 on PATH)
#   PPN           ranks per node (default: SLURM_NTASKS_PER_NODE, else 1)
#   SRUN_ARGS     extra srun flags, e.g. "--mpi=pmix --gpus-per-task=1"
#   OUTDIR        output folder (default: outputs/train/$SLURM_JOB_ID; a requeued
#                 job keeps its id, so it finds the run it continues)
#   EZPZ_RESUME   auto (default here): continue the newest unfinished run in OUTDIR
#   MAX_RESTARTS  requeues allowed on USR1 (default 5; SLURM_RESTART_COUNT counts them)
#   EZPZ_DRY_RUN  1: print the launch command and exit
# Tracking (see docs/training.md): EZPZ_TRACKER_BACKENDS, WANDB_MODE,
# WB_PROJECT, MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_NAME, EZPZ_TRACK_MEMORY.
set -euo pipefail

cd "${SLURM_SUBMIT_DIR:-$PWD}"

# ---- Environment: load your modules / activate your venv here -------------
# module load python && source ~/venvs/ezpz/bin/activate
PYTHON="${PYTHON:-python3}"

if [[ -z "${SLURM_JOB_ID:-}" ]]; then
    echo "slurm.sh: SLURM_JOB_ID is not set; submit with sbatch or run inside salloc" >&2
    exit 2
fi

NNODES="${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-1}}"
# SLURM_NTASKS_PER_NODE can read "4(x2)": keep the number before the bracket.
TASKS_PER_NODE="${SLURM_NTASKS_PER_NODE:-1}"
PPN="${PPN:-${TASKS_PER_NODE%%(*}}"
NRANKS=$((NNODES * PPN))
read -r -a EXTRA_SRUN <<<"${SRUN_ARGS:-}"

# ---- Tracking, configured through the environment -------------------------
export EZPZ_TRACKER_BACKENDS="${EZPZ_TRACKER_BACKENDS:-csv,wandb}"
export WANDB_MODE="${WANDB_MODE:-offline}"
export WB_PROJECT="${WB_PROJECT:-ezpz-train}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}"
OUTDIR="${OUTDIR:-outputs/train/${SLURM_JOB_ID}}"
# One run across requeues: History(resume="auto") and the example's --resume.
export EZPZ_RESUME="${EZPZ_RESUME:-auto}"
MAX_RESTARTS="${MAX_RESTARTS:-5}"

cmd=(
    srun --ntasks="${NRANKS}" --ntasks-per-node="${PPN}" --cpu-bind=cores
    "${EXTRA_SRUN[@]}"
    "${PYTHON}" -m ezpz.examples.train --outdir "${OUTDIR}" "$@" --resume
)

echo "slurm.sh: ${NNODES} node(s) x ${PPN} rank(s) = ${NRANKS} ranks; backends=${EZPZ_TRACKER_BACKENDS}"
if [[ "${EZPZ_DRY_RUN:-0}" == "1" ]]; then
    printf '%q ' "${cmd[@]}"
    printf '\n'
    exit 0
fi

# USR1 (time limit near): SIGTERM to the job step, so every rank flushes the
# JSONL, its per-rank values and the backends (EZPZ_SHUTDOWN_GRACE, 20 s),
# then requeue. A run that ended on its own is not requeued.
requeue_on_usr1() {
    echo "slurm.sh: time limit near (USR1): stopping the run and requeueing"
    kill -TERM "${step_pid}" 2>/dev/null || true
    wait "${step_pid}" || true
    if ((${SLURM_RESTART_COUNT:-0} < MAX_RESTARTS)); then
        scontrol requeue "${SLURM_JOB_ID}"
    else
        echo "slurm.sh: MAX_RESTARTS=${MAX_RESTARTS} reached; not requeueing" >&2
    fi
    exit 0
}
trap requeue_on_usr1 USR1
"${cmd[@]}" &
step_pid=$!
wait "${step_pid}"
