"""What a job writes of itself: a row of metrics.csv per evaluation, and summary.json.

`Row.by_column` is the one place that names metrics.csv's columns; `Summary` is summary.json's
contents, key for key."""
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

SPLITS = ("train", "test")


@dataclass
class Measures:
    """What an evaluation measured of one model on one split; None where it measures no such thing
    (the ELBO of a model without an encoder)."""
    elbo: float | None = None
    log_px: float | None = None  # E_q[log p(x|z)]
    kl: float | None = None
    iwae: dict[int, float] = field(default_factory=dict)  # the IWAE-k bound, by k
    log_px_marginal: float | None = None
    active_units: int | None = None


@dataclass
class Row:
    """One evaluation of one model: a line of its metrics.csv."""
    samples: int
    train: Measures
    test: Measures
    wall_s: float = 0.0

    @classmethod
    def template(cls, iwae_k: list[int], marginal: bool, active_units: bool = False) -> "Row":
        """A row with every column an evaluation of these settings fills (of unknown value)."""
        measures = Measures(iwae=dict.fromkeys(iwae_k, math.nan), log_px_marginal=math.nan if marginal else None,
                            active_units=0 if active_units else None)
        return cls(0, measures, measures)

    def by_column(self, parts: bool = True) -> dict[str, float | None]:
        """Its values by the columns of metrics.csv, in their order; without `parts` (the samples,
        E[log p(x|z)], the KL, the active units, the wall time), its bounds and log-likelihoods alone."""
        splits = [(split, getattr(self, split)) for split in SPLITS]
        names = ("elbo", "log_px", "kl") if parts else ("elbo",)
        columns = {f"{split}_{name}": getattr(m, name) for split, m in splits for name in names}
        columns |= {f"{split}_iwae{k}": m.iwae[k] for k in self.train.iwae for split, m in splits}
        if self.train.log_px_marginal is not None:
            columns |= {f"{split}_log_px_marginal": m.log_px_marginal for split, m in splits}
        if not parts:
            return columns
        if self.train.active_units is not None:
            columns |= {f"{split}_active_units": m.active_units for split, m in splits}
        return {"samples": self.samples} | columns | {"wall_s": self.wall_s}

    def measured(self) -> dict[str, float]:
        """Its values by column, less those not measured: what a tracker logs."""
        return {key: value for key, value in self.by_column().items() if value is not None}

    def bounds(self) -> dict[str, float]:
        """What a summary and the progress bar show of it: the bounds and log-likelihoods it measured."""
        return {key: value for key, value in self.by_column(parts=False).items() if value is not None}


class MetricsLog:
    """metrics.csv, cut back to the rows a checkpoint vouches for, then appended row by row; a
    column a job does not measure (the ELBO of Monte Carlo EM) is left empty."""

    def __init__(self, path: Path, columns: list[str], keep_rows: int):
        self.columns = columns
        lines = path.read_text().splitlines(keepends=True)[: keep_rows + 1] if keep_rows else []
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(lines) or ",".join(columns) + "\n")
        os.replace(tmp, path)
        self.file = open(path, "a")

    def write(self, row: Row) -> None:
        values = row.by_column()
        self.file.write(",".join("" if values[c] is None else repr(values[c]) for c in self.columns) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


@dataclass
class Summary:
    """A job's summary.json: how it ended, its last evaluation's bounds, and what it ran on."""
    status: str  # running, completed, interrupted, diverged, failed
    message: str
    samples: int
    bounds: dict[str, float]  # of its last evaluation, by column (Row.bounds)
    wall_s: float
    device: str
    threads: int
    threads_in_use: int
    stack: int
    n_train: int
    weight_decay: float
    image_shape: list[int] | None
    algorithm: str
    latent_dim: int
    lr: float
    warning: str | None = None  # a wrecked run's flag

    def as_json(self) -> dict:
        fields = asdict(self)
        bounds, warning = fields.pop("bounds"), fields.pop("warning")
        head = {key: fields.pop(key) for key in ("status", "message", "samples")}
        rate = {"samples_per_s": self.samples / max(self.wall_s, 1e-9)}
        wall_s = {"wall_s": fields.pop("wall_s")}
        return head | bounds | wall_s | rate | fields | ({"warning": warning} if warning is not None else {})

    def write(self, out: Path) -> None:
        write_summary(out, self.as_json())


def write_summary(out: Path, summary: dict) -> None:
    tmp = out / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(tmp, out / "summary.json")


def read_summary(out: Path) -> dict | None:
    """summary.json of the job in `out`; None if there is none, or it is unreadable."""
    try:
        return json.loads((out / "summary.json").read_text())
    except (OSError, ValueError):
        return None


def record_failure(out: Path, message: str) -> None:
    """Mark the job in `out` failed, keeping what its summary already says."""
    write_summary(out, {**(read_summary(out) or {}), "status": "failed", "message": message})
