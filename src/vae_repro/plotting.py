"""What the figure scripts share: reading every run below some dirs into one table, the y range
of a row of panels, and curves drawn as the mean of seeds with a min-max band."""
import argparse
import io
import json
import sys
from pathlib import Path
from typing import Callable

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from omegaconf import OmegaConf

COLOURS = {"aevb": "tab:red", "wake_sleep": "tab:green", "mcem": "tab:blue"}


class PlotError(Exception):
    """A problem with the run dirs given to a figure script; the message names the dir or file."""


def read_metrics(path: Path, needed_columns: list[str]) -> pd.DataFrame:
    text = path.read_text()
    if not text.endswith("\n"):  # the job is writing its next row right now
        text = text[: text.rfind("\n") + 1]
    frame = pd.read_csv(io.StringIO(text))
    missing = [c for c in needed_columns if c not in frame.columns]
    if missing:
        raise PlotError(f"{path}: missing column(s) {', '.join(missing)}")
    return frame


def _n_train(job_dir: Path, config) -> str:
    """The number of training images as the job saw it: data.train_size, else its summary's count."""
    size = OmegaConf.select(config, "data.train_size", default=None)
    if size is None and (job_dir / "summary.json").exists():
        size = json.loads((job_dir / "summary.json").read_text()).get("n_train")
    return "all" if size is None else str(size)


def read_runs(dirs: list[Path], needed_columns: list[str]) -> pd.DataFrame:
    """All rows of all runs below `dirs`, with columns run, latent_dim, dataset, algorithm and
    n_train added from each job's .hydra/config.yaml (and summary.json)."""
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
            frame = read_metrics(path, needed_columns)
            if len(frame):  # a job that has not reached its first evaluation has no rows yet
                frames.append(frame.assign(run=str(path.parent), latent_dim=int(config.latent_dim),
                                           dataset=str(config.data.name), n_train=_n_train(path.parent, config),
                                           algorithm=str(OmegaConf.select(config, "algorithm.name", default="aevb"))))
    if not frames:
        raise PlotError(f"no evaluated rows yet in the metrics.csv files below {', '.join(map(str, dirs))}")
    return pd.concat(frames, ignore_index=True)


def y_range(values, paper_range: tuple[float, float] | None) -> tuple[float, float]:
    """The paper's range, widened to the data; the data's own range without one."""
    low, high = np.nanmin(values), np.nanmax(values)
    if paper_range is not None:
        paper_low, paper_high = paper_range
        if paper_low <= low and high <= paper_high:
            return paper_low, paper_high
        low, high = min(paper_low, low), max(paper_high, high)
    margin = 0.02 * (high - low) or 1.0
    return low - margin, high + margin


def draw_curves(ax: plt.Axes, panel: pd.DataFrame, columns: tuple[str, str], names: dict[str, str],
                x_unit: float = 1.0) -> None:
    """Each algorithm of `names` found in `panel`: its train (solid) and test (dashed) column against
    samples / x_unit, seeds as mean with a min-max band, labelled "NAME (train)" and "NAME (test)"."""
    for algorithm, name in names.items():
        runs = panel[panel["algorithm"] == algorithm]
        if runs.empty:
            continue
        for column, style, split in zip(columns, ("-", "--"), ("train", "test")):
            stats = runs.groupby("samples")[column].agg(["mean", "min", "max"])
            x = stats.index / x_unit
            ax.plot(x, stats["mean"], style, color=COLOURS[algorithm], label=f"{name} ({split})")
            if runs["run"].nunique() > 1:
                ax.fill_between(x, stats["min"], stats["max"], color=COLOURS[algorithm], alpha=0.2, linewidth=0)


def figure_main(doc: str, default_out: str, make_figure: Callable[[list[Path]], plt.Figure],
                argv: list[str] | None) -> int:
    """A figure script's command line: run dirs in, a PNG (or PDF and PNG) out, one-line errors."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="run or sweep dirs holding metrics.csv files")
    parser.add_argument("--out", type=Path, default=Path(default_out),
                        help="output file; a name ending in .pdf writes a PNG beside it too")
    args = parser.parse_args(argv)
    try:
        fig = make_figure(args.dirs)
    except PlotError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=150)
    if args.out.suffix == ".pdf":
        fig.savefig(args.out.with_suffix(".png"), dpi=150)
    print(f"wrote {args.out}")
    return 0
