"""Saving and restoring a job: atomic files, random states, the settings check on resume,
stop signals that leave time to checkpoint, and `load_run` for finished runs."""
import json
import os
import random
import signal
import threading
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from vae_repro.config import Config, ConfigError
from vae_repro.likelihoods import BernoulliPixels, GaussianPixels
from vae_repro.model import VAE

# Keys that may change between a run and its resumption; any other change is refused.
RESUMABLE_CHANGES = {"train.max_samples", "train.checkpoint_every", "train.progress", "threads"}


def config_dict(cfg: Config) -> dict:
    """The config as plain JSON types."""
    return json.loads(json.dumps(asdict(cfg)))


def config_from_dict(saved: dict) -> Config:
    """A saved config, with today's defaults for keys added since it was saved."""
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), saved))


def save_atomic(obj, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _changed_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = []
    for k in old.keys() | new.keys():
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += _changed_keys(a, b, f"{prefix}{k}.")
        elif a != b:
            keys.append(f"{prefix}{k}")
    return keys


def load_checkpoint(path: Path, settings: dict) -> dict | None:
    """The checkpoint at `path`, if any, after checking that it was made with the same settings."""
    if not path.exists():
        return None
    ckpt = torch.load(path, map_location="cpu", weights_only=False)  # RNG states must stay on the CPU
    saved = config_dict(config_from_dict(ckpt["config"]))
    changed = [k for k in _changed_keys(saved, settings) if k not in RESUMABLE_CHANGES]
    if changed:
        raise ConfigError(f"{path.parent} holds a run with other settings ({', '.join(sorted(changed))}); "
                          "resume it with the same settings or choose another output dir")
    return ckpt


def rng_states(gen: torch.Generator) -> dict:
    return {"loop": gen.get_state(), "python": random.getstate(), "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_states(gen: torch.Generator, states: dict) -> None:
    gen.set_state(states["loop"])
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if states["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


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


def build_model(cfg: Config, input_dim: int) -> VAE:
    likelihood = (GaussianPixels(cfg.model.decoder_logvar_min) if str(cfg.model.likelihood) == "gaussian"
                  else BernoulliPixels())
    return VAE(input_dim, cfg.model.hidden_size, cfg.latent_dim, str(cfg.model.activation), cfg.model.init_std,
               likelihood)


def save_model(cfg: Config, model: VAE, input_dim: int, path: Path) -> None:
    save_atomic({"config": config_dict(cfg), "input_dim": input_dim, "state_dict": model.state_dict()}, path)


def load_run(run_dir: str | Path, device: str = "cpu") -> tuple[Config, VAE]:
    """The config and trained model of a finished run, for a notebook or an evaluation script."""
    saved = torch.load(Path(run_dir) / "model.pt", map_location=device, weights_only=False)
    cfg = config_from_dict(saved["config"])
    model = build_model(cfg, saved["input_dim"])
    model.load_state_dict(saved["state_dict"])
    return cfg, model.to(device).eval()
