"""Figure 2 of Kingma & Welling (2013) from run dirs: ELBO against samples, AEVB and wake-sleep.

    python scripts/plot_fig2.py outputs/multirun/2026-11-24/12-00-00 [more dirs] --out fig2.png
    python scripts/plot_fig2.py outputs/runs/DATE/TIME --column kl --ylim 0 40
    python scripts/plot_fig2.py outputs/multirun/DATE/TIME --overlay

Finds every metrics.csv below the given dirs and reads each job's config from its
.hydra/config.yaml. Draws a row of panels per dataset, one panel per N_z, each row with its own
y range; in each panel AEVB and wake-sleep where found, train solid and test dashed. Runs that
differ only in seed are drawn as their mean with a min-max band; runs that differ in any other
setting (the decoder, the step size, ...) get rows of their own, the setting in their titles.
`--column` draws another column than the ELBO, `--ylim` sets the y range by hand. `--overlay`
draws one panel per dataset instead, side by side, with the curves of every N_z on it.
A metrics.csv still being written is fine: its unfinished last line is ignored.
"""
import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from vae_repro import plotting  # noqa: E402
from vae_repro.plotting import PlotError  # noqa: E402

COLUMNS = ("train_elbo", "test_elbo")  # drawn unless --column says otherwise
DATASET_ORDER = ["MNIST", "Fashion-MNIST", "Frey Face"]  # rows, top to bottom, as in the paper; others after
# The y range of the paper's ELBO panels, for its model of each dataset (plotting.y_range widens it to the data).
PAPER_YLIM = {("MNIST", "bernoulli"): (-150.0, -95.0), ("Frey Face", "gaussian"): (0.0, 1600.0)}
# The algorithms of Figure 2 as its legend names them, and IWAE (Burda et al., 2015) beside them.
NAMES = {"aevb": "AEVB", "wake_sleep": "WS", "iwae": "IWAE"}
LINE_STYLES = {"aevb": "-", "wake_sleep": "--", "iwae": ":"}  # --overlay, where colours tell N_z apart
SHOWN = {"data.name", "latent_dim", "algorithm.name"}  # told apart by rows, panels and colours
# The y axis's label for each quantity of metrics.csv; a column not named here is its own label.
Y_LABELS = {"elbo": "ELBO per datapoint (nats)", "log_px": r"$\mathrm{E}_q[\log p(x|z)]$ per datapoint (nats)",
            "kl": r"$\mathrm{KL}(q(z|x)\,\|\,p(z))$ per datapoint (nats)",
            "log_px_marginal": "marginal log-likelihood (nats)", "wall_s": "wall-clock time (s)"}
COLUMN_HELP = ("what to draw (default elbo): a column of metrics.csv (test_kl, wall_s, ...), or one without its "
               "train_/test_ prefix to draw both splits: elbo, log_px (the reconstruction term), kl, log_px_marginal")


def columns_to_draw(name: str, found: list[str]) -> tuple[str, ...]:
    """The columns `--column NAME` stands for, given the columns `found` in metrics.csv: NAME itself,
    or train_NAME and test_NAME."""
    if name in found and name != "samples":
        return (name,)
    both = (f"train_{name}", f"test_{name}")
    if any(column in found for column in both):
        return both  # a run lacking one of them is refused by read_runs, naming its file
    drawable = ", ".join(c for c in found if c != "samples")
    raise PlotError(f"--column {name}: no such column; metrics.csv has {drawable} "
                    f"(elbo, kl, ... without train_/test_ draw both splits)")


def y_label(columns: tuple[str, ...]) -> str:
    quantity = columns[0].removeprefix("train_").removeprefix("test_")
    label = Y_LABELS.get(quantity, quantity)
    if quantity.startswith("iwae") and quantity[4:].isdigit():
        label = f"IWAE-{quantity[4:]} bound per datapoint (nats)"
    return f"{columns[0].split('_')[0]} {label}" if len(columns) == 1 and quantity != columns[0] else label


def legend_names(rows: pd.DataFrame) -> dict[str, str]:
    """The algorithms of `rows` as the legend names them, the paper's first: an algorithm of your own
    by its name."""
    present = set(rows["algorithm"])
    return {a: n for a, n in NAMES.items() if a in present} | {a: a for a in sorted(present - set(NAMES))}


def read_runs(dirs: list[Path], columns: tuple[str, ...] = COLUMNS) -> pd.DataFrame:
    """The rows of the runs below `dirs` that measured `columns` (Monte Carlo EM has no ELBO)."""
    rows = plotting.read_runs(dirs, ["samples", *columns])
    rows = rows.dropna(subset=list(columns), how="all")
    if rows.empty:
        raise PlotError(f"no AEVB or wake-sleep runs below {', '.join(map(str, dirs))}")
    return plotting.with_settings(rows, SHOWN, within="dataset")  # each dataset has rows of its own


def dataset_order(title: str) -> int:
    return DATASET_ORDER.index(title) if title in DATASET_ORDER else len(DATASET_ORDER)


def row_groups(rows: pd.DataFrame) -> list[tuple[tuple, pd.DataFrame]]:
    """The rows of each dataset and setting, in the paper's order of datasets."""
    keys = sorted(rows[["dataset", "setting"]].drop_duplicates().itertuples(index=False),
                  key=lambda k: (dataset_order(k.dataset), k.dataset, k.setting))
    return [(key, rows[(rows["dataset"] == key.dataset) & (rows["setting"] == key.setting)]) for key in keys]


