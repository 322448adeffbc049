#!/usr/bin/env bash
# The whole of Figure 2 in one command: the MNIST sweep and the Frey Face sweep (their N_z differ,
# so they are two Hydra sweeps) into one dir, then the figure with both rows.
#   scripts/run_fig2.sh OUT_DIR [--mnist-root DIR] [--frey-root DIR] [KEY=VALUE ...]
#   scripts/run_fig2.sh outputs/fig2 hydra/launcher=joblib data.root=data
#   scripts/run_fig2.sh outputs/fig2 --mnist-root data --frey-root ~/frey hydra/launcher=joblib
# The KEY=VALUE overrides go to both sweeps; --mnist-root and --frey-root set data.root for one
# sweep alone (over a data.root among the overrides). A sweep that cannot run, e.g. Frey Face
# without FreyFace/frey_rawface.mat under its root and no download, says why in one line; the
# figure is drawn from the sweeps that ran. Exit status 0 when everything ran, non-zero otherwise.
# Run it again to resume: each job continues from its checkpoint.
set -uo pipefail
usage="usage: scripts/run_fig2.sh OUT_DIR [--mnist-root DIR] [--frey-root DIR] [KEY=VALUE ...]"
out=${1:?$usage}
shift
mnist_root=() frey_root=()
while [[ $# -gt 0 && $1 == --* ]]; do
    case $1 in
        --mnist-root) mnist_root=("data.root=${2:?$usage}"); shift 2 ;;
        --frey-root) frey_root=("data.root=${2:?$usage}"); shift 2 ;;
        *) echo "error: unknown option $1; $usage" >&2; exit 2 ;;
    esac
done
status=0
python -m vae_repro.run -m sweep=fig2 "hydra.sweep.dir=$out/mnist" "$@" "${mnist_root[@]}" || status=$?
python -m vae_repro.run -m sweep=fig2_frey "hydra.sweep.dir=$out/frey_face" "$@" "${frey_root[@]}" || status=$?
python "$(dirname "$0")/plot_fig2.py" "$out" --out "$out/fig2.png" || status=$?
exit "$status"
