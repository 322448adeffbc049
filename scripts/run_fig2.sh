#!/usr/bin/env bash
# The whole of Figure 2 in one command: the MNIST sweep and the Frey Face sweep (their N_z differ,
# so they are two Hydra sweeps) into one dir, then the figure with both rows.
#   scripts/run_fig2.sh OUT_DIR [KEY=VALUE ...]
#   scripts/run_fig2.sh outputs/fig2 hydra/launcher=joblib data.root=data
# Run it again to resume: each job continues from its checkpoint.
set -uo pipefail
out=${1:?usage: scripts/run_fig2.sh OUT_DIR [KEY=VALUE ...]}
shift
status=0
python -m vae_repro.run -m sweep=fig2 "hydra.sweep.dir=$out/mnist" "$@" || status=$?
python -m vae_repro.run -m sweep=fig2_frey "hydra.sweep.dir=$out/frey_face" "$@" || status=$?
python "$(dirname "$0")/plot_fig2.py" "$out" --out "$out/fig2.png" || status=$?
exit "$status"