def fitted_ylim(key: tuple, data: pd.DataFrame, columns: tuple[str, ...]) -> tuple[float, float]:
    """The y range of one dataset and setting: its curves', with the paper's range for an ELBO."""
    likelihood = data[plotting.CONFIG + "model.likelihood"].iloc[0]  # one per row: else it is in the setting
    is_elbo = all(column.endswith("_elbo") for column in columns)
    return plotting.y_range(plotting.curves_of(data, columns),
                            PAPER_YLIM.get((key.dataset, likelihood)) if is_elbo else None)


def plot(rows: pd.DataFrame, columns: tuple[str, ...] = COLUMNS, ylim: tuple[float, float] | None = None
         ) -> plt.Figure:
    """A row of panels per dataset and setting, in the paper's order, one panel per N_z in increasing N_z.
    Each row's y range fits its curves (see plotting.y_range), with the paper's range for an ELBO, unless
    `ylim` is given."""
    groups = row_groups(rows)
    latent_dims = [sorted(data["latent_dim"].unique()) for _, data in groups]
    n_cols = max(len(dims) for dims in latent_dims)
    fig, axes = plt.subplots(len(groups), n_cols, figsize=(3.2 * n_cols, 3.4 * len(groups)), squeeze=False)
    for row_axes, (key, data), dims in zip(axes, groups, latent_dims):
        row_ylim = ylim or fitted_ylim(key, data, columns)
        for ax, latent_dim in zip(row_axes, dims):
            panel = data[data["latent_dim"] == latent_dim]
            plotting.draw_curves(ax, panel, columns, legend_names(panel))
            title = f"{key.dataset}, $N_z$ = {latent_dim}"
            ax.set_title(title + (f"\n{key.setting}" if key.setting else ""), fontsize="medium")
            finish_panel(ax, panel, columns, row_ylim)
        row_axes[0].set_ylabel(y_label(columns))
        for ax in row_axes[len(dims):]:
            ax.remove()  # a row with fewer N_z than the widest
    plotting.legend_below(fig)
    return fig


def finish_panel(ax: plt.Axes, panel: pd.DataFrame, columns: tuple[str, ...], ylim: tuple[float, float]) -> None:
    plotting.log_x_axis(ax)
    ax.set_xlabel("# training samples evaluated")
    ax.set_ylim(*ylim)
    ax.grid(True, which="major", alpha=0.3)
    plotting.note_outside(ax, panel, columns)


def plot_overlay(rows: pd.DataFrame, columns: tuple[str, ...] = COLUMNS, ylim: tuple[float, float] | None = None
                 ) -> plt.Figure:
    """One panel per dataset and setting, side by side (no empty slot, whatever their count), each with
    the curves of every N_z: a colour per N_z, a line style per algorithm. Of a train/test pair of
    columns, the test one alone; seeds as their mean, which the panel notes."""
    shown = tuple(c for c in columns if not c.startswith("train_")) or columns
    groups = row_groups(rows)
    fig, axes = plt.subplots(1, len(groups), figsize=(4.8 * len(groups), 4.0), squeeze=False)
    for ax, (key, data) in zip(axes[0], groups):
        dims = sorted(data["latent_dim"].unique())
        for colour, latent_dim in zip(plt.get_cmap("viridis")(np.linspace(0, 0.9, len(dims))), dims):
            for algorithm in legend_names(data):
                runs = data[(data["latent_dim"] == latent_dim) & (data["algorithm"] == algorithm)]
                for column in shown if len(runs) else ():
                    mean = runs.groupby("samples")[column].mean()
                    ax.plot(mean.index, mean.to_numpy(), LINE_STYLES.get(algorithm, "-."), color=colour,
                            marker="o" if len(mean) == 1 else None)  # a lone point shows
            ax.plot([], [], color=colour, label=f"$N_z$ = {latent_dim}")  # legend entries, drawing nothing
        for algorithm, name in legend_names(data).items():
            ax.plot([], [], LINE_STYLES.get(algorithm, "-."), color="0.2", label=name)
        if (seeds := data.groupby(["latent_dim", "algorithm"])["run"].nunique().max()) > 1:
            ax.text(0.02, 0.97, f"mean of up to {seeds} runs per curve", transform=ax.transAxes, fontsize="x-small",
                    va="top", color="0.35")
        ax.set_title(key.dataset + (f"\n{key.setting}" if key.setting else ""), fontsize="medium")
        finish_panel(ax, data, shown, ylim or fitted_ylim(key, data, shown))
        ax.set_ylabel(y_label(shown))
    plotting.legend_below(fig)
    return fig


def make_figure(args: argparse.Namespace) -> plt.Figure:
    if args.ylim is not None and args.ylim[0] >= args.ylim[1]:
        raise PlotError(f"--ylim {args.ylim[0]:g} {args.ylim[1]:g}: LOW must be below HIGH")
    columns = columns_to_draw(args.column, plotting.metrics_columns(args.dirs))
    return (plot_overlay if args.overlay else plot)(read_runs(args.dirs, columns), columns, args.ylim)


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overlay", action="store_true",
                        help="one panel per dataset with the curves of every N_z, a colour each, instead of a panel "
                             "per N_z")
    parser.add_argument("--column", default="elbo", metavar="NAME", help=COLUMN_HELP)
    parser.add_argument("--ylim", nargs=2, type=float, metavar=("LOW", "HIGH"),
                        help="the y range of every panel (default: fit the curves; for the ELBO, the paper's range "
                             "unless the curves lie far from it)")


def main(argv: list[str] | None = None) -> int:
    return plotting.figure_main(__doc__, "fig2.png", make_figure, argv, add_options)


if __name__ == "__main__":
    sys.exit(main())
