"""What the figure scripts share: reading every run below some dirs into one table, telling
apart runs that are not seeds of one setting, the y range of a row of panels, curves drawn
as the mean of seeds with a min-max band, a log x axis and a legend that fit narrow figures."""
import argparse
import io
import json
import math
import sys
from pathlib import Path
from typing import Callable

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Patch
from matplotlib.ticker import EngFormatter, LogLocator, NullFormatter
from omegaconf import OmegaConf

from vae_repro.config import NOT_A_SETTING, flat
from vae_repro.data import dataset_title

COLOURS = {"aevb": "tab:red", "wake_sleep": "tab:green", "mcem": "tab:blue", "iwae": "tab:purple"}
OTHER_COLOURS = ["tab:orange", "tab:brown", "tab:pink", "tab:olive", "tab:cyan"]


def colour(algorithm: str) -> str:
    """An algorithm's colour: the paper's, or for one of your own, the same whatever else is drawn."""
    return COLOURS.get(algorithm) or OTHER_COLOURS[sum(map(ord, algorithm)) % len(OTHER_COLOURS)]
CONFIG = "config."  # prefix of the columns that hold each run's config values


def band_label(runs: int, seeds: int) -> str:
    """The legend's entry for a band: what it spans, seeds, or runs that repeat a seed (the same
    setting run twice, say by two launchers)."""
    if runs == seeds:
        return f"band: min-max over {seeds} seeds"
    return f"band: min-max over {runs} runs of {seeds} seed{'s' if seeds > 1 else ''}"
ONE_ROW_LEGEND = 0.3  # inches: what a figure's height holds for its legend


class PlotError(Exception):
    """A problem with the run dirs given to a figure script; the message names the dir or file."""


def read_metrics(path: Path, needed_columns: list[str], hint: str = "") -> pd.DataFrame:
    text = path.read_text()
    if not text.endswith("\n"):  # the job is writing its next row right now
        text = text[: text.rfind("\n") + 1]
    frame = pd.read_csv(io.StringIO(text))
    missing = [c for c in needed_columns if c not in frame.columns]
    if missing:
        raise PlotError(f"{path}: missing column(s) {', '.join(missing)}{hint}")
    return frame


def _n_train(job_dir: Path, config) -> str:
    """The number of training images as the job saw it: data.train_size, else its summary's count."""
    size = OmegaConf.select(config, "data.train_size", default=None)
    if size is None and (job_dir / "summary.json").exists():
        size = json.loads((job_dir / "summary.json").read_text()).get("n_train")
    return "all" if size is None else str(size)


def _metrics_paths(d: Path) -> list[Path]:
    if not d.exists():
        raise PlotError(f"{d}: no such dir or file")
    paths = sorted(d.rglob("metrics.csv"))
    if not paths:
        raise PlotError(f"{d}: no metrics.csv below this dir")
    return paths


def metrics_columns(dirs: list[Path]) -> list[str]:
    """The columns of the metrics.csv files below `dirs`, each once, in the order they first appear."""
    columns = {}
    for d in dirs:
        for path in _metrics_paths(d):
            with open(path) as f:
                columns.update(dict.fromkeys(f.readline().strip().split(",")))
    return [c for c in columns if c]


def read_runs(dirs: list[Path], needed_columns: list[str], hint: str = "") -> pd.DataFrame:
    """All rows of all runs below `dirs`, with columns run, latent_dim, dataset (its title: MNIST,
    or the name of the user's own file or folder), algorithm and n_train added from each job's
    .hydra/config.yaml (and summary.json), and every config value as a column `config.KEY`."""
    frames = []
    for d in dirs:
        for path in _metrics_paths(d):
            config_path = path.parent / ".hydra" / "config.yaml"
            if not config_path.exists():
                raise PlotError(f"{path.parent}: no .hydra/config.yaml to read N_z from")
            config = OmegaConf.load(config_path)
            frame = read_metrics(path, needed_columns, hint)
            if len(frame):  # a job that has not reached its first evaluation has no rows yet
                values = {CONFIG + k: v for k, v in flat(OmegaConf.to_container(config)).items()}
                frames.append(frame.assign(run=str(path.parent), latent_dim=int(config.latent_dim),
                                           dataset=dataset_title(str(config.data.name), str(config.data.root),
                                                                 OmegaConf.select(config, "data.path")),
                                           n_train=_n_train(path.parent, config),
                                           algorithm=str(OmegaConf.select(config, "algorithm.name", default="aevb")),
                                           **values))
    if not frames:
        raise PlotError(f"no evaluated rows yet in the metrics.csv files below {', '.join(map(str, dirs))}")
    return pd.concat(frames, ignore_index=True)


