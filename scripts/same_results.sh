#!/usr/bin/env bash
# Whether a change keeps every result to the bit: the same jobs trained by the code at REV and by
# the working tree (a 1e5-sample AEVB, wake-sleep, IWAE and Monte Carlo EM run, and a stack of 4),
# then their metrics.csv (less wall_s) and model.pt weights compared.
#   scripts/same_results.sh REV DATA_ROOT        e.g. scripts/same_results.sh 506cbda ~/mnist
set -euo pipefail
rev=${1:?usage: same_results.sh REV DATA_ROOT}
root=$(realpath "${2:?usage: same_results.sh REV DATA_ROOT}")
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'git -C "$repo" worktree remove --force "$work/code_before" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git -C "$repo" worktree add -q --detach "$work/code_before" "$rev"
common=(data.root="$root" data.download=false train.max_samples=1e5 train.progress=false device=cpu threads=1)
for side in before:"$work/code_before" after:"$repo"; do
    out="$work/${side%%:*}"
    mkdir -p "$out"
    cd "$out"
    export PYTHONPATH="${side#*:}/src"
    for algorithm in aevb wake_sleep iwae; do
        python -m vae_repro.run algorithm=$algorithm "${common[@]}" hydra.run.dir=$algorithm >/dev/null 2>&1
    done
    python -m vae_repro.run algorithm=mcem latent_dim=3 model.hidden_size=100 data.train_size=1000 \
        eval.marginal_points=100 "${common[@]}" hydra.run.dir=mcem >/dev/null 2>&1
    python -m vae_repro.run -m latent_dim=2,3 seed=0,1 hydra/launcher=stack "${common[@]}" \
        hydra.sweep.dir=stack >/dev/null 2>&1
done
cd "$work"
python - <<'PY'
import csv
import sys
from pathlib import Path

import torch


def rows(job):
    with open(job / "metrics.csv") as f:
        return [{k: v for k, v in row.items() if k != "wall_s"} for row in csv.DictReader(f)]


same = True
for job in ["aevb", "wake_sleep", "iwae", "mcem", "stack/0", "stack/1", "stack/2", "stack/3"]:
    before, after = Path("before") / job, Path("after") / job
    weights = [torch.load(d / "model.pt", weights_only=True)["state_dict"] for d in (before, after)]
    same_weights = weights[0].keys() == weights[1].keys() and all(torch.equal(weights[0][k], weights[1][k])
                                                                  for k in weights[0])
    same_rows = rows(before) == rows(after)
    same &= same_rows and same_weights
    print(f"{job:10s} {len(rows(after))} rows  metrics.csv {'same' if same_rows else 'DIFFERS'}  "
          f"model.pt {'same' if same_weights else 'DIFFERS'}")
sys.exit(0 if same else 1)
PY
