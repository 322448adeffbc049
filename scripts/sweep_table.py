"""A table of the jobs of one or more sweeps: what each tried, how far it got and its final ELBOs.

    python scripts/sweep_table.py outputs/multirun/2026-11-24/12-00-00 [more dirs] [--csv table.csv]
    python scripts/sweep_table.py outputs/multirun/2026-11-24/12-00-00 --over-seeds

One row per job below the given dirs (every dir holding a metrics.csv or summary.json): its dir;
the config values in which the jobs differ, one column per key (seed among them, but not where,
how fast or how long a job ran: data.root, device, train.max_samples, ...); and from its
summary.json its status (completed, running, interrupted, diverged, failed, or "not started"
without one), its final train and test ELBO (and IWAE-k bounds and marginal log-likelihoods,
where the jobs measured them), its samples and samples per second, and, where a job was
flagged (its ELBO far below its untrained model's), its warning: the terminal shows such a job's
status as "completed, flagged" and its warning below the table. Printed on the terminal, and
with --csv written as a CSV file too. Works on sweeps still running.

--over-seeds: one row per setting instead, the table a paper reports: how many seeds completed,
and the mean and standard deviation over them of each final value.
"""
import argparse
import sys
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from vae_repro.records import read_summary
from vae_repro.config import NOT_A_SETTING
from vae_repro.plotting import PlotError, flat

SUMMARY_COLUMNS = ["status", "train_elbo", "test_elbo", "samples", "samples_per_s"]
FLAGGED = "completed, flagged"  # the status the terminal shows for a completed job with a warning


def job_order(job: Path) -> tuple:
    """Hydra's job dirs 0, 1, ..., 10 in number order, not as text."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in job.parts)


def job_dirs(d: Path) -> list[Path]:
    if not d.is_dir():
        raise PlotError(f"{d}: no such dir")
    jobs = {path.parent for name in ("metrics.csv", "summary.json") for path in d.rglob(name)}
    if not jobs:
        raise PlotError(f"{d}: no metrics.csv or summary.json below this dir")
    return sorted(jobs, key=job_order)


def job_row(job: Path) -> dict:
    config_path = job / ".hydra" / "config.yaml"
    config = flat(OmegaConf.to_container(OmegaConf.load(config_path))) if config_path.exists() else {}
    summary = read_summary(job) or {"status": "not started"}
    measured = {key: value for key, value in summary.items() if is_final_measure(key)}
    return {"job": str(job), **config, **{key: summary.get(key) for key in [*SUMMARY_COLUMNS, "warning"]}, **measured}


def is_final_measure(key: str) -> bool:
    """A final value of summary.json beside the ELBOs: an IWAE-k bound or a marginal log-likelihood."""
    split, _, measure = key.partition("_")
    return split in ("train", "test") and (measure.startswith("iwae") or measure == "log_px_marginal")


def table(dirs: list[Path]) -> pd.DataFrame:
    """One row per job below `dirs`: job, the swept keys, SUMMARY_COLUMNS, and a warning where one was flagged."""
    rows = pd.DataFrame([job_row(job) for d in dirs for job in job_dirs(d)])
    measured = [c for c in rows.columns if is_final_measure(c)]
    ignored = {"job", "warning", *SUMMARY_COLUMNS, *measured, *(NOT_A_SETTING - {"seed"})}
    swept = [c for c in rows.columns if c not in ignored and rows[c].nunique(dropna=False) > 1]
    flagged = ["warning"] if "warning" in rows and rows["warning"].notna().any() else []  # a wrecked run
    rows = rows[["job", *swept, *SUMMARY_COLUMNS[:3], *measured, *SUMMARY_COLUMNS[3:], *flagged]]
    return rows.astype({"samples": "Int64", "train_elbo": float, "test_elbo": float, "samples_per_s": float,
                        **dict.fromkeys(measured, float)})


def final_values(rows: pd.DataFrame) -> list[str]:
    """The columns of `table` that hold a job's final ELBOs, bounds and log-likelihoods."""
    return ["train_elbo", "test_elbo", *(c for c in rows.columns if is_final_measure(c))]


def over_seeds(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per setting (the swept keys but seed) of `table`'s completed jobs: the seeds that
    completed, how many of them were flagged (where any was), and the mean and standard deviation
    over them of each final value."""
    values = final_values(rows)
    keys = [c for c in rows.columns if c not in {"job", "seed", "warning", *SUMMARY_COLUMNS, *values}]
    done = rows[rows["status"] == "completed"]
    groups = done.groupby(keys, dropna=False, sort=False) if keys else [((), done)]
    settings = []
    for setting, jobs in groups:
        row = dict(zip(keys, setting if isinstance(setting, tuple) else (setting,)))
        row["seeds"] = len(jobs)
        row["flagged"] = int(jobs["warning"].notna().sum()) if "warning" in jobs else 0
        for value in values:
            row[f"{value}_mean"], row[f"{value}_std"] = jobs[value].mean(), jobs[value].std()  # std: n - 1
        settings.append(row)
    columns = [*keys, "seeds", "flagged", *(f"{v}_{s}" for v in values for s in ("mean", "std"))]
    settings = pd.DataFrame(settings, columns=columns)
    return settings if settings["flagged"].any() else settings.drop(columns="flagged")


def print_jobs(rows: pd.DataFrame) -> None:
    """The table on the terminal: a flagged job's status says so, and its warning follows the table."""
    warnings = rows["warning"] if "warning" in rows else pd.Series(None, index=rows.index)
    shown = rows.drop(columns="warning", errors="ignore").astype({"samples": float})  # "-" for a job not started
    shown.loc[warnings.notna() & (shown["status"] == "completed"), "status"] = FLAGGED
    print(shown.to_string(index=False, na_rep="-", float_format="{:.2f}".format, formatters={"samples": "{:.0f}".format}))
    for job, warning in zip(rows["job"], warnings):
        if pd.notna(warning):
            print(f"flagged: {job}: {warning}")


def print_settings(settings: pd.DataFrame, left_out: int) -> None:
    """The table over seeds on the terminal, each value as "mean ± std"."""
    shown = settings.loc[:, [c for c in settings.columns if not c.endswith(("_mean", "_std"))]]
    for column in settings.columns:
        if column.endswith("_mean"):
            value = column.removesuffix("_mean")
            shown[value] = [f"{m:.2f} ± {s:.2f}" if pd.notna(s) else f"{m:.2f}"
                            for m, s in zip(settings[column], settings[f"{value}_std"])]
    print(shown.to_string(index=False, na_rep="-"))
    if left_out:
        print(f"left out: {left_out} job{'s' if left_out > 1 else ''} not completed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="run or sweep dirs")
    parser.add_argument("--over-seeds", action="store_true",
                        help="one row per setting: the mean and standard deviation over its seeds")
    parser.add_argument("--csv", type=Path, metavar="FILE", help="also write the table to this CSV file")
    args = parser.parse_args(argv)
    try:
        rows = table(args.dirs)
    except PlotError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.over_seeds:
        jobs, rows = len(rows), over_seeds(rows)
        print_settings(rows, left_out=jobs - int(rows["seeds"].sum()))
    else:
        print_jobs(rows)
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        rows.to_csv(args.csv, index=False)
        print(f"wrote {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
