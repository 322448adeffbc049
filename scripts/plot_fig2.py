"""Figure 2 of Kingma & Welling (2013) from run dirs: ELBO against samples, AEVB and wake-sleep.

    python scripts/plot_fig2.py outputs/multirun/2026-11-24/12-00-00 [more dirs] --out fig2.png

Finds every metrics.csv below the given dirs and reads each job's config from its
.hydra/config.yaml. Draws a row of panels per dataset, one panel per N_z, each row with its own
y range; in each panel AEVB and wake-sleep where found, train solid and test dashed. Runs that
differ only in seed are drawn as their mean with a min-max band; runs that differ in any other
setting (the decoder, the step size, ...) get rows of their own, the setting in their titles.
A metrics.csv still being written is fine: its unfinished last line is ignored.
"""
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from vae_repro.data import DATASET_TITLES  # noqa: E402
from vae_repro import plotting  # noqa: E402
from vae_repro.plotting import PlotError  # noqa: E402

NEEDED_COLUMNS = ["samples", "train_elbo", "test_elbo"]
COLUMNS = ("train_elbo", "test_elbo")
DATASET_ORDER = ["mnist", "fashion_mnist", "frey_face"]  # rows, top to bottom, as in the paper
# The y range of the paper's panels, for its model of each dataset, widened to fit the data.
PAPER_YLIM = {("mnist", "bernoulli"): (-150.0, -95.0), ("frey_face", "gaussian"): (0.0, 1600.0)}
NAMES = {"aevb": "AEVB", "wake_sleep": "WS"}  # the algorithms of Figure 2, as its legend names them
SHOWN = {"data.name", "latent_dim", "algorithm.name"}  # told apart by rows, panels and colours


def read_runs(dirs: list[Path]) -> pd.DataFrame:
    """The rows of the runs of Figure 2's algorithms below `dirs` (Monte Carlo EM has no ELBO)."""
    rows = plotting.read_runs(dirs, NEEDED_COLUMNS)
    rows = rows[rows["algorithm"].isin(list(NAMES))]
    if rows.empty:
        raise PlotError(f"no AEVB or wake-sleep runs below {', '.join(map(str, dirs))}")
    return plotting.with_settings(rows, SHOWN, within="dataset")  # each dataset has rows of its own


def plot(rows: pd.DataFrame) -> plt.Figure:
    """A row of panels per dataset and setting, in the paper's order, one panel per N_z in increasing N_z."""
    row_keys = sorted(rows[["dataset", "setting"]].drop_duplicates().itertuples(index=False),
                      key=lambda k: (DATASET_ORDER.index(k.dataset), k.setting))
    data_of = {key: rows[(rows["dataset"] == key.dataset) & (rows["setting"] == key.setting)] for key in row_keys}
    latent_dims = {key: sorted(data["latent_dim"].unique()) for key, data in data_of.items()}
    n_cols = max(len(dims) for dims in latent_dims.values())
    fig, axes = plt.subplots(len(row_keys), n_cols, figsize=(3.2 * n_cols, 3.4 * len(row_keys)), squeeze=False)
    for row_axes, key in zip(axes, row_keys):
        data = data_of[key]
        likelihood = data[plotting.CONFIG + "model.likelihood"].iloc[0]  # one per row: else it is in the setting
        ylim = plotting.y_range(plotting.curves_of(data, COLUMNS), PAPER_YLIM.get((key.dataset, likelihood)))
        for ax, latent_dim in zip(row_axes, latent_dims[key]):
            panel = data[data["latent_dim"] == latent_dim]
            plotting.draw_curves(ax, panel, COLUMNS, NAMES)
            title = f"{DATASET_TITLES[key.dataset]}, $N_z$ = {latent_dim}"
            ax.set_title(title + (f"\n{key.setting}" if key.setting else ""), fontsize="medium")
            ax.set_xscale("log")
            ax.set_xlabel("# training samples evaluated")
            ax.set_ylim(*ylim)
            ax.grid(True, which="major", alpha=0.3)
            plotting.note_outside(ax, panel, COLUMNS)
        row_axes[0].set_ylabel("ELBO per datapoint (nats)")
        for ax in row_axes[len(latent_dims[key]):]:
            ax.remove()  # a row with fewer N_z than the widest
    plotting.legend_below(fig)
    return fig


def main(argv: list[str] | None = None) -> int:
    return plotting.figure_main(__doc__, "fig2.png", lambda dirs: plot(read_runs(dirs)), argv)


if __name__ == "__main__":
    sys.exit(main())
