#!/usr/bin/env bash
# A Slurm job array that spreads one sweep over 4 machines: each array task runs its shard
# (balanced by cost) into the same results folder; the task that finishes the last run
# writes the report. Submit with `sbatch scripts/slurm_array.sh` (SPEC=... to pick a spec).
#SBATCH --job-name=lrprune
#SBATCH --array=0-3
#SBATCH --cpus-per-task=8
#SBATCH --mem=24G
set -euo pipefail
lrprune run "${SPEC:-experiments/quickstart.toml}" --resume --quiet --shard-from-env
