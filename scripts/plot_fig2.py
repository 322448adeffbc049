"""Figure 2 of Kingma & Welling (2013) from run dirs: ELBO against samples, AEVB and wake-sleep.

    python scripts/plot_fig2.py outputs/multirun/2026-11-24/12-00-00 [more dirs] --out fig2.png

Finds every metrics.csv below the given dirs and reads each job's dataset, N_z and algorithm
from its .hydra/config.yaml. Draws a row of panels per dataset, one panel per N_z, each row
with its own y range; in each panel AEVB and wake-sleep where found, train solid and test dashed.
Runs of the same algorithm and N_z (seeds) are drawn as their mean with a min-max band.
A metrics.csv still being written is fine: its unfinished last line is ignored.
"""
import argparse
import io
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from vae_repro.data import DATASET_TITLES  # noqa: E402

NEEDED_COLUMNS = ["samples", "train_elbo", "test_elbo"]
DATASET_ORDER = ["mnist", "fashion_mnist", "frey_face"]  # rows, top to bottom, as in the paper
# The y range of the paper's panels, widened to fit the data.
PAPER_YLIM = {"mnist": (-150.0, -95.0), "frey_face": (0.0, 1600.0)}
ALGORITHMS = {"aevb": ("AEVB", "tab:red"), "wake_sleep": ("WS", "tab:green")}  # legend name and colour


class PlotError(Exception):
    pass


def read_metrics(path: Path) -> pd.DataFrame:
    text = path.read_text()
    if not text.endswith("\n"):  # the job is writing its next row right now
        text = text[: text.rfind("\n") + 1]
    frame = pd.read_csv(io.StringIO(text))
    missing = [c for c in NEEDED_COLUMNS if c not in frame.columns]
    if missing:
        raise PlotError(f"{path}: missing column(s) {', '.join(missing)}")
    return frame


def read_runs(dirs: list[Path]) -> pd.DataFrame:
    """All rows of all runs below `dirs`, with columns run, latent_dim, dataset and algorithm added."""
    frames = []
    for d in dirs:
        paths = sorted(d.rglob("metrics.csv"))
        if not paths:
            raise PlotError(f"{d}: no metrics.csv below this dir")
        for path in paths:
            config_path = path.parent / ".hydra" / "config.yaml"
            if not config_path.exists():
                raise PlotError(f"{path.parent}: no .hydra/config.yaml to read N_z from")
            config = OmegaConf.load(config_path)
            frame = read_metrics(path)
            if len(frame):  # a job that has not reached its first evaluation has no rows yet
                frames.append(frame.assign(run=str(path.parent), latent_dim=int(config.latent_dim),
                                           dataset=str(config.data.name),
                                           algorithm=str(OmegaConf.select(config, "algorithm.name", default="aevb"))))
    if not frames:
        raise PlotError(f"no evaluated rows yet in the metrics.csv files below {', '.join(map(str, dirs))}")
    return pd.concat(frames, ignore_index=True)


def y_range(dataset: str, values) -> tuple[float, float]:
    """The paper's range for the dataset, widened to the data; the data's own range otherwise."""
    low, high = values.min(), values.max()
    if dataset in PAPER_YLIM:
        paper_low, paper_high = PAPER_YLIM[dataset]
        if paper_low <= low and high <= paper_high:
            return paper_low, paper_high
        low, high = min(paper_low, low), max(paper_high, high)
    margin = 0.02 * (high - low) or 1.0
    return low - margin, high + margin


def draw_panel(ax: plt.Axes, panel: pd.DataFrame) -> None:
    """Each algorithm's train (solid) and test (dashed) curve, seeds as mean with a min-max band."""
    for algorithm, (name, colour) in ALGORITHMS.items():
        runs = panel[panel["algorithm"] == algorithm]
        if runs.empty:
            continue
        for column, style, split in (("train_elbo", "-", "train"), ("test_elbo", "--", "test")):
            stats = runs.groupby("samples")[column].agg(["mean", "min", "max"])
            ax.plot(stats.index, stats["mean"], style, color=colour, label=f"{name} ({split})")
            if runs["run"].nunique() > 1:
                ax.fill_between(stats.index, stats["min"], stats["max"], color=colour, alpha=0.2, linewidth=0)


def plot(rows: pd.DataFrame) -> plt.Figure:
    """A row of panels per dataset, in the paper's order, one panel per N_z in increasing N_z."""
    datasets = sorted(rows["dataset"].unique(), key=DATASET_ORDER.index)
    latent_dims = {d: sorted(rows.loc[rows["dataset"] == d, "latent_dim"].unique()) for d in datasets}
    n_cols = max(len(dims) for dims in latent_dims.values())
    fig, axes = plt.subplots(len(datasets), n_cols, figsize=(3.2 * n_cols, 3.4 * len(datasets)), squeeze=False)
    for row_axes, dataset in zip(axes, datasets):
        data = rows[rows["dataset"] == dataset]
        ylim = y_range(dataset, data[["train_elbo", "test_elbo"]].to_numpy())
        for ax, latent_dim in zip(row_axes, latent_dims[dataset]):
            draw_panel(ax, data[data["latent_dim"] == latent_dim])
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="run or sweep dirs holding metrics.csv files")
    parser.add_argument("--out", type=Path, default=Path("fig2.png"),
                        help="output file; a name ending in .pdf writes a PNG beside it too")
    args = parser.parse_args(argv)
    try:
        fig = plot(read_runs(args.dirs))
    except PlotError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=150)
    if args.out.suffix == ".pdf":
        fig.savefig(args.out.with_suffix(".png"), dpi=150)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
