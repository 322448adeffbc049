"""Training of one VAE: the loop, its evaluation schedule, metrics.csv, checkpoints and resume.

`train(cfg, out_dir)` is a plain function: Hydra's entry point (run.py) only builds its
arguments. Everything a job writes lands in `out_dir`:
  metrics.csv     one row per evaluation, flushed as it is written
  checkpoint.pt   the full training state, replaced atomically; a re-run resumes from it
  model.pt        final weights with the config that made them (see `load_run`)
  summary.json    status, final ELBOs, samples seen, wall time, speed, device
"""
import json
import logging
import math
import os
import random
import signal
import threading
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from vae_repro.config import Config, ConfigError, check_config
from vae_repro.data import load_dataset, to_unit_interval
from vae_repro.model import VAE

log = logging.getLogger(__name__)

METRIC_COLUMNS = ["samples", "train_elbo", "train_log_px", "train_kl",
                  "test_elbo", "test_log_px", "test_kl", "wall_s"]
EVAL_CHUNK = 5_000  # rows per forward pass in evaluation: large matmuls, bounded memory
STATIC_BINARIZE_SEED = 1234  # one binarized dataset shared by all seeds and runs
# Keys that may change between a run and its resumption; any other change is refused.
RESUMABLE_CHANGES = {"train.max_samples", "train.checkpoint_every", "train.progress"}


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


def config_dict(cfg: Config) -> dict:
    """The config as plain JSON types."""
    return json.loads(json.dumps(asdict(cfg)))


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda: CUDA is not available on this machine; use device=cpu or device=auto")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def eval_schedule(start: int, per_decade: int, max_samples: int, batch_size: int) -> list[int]:
    """Sample counts at which to evaluate: log-spaced from `start`, rounded up to whole batches,
    always ending at the last step."""
    last = math.ceil(max_samples / batch_size) * batch_size
    points, i = {last}, 0
    while (s := start * 10 ** (i / per_decade)) < last:
        points.add(math.ceil(round(s) / batch_size) * batch_size)
        i += 1
    return sorted(points)


def make_optimizer(model: VAE, lr: float, weight_decay: float) -> torch.optim.Adagrad:
    biases = [p for name, p in model.named_parameters() if not name.endswith("weight")]
    groups = [{"params": model.weights(), "weight_decay": weight_decay}, {"params": biases, "weight_decay": 0.0}]
    return torch.optim.Adagrad(groups, lr=lr, fused=True)


