"""What a job measures and records: the ELBO and importance-weighted bounds on whole datasets,
the marginal likelihood of their first images, when they are measured, metrics.csv and
summary.json."""
import json
import math
import os
from pathlib import Path

import torch

from vae_repro.config import Config
from vae_repro.data import to_unit_interval
from vae_repro.marginal import is_log_marginal, make_estimator
from vae_repro.model import VAE
from vae_repro.noise import Noise

METRIC_COLUMNS = ["samples", "train_elbo", "train_log_px", "train_kl",
                  "test_elbo", "test_log_px", "test_kl", "wall_s"]
MARGINAL_COLUMNS = ["train_log_px_marginal", "test_log_px_marginal"]
EVAL_CHUNK = 1_000  # rows per forward pass in evaluation: large matmuls, temporaries of a few MB


def metric_columns(marginal: bool, iwae_k: list[int] = ()) -> list[str]:
    iwae = [f"{split}_iwae{k}" for k in iwae_k for split in ("train", "test")]
    return METRIC_COLUMNS[:-1] + iwae + (MARGINAL_COLUMNS if marginal else []) + METRIC_COLUMNS[-1:]


def eval_schedule(start: int, per_decade: int, max_samples: int, batch_size: int) -> list[int]:
    """Sample counts at which to evaluate: log-spaced from `start`, rounded up to whole batches,
    always ending at the last step."""
    last = math.ceil(max_samples / batch_size) * batch_size
    points, i = {last}, 0
    while (s := start * 10 ** (i / per_decade)) < last:
        points.add(math.ceil(round(s) / batch_size) * batch_size)
        i += 1
    return sorted(points)


def for_each_model(images: torch.Tensor, noise: Noise, binarize_dynamic: bool) -> torch.Tensor:
    """Images [N, D] (uint8 or in [0, 1]) as [K, N, D] in [0, 1], one view per model of the stack; binarized with
    each model's own noise if `data.binarize=dynamic`."""
    x = to_unit_interval(images).expand(len(noise.gens), -1, -1)
    return noise.bernoulli(x) if binarize_dynamic else x


@torch.inference_mode()
def evaluate(model: VAE, x: torch.Tensor, mc_samples: int, seeds: list[int],
             binarize_dynamic: bool) -> list[tuple[float, float, float]]:
    """Per model of the stack, the average ELBO, E[log p(x|z)] and KL over all of the images `x`,
    with q(z|x) as the variational posterior whatever algorithm trained it, and a noise stream from
    its seed in `seeds` that is the same at every call, so that successive points of a curve differ
    only by the training between them."""
    noise = Noise.seeded(seeds, model.latent_dims, x.device, model.latent_dim)
    totals = torch.zeros(len(seeds), 2, dtype=torch.float64, device=x.device)
    for chunk in x.split(EVAL_CHUNK):
        chunk = for_each_model(chunk, noise, binarize_dynamic)
        log_px, kl = model(chunk, noise.latent(mc_samples, chunk.shape[1]))
        totals += torch.stack([log_px.sum(1), kl.sum(1)], dim=1).double()
    return [(log_px - kl, log_px, kl) for log_px, kl in (totals / len(x)).tolist()]


@torch.inference_mode()
def evaluate_iwae(model: VAE, x: torch.Tensor, k: int, seeds: list[int], binarize_dynamic: bool) -> list[float]:
    """Per model of the stack, the average IWAE-k bound over all of the images `x`: the log of the
    mean of k importance weights p(x, z) / q(z|x) with z ~ q(z|x); with the same noise at every call."""
    noise = Noise.seeded(seeds, model.latent_dims, x.device, model.latent_dim)
    total = torch.zeros(len(seeds), dtype=torch.float64, device=x.device)
    for chunk in x.split(EVAL_CHUNK):
        total += is_log_marginal(model, for_each_model(chunk, noise, binarize_dynamic), k, noise).double().sum(1)
    return (total / len(x)).tolist()


@torch.inference_mode()
def active_units(model: VAE, x: torch.Tensor, threshold: float = 0.01) -> list[int]:
    """Per model of the stack, its active latent units on the images `x`: the units j whose
    encoder mean varies across the images, Cov_x(E_q[z_j]) > threshold (Burda et al., 2015, sec. 5.2)."""
    means = torch.cat([model.encode(to_unit_interval(chunk).expand(len(model.latent_dims), -1, -1))[0]
                       for chunk in x.split(EVAL_CHUNK)], dim=1)  # [K, N, N_z]; zero in the padding
    return (means.double().var(1) > threshold).sum(1).tolist()


@torch.inference_mode()
def evaluate_marginal(estimator, model: VAE, x: torch.Tensor, seeds: list[int], binarize_dynamic: bool) -> list[float]:
    """Per model of the stack, the average estimated log p(x) of the images `x`, with the same
    noise at every call."""
    noise = Noise.seeded(seeds, model.latent_dims, x.device, model.latent_dim)
    return estimator(model, for_each_model(x, noise, binarize_dynamic), noise=noise).double().mean(1).tolist()


class Evaluation:
    """What a job measures at each evaluation, and the columns of metrics.csv that hold it: with an
    encoder, the ELBO of each whole split and its IWAE-k bounds (eval.iwae_k); the marginal
    log-likelihood of each split's first images (eval.marginal). Each measure draws its noise from
    the models' evaluation seeds afresh at every evaluation."""

    def __init__(self, cfg: Config, has_encoder: bool):
        self.has_encoder, self.mc_samples, self.iwae_k = has_encoder, cfg.train.mc_samples, list(cfg.eval.iwae_k)
        self.marginal, self.marginal_points = make_estimator(cfg), cfg.eval.marginal_points
        self.binarize_dynamic = str(cfg.data.binarize) == "dynamic"
        self.columns = metric_columns(self.marginal is not None, self.iwae_k)

    def of_split(self, model: VAE, split: str, x: torch.Tensor, seeds: list[int]) -> list[dict]:
        """Each model's values for the split `split` ("train" or "test") of images `x`, by column."""
        values: list[dict] = [{} for _ in seeds]
        dynamic = self.binarize_dynamic
        if self.has_encoder:
            for value, (elbo, log_px, kl) in zip(values, evaluate(model, x, self.mc_samples, seeds, dynamic)):
                value.update({f"{split}_elbo": elbo, f"{split}_log_px": log_px, f"{split}_kl": kl})
            for k in self.iwae_k:
                for value, bound in zip(values, evaluate_iwae(model, x, k, seeds, dynamic)):
                    value[f"{split}_iwae{k}"] = bound
        if self.marginal is not None:
            marginals = evaluate_marginal(self.marginal, model, x[:self.marginal_points], seeds, dynamic)
            for value, marginal in zip(values, marginals):
                value[f"{split}_log_px_marginal"] = marginal
        return values


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

    def write(self, row: dict) -> None:
        self.file.write(",".join(repr(row[c]) if c in row else "" for c in self.columns) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


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
