"""Training of one model: a job's model and step function, and the loop that drives them.

`train(cfg, out_dir)` is a plain function: Hydra's entry point (run.py) only builds its
arguments. Everything a job writes lands in `out_dir`:
  metrics.csv     one row per evaluation, flushed as it is written (metrics.py)
  checkpoint.pt   the full training state, replaced atomically; a re-run resumes from it (checkpoint.py)
  model.pt        final weights with the config that made them (see `checkpoint.load_run`)
  summary.json    status, final ELBOs, samples seen, wall time, speed, device
  .lock           held while the job trains: one writer per dir (rundir.py)
"""
import logging
import random
import signal
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from vae_repro.adagrad import Adagrad
from vae_repro.algorithms import STEPS, replayed_in_cuda_graph
from vae_repro.checkpoint import (CheckpointError, SaveError, StopSignals, build_model, config_dict, load_checkpoint,
                                  rng_states, save_atomic, save_model, set_rng_states)
from vae_repro.config import Config, ConfigError, check_config
from vae_repro.data import DataError, prepare_data
from vae_repro.machine import ThreadCount, check_compile, keep_freed_memory, resolve_device
from vae_repro.marginal import make_estimator
from vae_repro.model import compile_passes
from vae_repro.metrics import (MetricsLog, eval_schedule, evaluate, evaluate_marginal, metric_columns, record_failure,
                               write_summary)
from vae_repro.rundir import RunDirLock

log = logging.getLogger(__name__)

# Steps between checks that the weights are finite: a NaN or infinity stays in the weights once
# there, and a check is a host sync on a GPU.
CHECK_EVERY = 100
# A run is flagged as wrecked when its ELBO falls below the untrained model's by more than this many
# times the latter's size; the untrained model is scored on this many test images.
WRECKED_MARGIN, UNTRAINED_EVAL_POINTS = 10, 1000


class Diverged(RuntimeError):
    """The weights became NaN or infinite: the training diverged."""


def weight_decay(cfg: Config, n_train: int) -> float:
    """The N(0, prior_std^2 I) prior's gradient per datapoint, for the training set in use."""
    if cfg.optimizer.weight_decay is not None:
        return cfg.optimizer.weight_decay
    return 1.0 / (cfg.optimizer.prior_std ** 2 * n_train)