def with_settings(rows: pd.DataFrame, shown: set[str], within: str | None = None) -> pd.DataFrame:
    """`rows` with a column `setting`: the config values in which a run differs from the others
    (of its own `within` value, e.g. of its dataset, if given), other than seeds and the keys the
    figure already tells apart (`shown`), as "key=value, ...". Runs that differ only in seed share
    a setting, and are drawn as one curve with a band."""
    if within is not None:
        return pd.concat([with_settings(group, shown) for _, group in rows.groupby(within, sort=False)])
    keys = [c for c in rows.columns if c.startswith(CONFIG) and c.removeprefix(CONFIG) not in NOT_A_SETTING | shown
            and rows[c].nunique(dropna=False) > 1]
    setting = rows[keys].apply(lambda r: ", ".join(f"{k.removeprefix(CONFIG)}={v}" for k, v in r.items()), axis=1)
    return rows.assign(setting=setting if keys else "")


def _without_a_wild_start(curve: np.ndarray) -> np.ndarray:
    """`curve` less its first point where that lies orders of magnitude off: farther from the other
    points than ten times their size (their spread, or their distance from 0 if larger). A steep
    start is kept; a Gaussian decoder's first ELBO on images whose pixels never vary, -1e7 against
    curves of hundreds, is not."""
    curve = curve[~np.isnan(curve)]
    rest = curve[1:]
    if not len(rest):
        return curve
    low, high = rest.min(), rest.max()
    size = max(high - low, np.abs(rest).max())
    return rest if curve[0] < low - 10 * size or curve[0] > high + 10 * size else curve


def y_range(curves: list[np.ndarray], paper_range: tuple[float, float] | None) -> tuple[float, float]:
    """A y range for curves (each an array in training order): all their points but a wild first
    one (which would flatten every curve; `note_outside` says so on the panel), widened to the
    paper's range if given, unless the points lie farther from it than twice their own spread, as a
    short run far below the paper's curves does: the paper's range would squeeze them flat."""
    points = np.concatenate([_without_a_wild_start(c) for c in curves])
    low, high = points.min(), points.max()
    if paper_range is not None:
        gap = max(paper_range[0] - high, low - paper_range[1], 0.0)
        if gap <= 2 * (high - low):
            low, high = min(paper_range[0], low), max(paper_range[1], high)
    margin = 0.02 * (high - low) or 1.0
    return low - margin, high + margin


def curves_of(rows: pd.DataFrame, columns: tuple[str, ...]) -> list[np.ndarray]:
    """Each run's values of each of `columns`, in training order: the input of `y_range`."""
    return [run.sort_values("samples")[c].to_numpy(dtype=float) for _, run in rows.groupby("run")
            for c in columns if run[c].notna().any()]


def note_outside(ax: plt.Axes, panel: pd.DataFrame, columns: tuple[str, ...]) -> None:
    """Say on the panel how many of its values fall outside its y range, and the farthest."""
    low, high = ax.get_ylim()
    values = panel[list(columns)].to_numpy(dtype=float).ravel()
    outside = values[(values < low) | (values > high)]
    if len(outside):
        farthest = outside[np.argmax(np.abs(outside - (low + high) / 2))]
        ax.text(0.98, 0.03, f"{len(outside)} point(s) outside, e.g. {farthest:.4g}", transform=ax.transAxes,
                fontsize="x-small", ha="right", color="0.35")  # bottom right: rising curves leave it free