def train_step(model: VAE, optimizer: torch.optim.Optimizer, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """One Adagrad step on the negative ELBO averaged over the batch; returns the loss, still on device."""
    loss = model.negative_elbo_backward(x, eps)
    optimizer.step()
    return loss


@torch.inference_mode()
def evaluate(model: VAE, x: torch.Tensor, mc_samples: int, seed: int, binarize_dynamic: bool) -> tuple[float, float, float]:
    """Average ELBO, E[log p(x|z)] and KL over all of the uint8 images `x`, with a noise stream that is the same
    at every call, so that successive points of a curve differ only by the training between them."""
    gen = torch.Generator(device=x.device).manual_seed(seed)
    totals = torch.zeros(2, dtype=torch.float64, device=x.device)
    for chunk in x.split(EVAL_CHUNK):
        chunk = to_unit_interval(chunk)
        if binarize_dynamic:
            chunk = torch.bernoulli(chunk, generator=gen)
        eps = torch.randn(mc_samples, len(chunk), model.latent_dim, generator=gen, device=x.device)
        log_px, kl = model(chunk, eps)
        totals += torch.stack([log_px.sum(), kl.sum()]).double()
    log_px, kl = (totals / len(x)).tolist()
    return log_px - kl, log_px, kl


class MetricsLog:
    """metrics.csv, cut back to the rows a checkpoint vouches for, then appended row by row."""

    def __init__(self, path: Path, keep_rows: int):
        lines = path.read_text().splitlines(keepends=True)[: keep_rows + 1] if keep_rows else []
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(lines) or ",".join(METRIC_COLUMNS) + "\n")
        os.replace(tmp, path)
        self.file = open(path, "a")

    def write(self, row: dict) -> None:
        self.file.write(",".join(repr(row[c]) for c in METRIC_COLUMNS) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class StopSignals:
    """Turns SIGINT, SIGTERM and SIGUSR2 (SLURM's warning before a time limit) into a request
    that the loop sees between steps, so it can checkpoint before the signal takes its course."""

    SIGNALS = [s for s in ("SIGINT", "SIGTERM", "SIGUSR2") if hasattr(signal, s)]

    def __init__(self):
        self.received = None
        self.previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                sig = getattr(signal, name)
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.received is None:  # the first one decides: SLURM may follow submitit's SIGUSR2 with SIGTERM
            self.received = signum

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        if self.received is not None and exc[0] is None:
            # Hand the signal to whoever had it before: Python's KeyboardInterrupt, the default
            # termination, or submitit's requeue on SLURM.
            signal.raise_signal(self.received)


def _save_atomic(obj, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _write_summary(out: Path, summary: dict) -> None:
    tmp = out / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(tmp, out / "summary.json")


def _changed_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = []
    for k in old.keys() | new.keys():
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += _changed_keys(a, b, f"{prefix}{k}.")
        elif a != b:
            keys.append(f"{prefix}{k}")
    return keys


def _rng_states(gen: torch.Generator) -> dict:
    return {"loop": gen.get_state(), "python": random.getstate(), "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_states(gen: torch.Generator, states: dict) -> None:
    gen.set_state(states["loop"])
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if states["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def train(cfg: Config, out_dir: str | Path, data: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict:
    """Train one VAE as `cfg` says, writing into `out_dir`; resume if a checkpoint is there.

    `data` is (train, test) as uint8 [N, 784] grey levels; by default it is loaded as `cfg.data`
    says. Returns the summary (also written to summary.json). Raises Diverged on a
    non-finite loss, after recording it in summary.json.
    """
    check_config(cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(str(cfg.device))
    train_x, test_x = data if data is not None else load_dataset(str(cfg.data.name), cfg.data.root, cfg.data.download)
    binarize = str(cfg.data.binarize)
    if binarize == "static":
        binarize_gen = torch.Generator().manual_seed(STATIC_BINARIZE_SEED)
        train_x, test_x = (torch.bernoulli(to_unit_interval(x), generator=binarize_gen).mul_(255).to(torch.uint8)
                           for x in (train_x, test_x))
    train_x, test_x = train_x.to(device), test_x.to(device)

    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    model = VAE(train_x.shape[1], cfg.model.hidden_size, cfg.latent_dim, str(cfg.model.activation),
                cfg.model.init_std).to(device)
    optimizer = make_optimizer(model, cfg.optimizer.lr, cfg.optimizer.weight_decay)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)

    batch, mc = cfg.train.batch_size, cfg.train.mc_samples
    max_samples, ckpt_every = int(cfg.train.max_samples), int(cfg.train.checkpoint_every)
    schedule = eval_schedule(int(cfg.train.eval_start), cfg.train.eval_points_per_decade, max_samples, batch)
    n_train = len(train_x)
    if n_train < batch:
        raise ConfigError(f"train.batch_size={batch}: larger than the {n_train} training images")
    eval_seed = cfg.seed + 1  # any fixed stream apart from the training one
    dynamic = binarize == "dynamic"
    settings = config_dict(cfg)

    ckpt_path = out / "checkpoint.pt"
    state = {"samples": 0, "steps": 0, "wall_s": 0.0, "rows": 0, "perm": None, "pos": n_train, "last": {}}
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)  # RNG states must stay on the CPU
        changed = [k for k in _changed_keys(ckpt["config"], settings) if k not in RESUMABLE_CHANGES]
        if changed:
            raise ConfigError(f"{out} holds a run with other settings ({', '.join(sorted(changed))}); "
                              "resume it with the same settings or choose another output dir")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        _set_rng_states(gen, ckpt["rng"])
        state = ckpt["state"]
        if state["perm"] is not None:
            state["perm"] = state["perm"].to(device)
        log.info("resuming from %s at %d samples", ckpt_path, state["samples"])
    metrics = MetricsLog(out / "metrics.csv", keep_rows=state["rows"])

    def save_checkpoint():
        _save_atomic({"config": settings, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                      "rng": _rng_states(gen), "state": state}, ckpt_path)

    def summary(status: str, message: str = "") -> dict:
        s = {"status": status, "message": message, "samples": state["samples"], **state["last"],
             "wall_s": state["wall_s"], "samples_per_s": state["samples"] / max(state["wall_s"], 1e-9),
             "device": str(device), "latent_dim": cfg.latent_dim, "lr": cfg.optimizer.lr}
        _write_summary(out, s)
        return s

    samples, steps = state["samples"], state["steps"]
    next_eval = next((i for i, s in enumerate(schedule) if s > samples), len(schedule))
    next_ckpt = (samples // ckpt_every + 1) * ckpt_every
    check_every = 1 if device.type == "cpu" else 100  # a finiteness check is a host sync on a GPU
    loss_sum = torch.zeros((), device=device)
    start = time.perf_counter() - state["wall_s"]
    bar = tqdm(total=schedule[-1], initial=samples, unit="sample", unit_scale=True, dynamic_ncols=True,
               desc=f"N_z={cfg.latent_dim}", disable=not cfg.train.progress)
    try:
        with StopSignals() as stop, logging_redirect_tqdm():
            summary("running")
            while samples < schedule[-1] and stop.received is None:
                if state["pos"] + batch > n_train:  # new epoch: new order, remainder dropped
                    state["perm"], state["pos"] = torch.randperm(n_train, generator=gen, device=device), 0
                x = to_unit_interval(train_x[state["perm"][state["pos"]:state["pos"] + batch]])
                state["pos"] += batch
                if dynamic:
                    x = torch.bernoulli(x, generator=gen)
                eps = torch.randn(mc, batch, cfg.latent_dim, generator=gen, device=device)
                loss_sum += train_step(model, optimizer, x, eps)
                samples += batch
                steps += 1
                bar.update(batch)
                at_eval = samples >= schedule[next_eval]
                at_ckpt = samples >= next_ckpt
                if steps % check_every == 0 or at_eval or at_ckpt or stop.received is not None:
                    if not torch.isfinite(loss_sum):
                        state.update(samples=samples, steps=steps, wall_s=time.perf_counter() - start)
                        message = (f"diverged: non-finite loss at step {steps} ({samples} samples) "
                                   f"with optimizer.lr={cfg.optimizer.lr}; try a smaller optimizer.lr")
                        summary("diverged", message)
                        raise Diverged(message)
                    loss_sum.zero_()
                state.update(samples=samples, steps=steps)
                if at_eval:
                    train_elbo, train_log_px, train_kl = evaluate(model, train_x, mc, eval_seed, dynamic)
                    test_elbo, test_log_px, test_kl = evaluate(model, test_x, mc, eval_seed, dynamic)
                    state["wall_s"] = time.perf_counter() - start
                    state["last"] = {"train_elbo": train_elbo, "test_elbo": test_elbo}
                    metrics.write({"samples": samples, "train_elbo": train_elbo, "train_log_px": train_log_px,
                                   "train_kl": train_kl, "test_elbo": test_elbo, "test_log_px": test_log_px,
                                   "test_kl": test_kl, "wall_s": state["wall_s"]})
                    state["rows"] += 1
                    next_eval += 1
                    bar.set_postfix(train_elbo=f"{train_elbo:.2f}", test_elbo=f"{test_elbo:.2f}")
                if at_ckpt:
                    state["wall_s"] = time.perf_counter() - start
                    save_checkpoint()
                    summary("running")
                    next_ckpt += ckpt_every
            state["wall_s"] = time.perf_counter() - start
            if stop.received is not None:
                save_checkpoint()
                message = (f"stopped by {signal.Signals(stop.received).name} at {samples} samples; "
                           f"checkpoint saved in {out}: run the same command into that dir to resume")
                log.warning(message)
                return summary("interrupted", message)
            save_checkpoint()
            _save_atomic({"config": settings, "input_dim": train_x.shape[1], "state_dict": model.state_dict()},
                         out / "model.pt")
            return summary("completed")
    finally:
        bar.close()
        metrics.close()


def load_run(run_dir: str | Path, device: str = "cpu") -> tuple[Config, VAE]:
    """The config and trained model of a finished run, for a notebook or an evaluation script."""
    saved = torch.load(Path(run_dir) / "model.pt", map_location=device, weights_only=False)
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), saved["config"]))
    model = VAE(saved["input_dim"], cfg.model.hidden_size, cfg.latent_dim, str(cfg.model.activation),
                cfg.model.init_std)
    model.load_state_dict(saved["state_dict"])
    return cfg, model.to(device).eval()
