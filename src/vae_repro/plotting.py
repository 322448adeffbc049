"""What the figure scripts share: reading every run below some dirs into one table, telling
apart runs that are not seeds of one setting, the y range of a row of panels, and curves drawn
as the mean of seeds with a min-max band."""
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
# Config keys that do not make two runs different settings: seeds are what the band is drawn
# over, and the others say where, how fast or how long a run ran, not what it trained.
NOT_A_SETTING = {"seed", "data.root", "data.download", "device", "threads", "train.progress",
                 "train.checkpoint_every", "train.max_samples"}
CONFIG = "config."  # prefix of the columns that hold each run's config values


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


def _flat(config, prefix: str = "") -> dict[str, str]:
    """A config as {dotted key: value as text}."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat


def read_runs(dirs: list[Path], needed_columns: list[str], hint: str = "") -> pd.DataFrame:
    """All rows of all runs below `dirs`, with columns run, latent_dim, dataset, algorithm and
    n_train added from each job's .hydra/config.yaml (and summary.json), and every config value
    as a column `config.KEY`."""
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
            frame = read_metrics(path, needed_columns, hint)
            if len(frame):  # a job that has not reached its first evaluation has no rows yet
                values = {CONFIG + k: v for k, v in _flat(OmegaConf.to_container(config)).items()}
                frames.append(frame.assign(run=str(path.parent), latent_dim=int(config.latent_dim),
                                           dataset=str(config.data.name), n_train=_n_train(path.parent, config),
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


def y_range(curves: list[np.ndarray], paper_range: tuple[float, float] | None) -> tuple[float, float]:
    """A y range for curves (each an array in training order): the later half of every curve, within
    the paper's range widened to it. Earlier points beyond it (the steep start, or a wild first
    evaluation that would flatten every curve) are left out; `note_outside` says so on the panel."""
    later = np.concatenate([c[len(c) // 2:] for c in curves])
    low, high = np.nanmin(later), np.nanmax(later)
    if paper_range is not None:
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


def legend_below(fig: plt.Figure) -> None:
    """One legend for the whole figure, under its panels, where it covers no curve."""
    labels = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            labels.setdefault(label, handle)
    fig.legend(list(labels.values()), list(labels), loc="lower center", ncol=min(len(labels), 6), fontsize="small",
               frameon=False)
    fig.tight_layout(rect=(0, 0.3 / fig.get_figheight(), 1, 1))  # 0.3 inch for the legend


def figure_main(doc: str, default_out: str, make_figure: Callable[[list[Path]], plt.Figure],
                argv: list[str] | None) -> int:
    """A figure script's command line: run dirs in, a PNG (or PDF and PNG) out, one-line errors."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="run or sweep dirs holding metrics.csv files")
    parser.add_argument("--out", type=Path, default=Path(default_out),
                        help="output file; a name ending in .pdf writes a PNG beside it too")
    parser.add_argument("--dpi", type=int, default=150, help="resolution of the PNG (default 150)")
    args = parser.parse_args(argv)
    try:
        fig = make_figure(args.dirs)
    except PlotError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=args.dpi)
    if args.out.suffix == ".pdf":
        fig.savefig(args.out.with_suffix(".png"), dpi=args.dpi)
    print(f"wrote {args.out}")
    return 0
