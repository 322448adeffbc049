"""Figure 3 of Kingma & Welling (2013) from run dirs: marginal log-likelihood against samples.

    python scripts/plot_fig3.py outputs/multirun/2026-11-26/12-00-00 [more dirs] --out fig3.png

Finds every metrics.csv below the given dirs whose job estimated the marginal likelihood
(`eval.marginal=hmc` or `is`, as `sweep=fig3` sets), and draws one panel per training-set
size (`data.train_size`), left to right from the smallest: each algorithm's estimated
log p(x) on the first images of the train split (solid) and the test split (dashed), against
training samples in millions on a linear axis, as in the paper. Runs that differ only in
seed are drawn as their mean with a min-max band; runs that differ in any other setting get
panels of their own, the setting in their titles. A metrics.csv still being written is fine:
its unfinished last line is ignored.
"""
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from vae_repro import plotting  # noqa: E402

COLUMNS = ("train_log_px_marginal", "test_log_px_marginal")
NAMES = {"wake_sleep": "Wake-Sleep", "mcem": "MCEM", "aevb": "AEVB"}  # the paper's legend, in its order
PAPER_YLIM = (-160.0, -100.0)
SHOWN = {"data.train_size", "algorithm.name"}  # told apart by panels and colours
HINT = ": the marginal likelihood is estimated by runs with eval.marginal=hmc (sweep=fig3 and algorithm=mcem set it)"


def read_runs(dirs: list[Path]) -> pd.DataFrame:
    return plotting.with_settings(plotting.read_runs(dirs, ["samples", *COLUMNS], HINT), SHOWN)


def panel_order(key) -> tuple:
    """Smallest training set first; "all" (a job whose size is not recorded) last."""
    return (1, 0) if key.n_train == "all" else (0, int(key.n_train)), key.setting


def plot(rows: pd.DataFrame) -> plt.Figure:
    """One panel per training-set size and setting, all sharing one y range."""
    keys = sorted(rows[["n_train", "setting"]].drop_duplicates().itertuples(index=False), key=panel_order)
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.8), squeeze=False)
    ylim = plotting.y_range(plotting.curves_of(rows, COLUMNS), PAPER_YLIM)
    for ax, key in zip(axes[0], keys):
        panel = rows[(rows["n_train"] == key.n_train) & (rows["setting"] == key.setting)]
        plotting.draw_curves(ax, panel, COLUMNS, NAMES, x_unit=1e6)
        latent = ", ".join(str(d) for d in sorted(panel["latent_dim"].unique()))
        title = f"$N_{{train}}$ = {key.n_train}, $N_z$ = {latent}"
        ax.set_title(title + (f"\n{key.setting}" if key.setting else ""), fontsize="medium")
        ax.set_xlabel("# training samples evaluated (millions)")
        ax.set_xlim(left=0)
        ax.set_ylim(*ylim)
        ax.grid(True, alpha=0.3)
        plotting.note_outside(ax, panel, COLUMNS)
    axes[0][0].set_ylabel("marginal log-likelihood")
    plotting.legend_below(fig)
    return fig


def main(argv: list[str] | None = None) -> int:
    return plotting.figure_main(__doc__, "fig3.png", lambda args: plot(read_runs(args.dirs)), argv)


if __name__ == "__main__":
    sys.exit(main())
