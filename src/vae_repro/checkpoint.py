"""Saving and restoring a job: atomic files, random states, the settings check on resume, a
stack's models each in a single model's checkpoint, stop signals that leave time to
checkpoint, and `load_run` for finished runs.

Files are read with `torch.load(weights_only=True)`: tensors and plain data only, so a
checkpoint or model file from elsewhere cannot run code when it is loaded.
"""
import io
import json
import os
import random
import re
import signal
import threading
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from vae_repro.config import Config, ConfigError
from vae_repro.optimizers import Optimizer
from vae_repro.model import VAE, build_model
from vae_repro.own_tensors import load_own_state_dict, own_state_dict

# Keys that may change between a run and its resumption; any other change is refused.
RESUMABLE_CHANGES = {"train.max_samples", "train.checkpoint_every", "train.progress", "train.compile",
                     "train.cuda_graph", "threads", "data.root", "data.download", "logger.name",
                     "logger.tracking_uri", "logger.experiment"}
CHECKPOINT_KEYS = {"config", "model", "optimizer", "rng", "state"}
MODEL_KEYS = {"config", "input_dim", "state_dict"}
# Checkpoints written before the random states were kept as plain data hold numpy's as an array;
# these are exactly the types that array needs.
NUMPY_ARRAY_TYPES = [np._core.multiarray._reconstruct, np.ndarray, np.dtype, np.dtypes.UInt32DType]


class CheckpointError(RuntimeError):
    """A checkpoint or model file that cannot be loaded; the message names the file and what to do."""


class SaveError(OSError):
    """A file of the run could not be written (disk full, quota); the message names it."""


def config_dict(cfg: Config) -> dict:
    """The config as plain JSON types."""
    return json.loads(json.dumps(asdict(cfg)))


def config_from_dict(saved: dict) -> Config:
    """A saved config, with today's defaults for keys added since it was saved."""
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), saved))


def save_atomic(obj, path: Path) -> None:
    """Write `obj` to `path` in one piece: the file is either the old one or the complete new one,
    whatever happens during the write, and on disk before the name points at it."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)  # in memory first, so that a failed write is an OSError that says why
    tmp = path.with_suffix(".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise SaveError(f"{path}: could not be written ({e.strerror or e})") from e


def load_file(path: Path, expected_keys: set[str], allowed_types: list | None = None) -> dict:
    """The dict that torch.save wrote to `path`, loaded without running anything from the file;
    CheckpointError if it is not such a file, is damaged, or lacks `expected_keys`."""
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(allowed_types or []):
            warnings.simplefilter("ignore")  # torch warns about pickle protocols before it refuses
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        unsafe = re.search(r"GLOBAL ([\w.]+)", str(e))
        if unsafe:
            raise CheckpointError(f"{path}: refused to load: it asks for {unsafe.group(1)}, which could run code, "
                                  "and this project loads only tensors and plain data; nothing in it was run") from None
        if "Weights only load failed" in str(e):
            detail = "not a file of tensors and plain data written by torch.save"
        else:
            detail = f"truncated or corrupt: {str(e).splitlines()[0].split('. ')[0] if str(e) else type(e).__name__}"
        raise CheckpointError(f"{path}: damaged or not a file this project wrote ({detail})") from None
    missing = expected_keys - set(obj) if isinstance(obj, dict) else expected_keys
    if missing:
        raise CheckpointError(f"{path}: damaged or not a file this project wrote (missing {', '.join(sorted(missing))})")
    return obj


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
    try:
        ckpt = load_file(path, CHECKPOINT_KEYS, NUMPY_ARRAY_TYPES)
        saved = config_dict(config_from_dict(ckpt["config"]))
    except Exception as e:
        detail = str(e) if isinstance(e, CheckpointError) else f"{path}: damaged (its config: {str(e).splitlines()[0]})"
        raise CheckpointError(f"{detail}. To start this run over, delete it (metrics.csv then starts afresh too), "
                              "or choose another output dir") from None
    changed = [k for k in _changed_keys(saved, settings) if k not in RESUMABLE_CHANGES]
    if changed:
        raise ConfigError(f"{path.parent} holds a run with other settings ({', '.join(sorted(changed))}); "
                          "resume it with the same settings or choose another output dir")
    return ckpt


def rng_states(gen: torch.Generator) -> dict:
    """Every random state of the job, as tensors, numbers and strings."""
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    return {"loop": gen.get_state(), "device": gen.device.type, "python": random.getstate(),
            "numpy": (name, keys.tolist(), pos, has_gauss, cached_gaussian), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_states(gen: torch.Generator, states: dict) -> None:
    gen.set_state(states["loop"])
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached_gaussian = states["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached_gaussian))
    torch.set_rng_state(states["torch"])
    if states["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class Terminated(BaseException):
    """SIGTERM in a command that runs its jobs in its own process, raised as SIGINT raises
    KeyboardInterrupt, so that the command says how to resume before the signal ends it."""


def raise_terminated(signum, frame):
    raise Terminated


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
                if sig == signal.SIGINT and signal.getsignal(sig) == signal.SIG_IGN:
                    continue  # started immune to Ctrl-C (nohup, a background job), as Python leaves it: stay so
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.received is None:  # the first one decides: SLURM may follow submitit's SIGUSR2 with SIGTERM
            self.received = signum

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        if self.received is not None and exc[0] is None:
            # Hand the signal to whoever had it before: Python's KeyboardInterrupt, the command's
            # Terminated, or submitit's requeue on SLURM. Otherwise SIGTERM ends the process, even
            # where submitit set it to be ignored: a job that SLURM requeues or cancels must not
            # report a result.
            if self.received == signal.SIGTERM and self.previous.get(signal.SIGTERM) is not raise_terminated:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.raise_signal(self.received)


@dataclass
class Progress:
    """Where the stack's training stands, the same for all its models."""
    samples: int = 0
    steps: int = 0
    wall_s: float = 0.0
    pos: int = 0  # the next position in this epoch's order of the training images


