"""Figure 2 of Kingma & Welling (2013) from run dirs: one panel per N_z, ELBO against samples.

    python scripts/plot_fig2.py outputs/multirun/2026-11-24/12-00-00 [more dirs] --out fig2.png

Finds every metrics.csv below the given dirs and reads each job's N_z and dataset from its
.hydra/config.yaml. Runs with the same N_z (seeds) are drawn as their mean with a min-max
band. A metrics.csv still being written is fine: its unfinished last line is ignored.
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

NEEDED_COLUMNS = ["samples", "train_elbo", "test_elbo"]
PAPER_YLIM = (-150.0, -95.0)  # the paper's MNIST panels
DATASET_TITLES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}


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
    """All rows of all runs below `dirs`, with columns run, latent_dim and dataset added."""
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
                                           dataset=str(config.data.name)))
    if not frames:
        raise PlotError(f"no evaluated rows yet in the metrics.csv files below {', '.join(map(str, dirs))}")
    return pd.concat(frames, ignore_index=True)


def plot(rows: pd.DataFrame) -> plt.Figure:
    """One panel per dataset and N_z, in increasing N_z."""
    panels = sorted(rows.groupby(["dataset", "latent_dim"]).groups)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), sharey=True, squeeze=False)
    for ax, (dataset, latent_dim) in zip(axes[0], panels):
        panel = rows[(rows["dataset"] == dataset) & (rows["latent_dim"] == latent_dim)]
        for column, style, label in (("train_elbo", "-", "AEVB (train)"), ("test_elbo", "--", "AEVB (test)")):
            stats = panel.groupby("samples")[column].agg(["mean", "min", "max"])
            (line,) = ax.plot(stats.index, stats["mean"], style, color="tab:red", label=label)
            if panel["run"].nunique() > 1:
                ax.fill_between(stats.index, stats["min"], stats["max"], color=line.get_color(), alpha=0.2,
                                linewidth=0)
        ax.set_title(f"{DATASET_TITLES.get(dataset, dataset)}, $N_z$ = {latent_dim}")
        ax.set_xscale("log")
        ax.set_xlabel("# training samples evaluated")
        ax.grid(True, which="major", alpha=0.3)
    values = rows[["train_elbo", "test_elbo"]].to_numpy()
    low, high = min(PAPER_YLIM[0], values.min()), max(PAPER_YLIM[1], values.max())
    margin = 0.02 * (high - low) if (low, high) != PAPER_YLIM else 0.0
    axes[0][0].set_ylim(low - margin, high + margin)
    axes[0][0].set_ylabel("ELBO per datapoint (nats)")
    axes[0][-1].legend(loc="lower right")
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