class Job:
    """One training job: what it trains and with what, where it stands, and how it saves itself."""

    def __init__(self, cfg: Config, out: Path, data: tuple[torch.Tensor, torch.Tensor] | None = None):
        self.cfg, self.out = cfg, out
        keep_freed_memory()
        self.device = resolve_device(str(cfg.device))
        self.threads = ThreadCount(torch.get_num_threads(), choose=cfg.threads == 0 and self.device.type == "cpu")
        check_compile(cfg, self.device)
        self.train_x, self.test_x = prepare_data(cfg, self.device, data)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg, self.train_x.shape[1]).to(self.device)
        if cfg.train.compile:
            compile_passes(self.model)
        self.weight_decay = weight_decay(cfg, len(self.train_x))
        self.optimizer = Adagrad(self.model, cfg.optimizer.lr, self.weight_decay)
        self.gen = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self.batch_u8 = torch.empty(cfg.train.batch_size, self.train_x.shape[1], dtype=torch.uint8, device=self.device)
        self.batch_x = torch.empty(self.batch_u8.shape, device=self.device)
        self.binarize_dynamic = str(cfg.data.binarize) == "dynamic"
        self.step, self.algorithm_state = STEPS[str(cfg.algorithm.name)](self.model, self.optimizer, cfg,
                                                                          len(self.train_x), self.gen)
        if cfg.train.cuda_graph and self.device.type == "cuda":
            self.step = replayed_in_cuda_graph(self.step, self.optimizer)
        self.has_encoder = str(cfg.algorithm.name) != "mcem"  # Monte Carlo EM has no q(z|x), so no ELBO
        self.marginal = make_estimator(cfg)
        self.columns = metric_columns(self.marginal is not None)
        self.schedule = eval_schedule(int(cfg.train.eval_start), cfg.train.eval_points_per_decade,
                                      int(cfg.train.max_samples), cfg.train.batch_size)
        self.settings = config_dict(cfg)
        self.state = {"samples": 0, "steps": 0, "wall_s": 0.0, "rows": 0, "perm": None, "pos": len(self.train_x),
                      "last": {}}
        self.ckpt_path = out / "checkpoint.pt"
        if (ckpt := load_checkpoint(self.ckpt_path, self.settings)) is not None:
            if (saved_device := ckpt["rng"].get("device", "cpu")) != self.device.type:  # device=auto, other machine
                raise CheckpointError(f"{self.ckpt_path}: written by a job on {saved_device}, and this job runs on "
                                      f"{self.device.type}: the random streams of the two differ, so it can resume "
                                      f"only on {saved_device}; or choose another output dir")
            try:
                self.restore(ckpt)
            except Exception as e:  # right keys, wrong contents: shapes, types
                raise CheckpointError(f"{self.ckpt_path}: damaged ({str(e).splitlines()[0]}); delete it to start this "
                                      "run over, or choose another output dir") from None
            log.info("resuming from %s at %d samples", self.ckpt_path, self.state["samples"])
        elif self.has_encoder:  # the mark that an evaluation far below it is a wrecked run, not a slow one
            self.state["untrained_elbo"] = evaluate(self.model, self.test_x[:UNTRAINED_EVAL_POINTS],
                                                    cfg.train.mc_samples, cfg.seed + 1, self.binarize_dynamic)[0]
        log.info("%d training images: weight decay %.3g (the weight prior)", len(self.train_x), self.weight_decay)
        self.saved_samples = self.state["samples"] if ckpt is not None else None
        self.started = time.perf_counter() - self.state["wall_s"]

    def save_checkpoint(self) -> None:
        try:
            save_atomic({"config": self.settings, "model": self.model.state_dict(),
                         "optimizer": self.optimizer.state_dict(),
                         "algorithm_state": self.algorithm_state, "rng": rng_states(self.gen), "state": self.state},
                        self.ckpt_path)
        except SaveError as e:
            kept = ("no checkpoint was written before" if self.saved_samples is None else
                    f"the previous checkpoint, at {self.saved_samples} samples, is kept: run the same command to "
                    "resume from it once there is room")
            raise SaveError(f"{e}; {kept}") from e
        self.saved_samples = self.state["samples"]

    def restore(self, ckpt: dict) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])  # a warm-up schedule in older checkpoints follows from steps
        for key, value in ckpt.get("algorithm_state", {}).items():
            self.algorithm_state[key].copy_(value)
        set_rng_states(self.gen, ckpt["rng"])
        self.state = ckpt["state"]
        if self.state["perm"] is not None:
            self.state["perm"] = self.state["perm"].to(self.device)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next minibatch in [0, 1] and its images' indices: epochs in a fresh random order, the
        remainder dropped. The batch is gathered into the same buffers every step (a step keeps no
        reference to it), which saves allocating them anew."""
        state, batch = self.state, len(self.batch_u8)
        pos = state["pos"]
        if pos + batch > len(self.train_x):
            state["perm"], pos = torch.randperm(len(self.train_x), generator=self.gen, device=self.device), 0
        idx = state["perm"][pos:pos + batch]
        state["pos"] = pos + batch
        torch.index_select(self.train_x, 0, idx, out=self.batch_u8)
        x = torch.div(self.batch_u8, 255, out=self.batch_x)  # as to_unit_interval, to the bit
        if self.binarize_dynamic:
            x = torch.bernoulli(x, generator=self.gen)
        return x, idx

    def train_steps(self, n: int, stop: StopSignals) -> int:
        """Up to `n` training steps, fewer if a stop signal comes; returns how many."""
        step, next_batch, gen = self.step, self.next_batch, self.gen
        for done in range(1, n + 1):
            step(*next_batch(), gen)
            if stop.received is not None:
                break
        return done

    def clock(self) -> float:
        self.state["wall_s"] = time.perf_counter() - self.started
        return self.state["wall_s"]

    def evaluate(self, metrics: MetricsLog) -> dict:
        """The ELBO of both whole splits (for a model with an encoder) and the marginal log-likelihood
        of their first images (if `eval.marginal` is set), written as one row of metrics.csv."""
        mc, seed, dynamic = self.cfg.train.mc_samples, self.cfg.seed + 1, str(self.cfg.data.binarize) == "dynamic"
        row = {"samples": self.state["samples"]}
        for split, x in (("train", self.train_x), ("test", self.test_x)):
            if self.has_encoder:
                row[f"{split}_elbo"], row[f"{split}_log_px"], row[f"{split}_kl"] = evaluate(self.model, x, mc, seed,
                                                                                           dynamic)
            if self.marginal is not None:
                row[f"{split}_log_px_marginal"] = evaluate_marginal(self.marginal, self.model,
                                                                    x[:self.cfg.eval.marginal_points], seed, dynamic)
        row["wall_s"] = self.clock()
        metrics.write(row)
        self.state["rows"] += 1
        self.state["last"] = {k: v for k, v in row.items() if k.endswith(("_elbo", "_marginal"))}
        self.flag_if_wrecked(row)
        return row

    def flag_if_wrecked(self, row: dict) -> None:
        """Flag, once, a run whose ELBO has fallen far below its untrained model's: a step size too
        large can wreck a run without a NaN (the encoder's variances blown up by Adagrad's first
        full-size steps). The run goes on."""
        untrained = self.state.get("untrained_elbo")
        if untrained is None or "warning" in self.state:
            return
        worst = min(row["train_elbo"], row["test_elbo"])
        if worst < untrained - WRECKED_MARGIN * max(abs(untrained), 100.0):
            self.state["warning"] = (f"the ELBO ({worst:.4g} at {row['samples']} samples) is far below the untrained "
                                     f"model's ({untrained:.1f}): optimizer.lr={self.cfg.optimizer.lr} is likely too "
                                     "large for this model; try a smaller one")
            log.warning("%s: %s", self.out, self.state["warning"])

    def summary(self, status: str, message: str = "") -> dict:
        state = self.state
        s = {"status": status, "message": message, "samples": state["samples"], **state["last"],
             "wall_s": state["wall_s"], "samples_per_s": state["samples"] / max(state["wall_s"], 1e-9),
             "device": str(self.device), "threads": self.threads.counts[0], "threads_in_use": self.threads.current,
             "n_train": len(self.train_x), "weight_decay": self.weight_decay,
             "algorithm": str(self.cfg.algorithm.name), "latent_dim": self.cfg.latent_dim, "lr": self.cfg.optimizer.lr}
        if "warning" in state:
            s["warning"] = state["warning"]
        write_summary(self.out, s)
        return s

    def check_finite(self) -> None:
        if not torch.isfinite(torch.stack([p.sum() for p in self.model.parameters()])).all():
            self.clock()
            remedy = "try a smaller optimizer.lr"
            if str(self.cfg.model.likelihood) == "gaussian" and self.cfg.model.decoder_logvar_min is None:
                remedy += (", or a floor on the decoder's log variance (model.decoder_logvar_min=-10): "
                           "pixels that barely vary let it fall without bound")
            message = (f"the weights became NaN or infinite by step {self.state['steps']} ({self.state['samples']} "
                       f"samples) with optimizer.lr={self.cfg.optimizer.lr}; {remedy}")
            self.summary("diverged", message)
            raise Diverged(message)

    def run(self) -> dict:
        """Train to the end of the evaluation schedule, or until a stop signal; returns the summary."""
        state, batch, schedule = self.state, self.cfg.train.batch_size, self.schedule
        if state["samples"] >= schedule[-1]:
            message = (f"already complete at {state['samples']} samples; trained nothing (a larger train.max_samples "
                       "extends it)")
            log.debug("%s: %s", self.out, message)  # the command's report tells it
            return self.summary("completed", message)
        next_eval = next((i for i, s in enumerate(schedule) if s > state["samples"]), len(schedule))
        ckpt_every = int(self.cfg.train.checkpoint_every)
        next_ckpt = (state["samples"] // ckpt_every + 1) * ckpt_every
        warmup, lr = self.cfg.optimizer.warmup_steps, self.cfg.optimizer.lr
        metrics = MetricsLog(self.out / "metrics.csv", self.columns, keep_rows=state["rows"])
        bar = tqdm(total=schedule[-1], initial=state["samples"], unit="sample", unit_scale=True, dynamic_ncols=True,
                   desc=f"{self.cfg.algorithm.name} N_z={self.cfg.latent_dim}", disable=not self.cfg.train.progress)
        try:
            with StopSignals() as stop, logging_redirect_tqdm():
                self.summary("running")
                while state["samples"] < schedule[-1] and stop.received is None:
                    # Steps up to the next event: an evaluation, a checkpoint, the end of the warm-up (whose
                    # minibatches only fill Adagrad's accumulator) or a finiteness check.
                    self.optimizer.lr = 0.0 if state["steps"] < warmup else lr
                    to_event = min(schedule[next_eval], next_ckpt) - state["samples"]
                    wanted = min(-(-to_event // batch), CHECK_EVERY - state["steps"] % CHECK_EVERY,
                                 warmup - state["steps"] if state["steps"] < warmup else CHECK_EVERY)
                    n = self.threads.steps(wanted)  # fewer where the thread count is under watch
                    started = time.perf_counter()
                    done = self.train_steps(n, stop)
                    self.threads.timed(done, time.perf_counter() - started)
                    state["samples"] += done * batch
                    state["steps"] += done
                    bar.update(done * batch)
                    if done < wanted and stop.received is None:
                        continue  # not yet at the event
                    self.check_finite()
                    if state["samples"] >= schedule[next_eval]:
                        self.evaluate(metrics)
                        next_eval += 1
                        bar.set_postfix({k: f"{v:.2f}" for k, v in state["last"].items()})
                    if state["samples"] >= next_ckpt:
                        self.clock()
                        self.save_checkpoint()
                        self.summary("running")
                        next_ckpt += ckpt_every
                self.clock()
                self.save_checkpoint()
                if stop.received is not None:
                    message = f"stopped by {signal.Signals(stop.received).name} at {state['samples']} samples; checkpoint saved"
                    log.warning(message)
                    return self.summary("interrupted", message)
                save_model(self.cfg, self.model, self.train_x.shape[1], self.out / "model.pt")
                return self.summary("completed")
        finally:
            bar.close()
            metrics.close()


def train(cfg: Config, out_dir: str | Path, data: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict:
    """Train one model as `cfg` says, writing into `out_dir`; resume if a checkpoint is there.

    `data` is (train, test) as uint8 [N, 784] grey levels; by default it is loaded as `cfg.data`
    says. Returns the summary (also written to summary.json). Raises Diverged on
    non-finite weights, and any other error of the job, after recording it in summary.json;
    RunDirBusy, without touching the dir, if another process trains in it.
    """
    check_config(cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with RunDirLock(out):
        job = None
        try:
            job = Job(cfg, out, data)
            return job.run()
        except Diverged:
            raise
        except Exception as e:
            message = error_line(e)
            try:
                job.summary("failed", message) if job is not None else record_failure(out, message)
            except OSError as write_error:  # a full disk may refuse this too; the error itself still goes up
                log.error("%s: could not record the failure in summary.json (%s)", out, write_error)
            raise


def error_line(e: BaseException) -> str:
    """An error as one line: the project's own errors by their message, others with their type."""
    text = str(e).split("\nError stream produced")[0]  # submitit appends a failed job's whole stderr
    text = " ".join(text.split())
    own = (ConfigError, CheckpointError, SaveError, DataError, Diverged)
    return text if isinstance(e, own) else f"{type(e).__name__}: {text}".rstrip(": ")