@dataclass
class Record:
    """What a model of the stack has recorded of its own."""
    rows: int = 0  # rows of its metrics.csv
    last: dict = field(default_factory=dict)  # its latest evaluation's ELBOs and log-likelihoods
    untrained_elbo: float | None = None  # the mark that an evaluation far below it is a wrecked run
    warning: str | None = None


def checkpoint_state(progress: Progress, record: Record, perm: torch.Tensor | None) -> dict:
    """A model's "state" in its checkpoint: a single model's, in plain types and one tensor."""
    state = {f.name: getattr(progress, f.name) for f in fields(Progress)} | {"perm": perm}
    return state | {f.name: getattr(record, f.name) for f in fields(Record) if getattr(record, f.name) is not None}


def from_checkpoint_state(state: dict) -> tuple[Progress, Record, torch.Tensor | None]:
    return (Progress(**{f.name: state[f.name] for f in fields(Progress)}),
            Record(**{f.name: state[f.name] for f in fields(Record) if f.name in state}), state["perm"])


def save_stack(paths: list[Path], settings: list[dict], model: VAE, optimizer: Optimizer, algorithm_state: dict,
               gens: list[torch.Generator], states: list[dict]) -> None:
    """Each model of the stack into its own checkpoint, as a single model's: its own part of the
    weights, the optimizer and the algorithm's state, its random states, and `states[k]`, where
    its training stands."""
    for k, path in enumerate(paths):
        own_state = {key: (value[k][..., :model.latent_dims[k]] if value[k].dim() else value[k]).clone()
                     for key, value in algorithm_state.items()}  # chains: its own units of z
        save_atomic({"config": settings[k], "model": own_state_dict(model, k),
                     "optimizer": optimizer.own_state_dict(model, k), "algorithm_state": own_state,
                     "rng": rng_states(gens[k]), "state": states[k]}, path)


def restore_stack(paths: list[Path], ckpts: list[dict], model: VAE, optimizer: Optimizer, algorithm_state: dict,
                  gens: list[torch.Generator]) -> list[tuple[Progress, Record, torch.Tensor | None]]:
    """Each model of the stack from its checkpoint (`save_stack`'s); where each one's training stood,
    what it had recorded, and its order of the training images."""
    device = gens[0].device.type
    for path, ckpt in zip(paths, ckpts):
        if (saved_device := ckpt["rng"].get("device", "cpu")) != device:  # device=auto, another machine
            raise CheckpointError(f"{path}: written by a job on {saved_device}, and this job runs on {device}: the "
                                  f"random streams of the two differ, so it can resume only on {saved_device}; or "
                                  "choose another output dir")
    stands = []
    for k, (path, ckpt) in enumerate(zip(paths, ckpts)):
        try:  # right keys, wrong contents: shapes, types
            load_own_state_dict(model, k, ckpt["model"])
            optimizer.load_own_state_dict(model, k, ckpt["optimizer"])
            for key, value in ckpt.get("algorithm_state", {}).items():
                own = algorithm_state[key][k]
                (own[..., :value.shape[-1]] if value.dim() else own).copy_(value)
            set_rng_states(gens[k], ckpt["rng"])
            stands.append(from_checkpoint_state(ckpt["state"]))
        except Exception as e:
            raise CheckpointError(f"{path}: damaged ({str(e).splitlines()[0]}); delete it to start this run over, "
                                  "or choose another output dir") from None
    return stands


def save_model(settings: dict, model: VAE, k: int, input_dim: int, path: Path) -> None:
    """Model k of the stack, as a single model's file."""
    save_atomic({"config": settings, "input_dim": input_dim, "state_dict": own_state_dict(model, k)}, path)


def load_run(run_dir: str | Path, device: str = "cpu") -> tuple[Config, VAE]:
    """The config and trained model (a stack of one) of a finished run, for a notebook or an
    evaluation script."""
    path = Path(run_dir) / "model.pt"
    saved = load_file(path, MODEL_KEYS)
    try:
        cfg = config_from_dict(saved["config"])
        model = build_model([cfg], saved["input_dim"])
        load_own_state_dict(model, 0, saved["state_dict"])
    except Exception as e:
        raise CheckpointError(f"{path}: damaged or not a file this project wrote ({str(e).splitlines()[0]})") from None
    return cfg, model.to(device).eval()