def draw_curves(ax: plt.Axes, panel: pd.DataFrame, columns: tuple[str, ...], names: dict[str, str],
                x_unit: float = 1.0) -> None:
    """Each algorithm of `names` found in `panel`: each of `columns` against samples / x_unit, a
    train_ column solid and labelled "NAME (train)", a test_ column dashed and labelled "NAME (test)",
    any other column solid and labelled "NAME"; seeds as their mean with a min-max band."""
    for algorithm, name in names.items():
        runs = panel[panel["algorithm"] == algorithm]
        if runs.empty:
            continue
        n_runs = runs["run"].nunique()
        for column in columns:
            split = column.split("_")[0] if column.startswith(("train_", "test_")) else None
            stats = runs.groupby("samples")[column].agg(["mean", "min", "max"])
            x = stats.index / x_unit
            ax.plot(x, stats["mean"], "--" if split == "test" else "-", color=colour(algorithm),
                    marker="o" if len(stats) == 1 else None,  # a lone evaluation shows as a point
                    label=f"{name} ({split})" if split else name)
            if n_runs > 1:
                ax.fill_between(x, stats["min"], stats["max"], color=colour(algorithm), alpha=0.2, linewidth=0,
                                label=band_label(n_runs, runs[CONFIG + "seed"].nunique()))


def log_x_axis(ax: plt.Axes) -> None:
    """A log x axis whose tick labels do not overlap on a narrow panel. Over less than two decades,
    as on a short run, matplotlib would label crowded minor ticks as 2x10^3, 3x10^3, ...: there the
    ticks are at 1, 2 and 5 times a power of ten, written short (500, 1k, 2k)."""
    ax.set_xscale("log")
    low, high = ax.get_xlim()
    if high / low < 100:
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        ax.xaxis.set_minor_formatter(NullFormatter())


def legend_below(fig: plt.Figure) -> None:
    """One legend for the whole figure, under its panels, where it covers no curve, in as many
    columns as the figure's width holds. The bands, each in its curve's colour, share one grey entry."""
    handles = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, Patch(color="0.5", alpha=0.3, linewidth=0) if label.startswith("band:")
                               else handle)
    labels = sorted(handles, key=lambda label: label.startswith("band:"))  # the curves first
    if not labels:
        fig.tight_layout()
        return
    renderer = fig.canvas.get_renderer()
    # The fewest rows that fit, their columns equally full: matplotlib fills each column before the next.
    for n_rows in range(math.ceil(len(labels) / 6), len(labels) + 1):
        legend = fig.legend([handles[label] for label in labels], labels, loc="lower center",
                            ncol=math.ceil(len(labels) / n_rows), fontsize="small", frameon=False, columnspacing=1.2)
        if n_rows == len(labels) or legend.get_window_extent(renderer).width <= fig.bbox.width:
            break
        legend.remove()
    legend_top = legend.get_window_extent(renderer).y1 / fig.dpi + 0.05  # inches above the figure's bottom
    # The panels keep their height: the figure grows by what a legend of more than one row needs.
    fig.set_size_inches(fig.get_figwidth(), fig.get_figheight() + max(0.0, legend_top - ONE_ROW_LEGEND))
    fig.tight_layout(rect=(0, legend_top / fig.get_figheight(), 1, 1))


def figure_main(doc: str, default_out: str, make_figure: Callable[[argparse.Namespace], plt.Figure],
                argv: list[str] | None, add_options: Callable[[argparse.ArgumentParser], None] = lambda parser: None
                ) -> int:
    """A figure script's command line: run dirs in, a PNG (or PDF and PNG) out, one-line errors.
    `add_options` adds the script's own options; `make_figure` gets them all, the dirs as `dirs`."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="run or sweep dirs holding metrics.csv files")
    parser.add_argument("--out", type=Path, default=Path(default_out),
                        help="output file; a name ending in .pdf writes a PNG beside it too")
    parser.add_argument("--dpi", type=int, default=150, help="resolution of the PNG (default 150)")
    add_options(parser)
    args = parser.parse_args(argv)
    try:
        fig = make_figure(args)
    except PlotError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=args.dpi)
    if args.out.suffix == ".pdf":
        fig.savefig(args.out.with_suffix(".png"), dpi=args.dpi)
    print(f"wrote {args.out}")
    return 0
