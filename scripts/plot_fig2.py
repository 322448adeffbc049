"""Figure 2 of Kingma & Welling (2013) from run dirs: ELBO against samples, AEVB and wake-sleep.

    python scripts/plot_fig2.py outputs/multirun/2026-11-24/12-00-00 [more dirs] --out fig2.png

Finds every metrics.csv below the given dirs and reads each job's dataset, N_z and algorithm
from its .hydra/config.yaml. Draws a row of panels per dataset, one panel per N_z, each row
with its own y range; in each panel AEVB and wake-sleep where found, train solid and test dashed.
Runs of the same algorithm and N_z (seeds) are drawn as their mean with a min-max band.
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
DATASET_ORDER = ["mnist", "fashion_mnist", "frey_face"]  # rows, top to bottom, as in the paper
# The y range of the paper's panels, widened to fit the data.
PAPER_YLIM = {"mnist": (-150.0, -95.0), "frey_face": (0.0, 1600.0)}
NAMES = {"aevb": "AEVB", "wake_sleep": "WS"}  # the algorithms of Figure 2, as its legend names them


def read_runs(dirs: list[Path]) -> pd.DataFrame:
    """The rows of the runs of Figure 2's algorithms below `dirs` (Monte Carlo EM has no ELBO)."""
    rows = plotting.read_runs(dirs, NEEDED_COLUMNS)
    rows = rows[rows["algorithm"].isin(list(NAMES))]
    if rows.empty:
        raise PlotError(f"no AEVB or wake-sleep runs below {', '.join(map(str, dirs))}")
    return rows


def plot(rows: pd.DataFrame) -> plt.Figure:
    """A row of panels per dataset, in the paper's order, one panel per N_z in increasing N_z."""
    datasets = sorted(rows["dataset"].unique(), key=DATASET_ORDER.index)
    latent_dims = {d: sorted(rows.loc[rows["dataset"] == d, "latent_dim"].unique()) for d in datasets}
    n_cols = max(len(dims) for dims in latent_dims.values())
    fig, axes = plt.subplots(len(datasets), n_cols, figsize=(3.2 * n_cols, 3.4 * len(datasets)), squeeze=False)
    for row_axes, dataset in zip(axes, datasets):
        data = rows[rows["dataset"] == dataset]
        ylim = plotting.y_range(data[["train_elbo", "test_elbo"]].to_numpy(), PAPER_YLIM.get(dataset))
        for ax, latent_dim in zip(row_axes, latent_dims[dataset]):
            plotting.draw_curves(ax, data[data["latent_dim"] == latent_dim], ("train_elbo", "test_elbo"), NAMES)
            ax.set_title(f"{DATASET_TITLES[dataset]}, $N_z$ = {latent_dim}")
            ax.set_xscale("log")
            ax.set_xlabel("# training samples evaluated")
            ax.set_ylim(*ylim)
            ax.grid(True, which="major", alpha=0.3)
        row_axes[0].set_ylabel("ELBO per datapoint (nats)")
        row_axes[len(latent_dims[dataset]) - 1].legend(loc="lower right", fontsize="small")
        for ax in row_axes[len(latent_dims[dataset]):]:
            ax.remove()  # a row with fewer N_z than the widest
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> int:
    return plotting.figure_main(__doc__, "fig2.png", lambda dirs: plot(read_runs(dirs)), argv)


if __name__ == "__main__":
    sys.exit(main())
