"""Training of a stack of K >= 1 models side by side: its models and step function, and the loop
that drives them. A single run is the stack of one.

`train(cfg, out_dir)` and `train_stack(cfgs, out_dirs)` are plain functions: Hydra's entry
point (run.py) and the stack launcher only build their arguments. Each model of a stack stays
a job of its own, and everything it writes lands in its own dir, as a single run's would:
  metrics.csv     one row per evaluation, flushed as it is written (records.py)
  checkpoint.pt   the full training state, replaced atomically; a re-run resumes from it (checkpoint.py)
  model.pt        final weights with the config that made them (see `checkpoint.load_run`)
  summary.json    status, final ELBOs, samples seen, wall time, speed, device (records.Summary)
  .lock           held while the job trains: one writer per dir (rundir.py)
  tensorboard/, mlflow_run_id   with logger=tensorboard or mlflow: the job's tracker run (trackers.py)
"""
import logging
import random
import signal
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vae_repro.algorithms import ALGORITHMS, Algorithm, replayed_in_cuda_graph
from vae_repro.checkpoint import (CheckpointError, Progress, Record, SaveError, StopSignals, checkpoint_state,
                                  restore_stack, save_model, save_stack)
from vae_repro.config import Config, ConfigError, check_config, stack_key
from vae_repro.console import logs_above_the_bar
from vae_repro.data import DataError, Images, pixel_scale, prepare_data
from vae_repro.jobs import PreparedJob, prepare
from vae_repro.machine import ThreadCount, check_compile, keep_freed_memory, resolve_device
from vae_repro.model import build_model, compile_passes
from vae_repro.metrics import Evaluation
from vae_repro.records import MetricsLog, Row, Summary, record_failure
from vae_repro.noise import Noise
from vae_repro.optimizers import Optimizer
from vae_repro.rundir import RunDirLock
from vae_repro.schedule import Events, passed
from vae_repro.trackers import Tracker, open_trackers

log = logging.getLogger(__name__)

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
    """A stack of models trained as one: what it trains and with what, where it stands, and how it
    saves each model. `cfgs` differ at most in seed, latent_dim and optimizer.lr; every model
    draws its initial weights, data order and noise from its own seed, as it would alone."""

    def __init__(self, jobs: list[PreparedJob], data: Images | None = None):
        if len({stack_key(job.cfg) for job in jobs}) > 1:
            raise ConfigError("the models of a stack may differ only in seed, latent_dim and optimizer.lr")
        self.cfgs, self.outs = [job.cfg for job in jobs], [job.out_dir for job in jobs]
        cfg = self.cfg = self.cfgs[0]  # what the models share
        keep_freed_memory()
        self.device = resolve_device(str(cfg.device))
        self.threads = ThreadCount(torch.get_num_threads(), choose=cfg.threads == 0 and self.device.type == "cpu")
        check_compile(cfg, self.device)
        self.train_x, self.test_x, self.image_shape = prepare_data(cfg, self.device, data)
        self.pixel_scale = pixel_scale(self.train_x)
        algorithm = ALGORITHMS[str(cfg.algorithm.name)]
        self.build(algorithm)
        self.has_encoder = algorithm.has_encoder  # without q(z|x), no ELBO
        self.evaluation = Evaluation(cfg, self.has_encoder)
        self.columns = self.evaluation.columns
        self.events = Events.of(cfg, len(self.train_x))
        self.settings = [job.settings for job in jobs]
        self.progress, self.perms = Progress(pos=len(self.train_x)), None
        self.records = [Record() for _ in self.cfgs]
        self.summaries: dict[Path, Summary] = {}
        self.metrics: list[MetricsLog] = []
        self.trackers: list[Tracker] = []
        self.ckpt_paths = [out / "checkpoint.pt" for out in self.outs]
        self.resume_or_start([job.take_checkpoint() for job in jobs])
        log.info("%d training images: weight decay %.3g (the weight prior)", len(self.train_x), self.weight_decay)
        self.started = time.perf_counter() - self.progress.wall_s

    def build(self, algorithm: Algorithm) -> None:
        """The stack's model, optimizer, noise and step: each model initialised as it would be alone."""
        cfg = self.cfg
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        self.model = build_model(self.cfgs, self.train_x.shape[1]).to(self.device)
        if cfg.train.compile:
            compile_passes(self.model, algorithm.passes)
        self.weight_decay = weight_decay(cfg, len(self.train_x))
        self.lrs = [c.optimizer.lr for c in self.cfgs]
        self.optimizer = Optimizer(self.model, self.lrs, self.weight_decay, cfg.optimizer)
        self.noise = Noise.seeded([c.seed for c in self.cfgs], self.model.latent_dims, self.device,
                                  self.model.latent_dim)
        self.make_batch_buffers()
        self.binarize_dynamic = str(cfg.data.binarize) == "dynamic"
        self.step, self.algorithm_state = algorithm.make_step(self.model, self.optimizer, cfg, len(self.train_x),
                                                              self.noise)
        if cfg.train.cuda_graph and self.device.type == "cuda":
            self.step = replayed_in_cuda_graph(self.step, self.optimizer, self.noise)

    def resume_or_start(self, ckpts: list[dict | None]) -> None:
        """From the models' checkpoints where there are some; else from scratch, with the untrained
        models' ELBO as the mark of a wrecked run."""
        if any(ckpt is not None for ckpt in ckpts):
            self.restore(ckpts)
            log.info("resuming from %s at %d samples", ", ".join(map(str, self.ckpt_paths)), self.progress.samples)
        elif self.has_encoder:
            untrained = self.evaluation.elbo(self.model, self.test_x[:UNTRAINED_EVAL_POINTS], self.eval_seeds())
            for record, (elbo, _, _) in zip(self.records, untrained):
                record.untrained_elbo = elbo
        self.saved_samples = self.progress.samples if ckpts[0] is not None else None

    def eval_seeds(self) -> list[int]:
        return [c.seed + 1 for c in self.cfgs]

    def restore(self, ckpts: list[dict | None]) -> None:
        points = {"none" if ckpt is None else str(ckpt["state"]["samples"]) for ckpt in ckpts}
        if len(points) > 1:
            raise CheckpointError(f"{', '.join(map(str, self.outs))}: their checkpoints stand at different points "
                                  f"({', '.join(sorted(points))} samples): resume them in separate stacks")
        stands = restore_stack(self.ckpt_paths, ckpts, self.model, self.optimizer, self.algorithm_state,
                               self.noise.gens)
        progresses, self.records, perms = (list(column) for column in zip(*stands))
        self.progress = progresses[0]  # the same for all, as checked above
        if perms[0] is not None:
            self.perms = torch.stack(perms).to(self.device)

    def save_checkpoints(self) -> None:
        perms = self.perms if self.perms is not None else [None] * len(self.cfgs)
        states = [checkpoint_state(self.progress, record, perm) for record, perm in zip(self.records, perms)]
        try:
            save_stack(self.ckpt_paths, self.settings, self.model, self.optimizer, self.algorithm_state,
                       self.noise.gens, states)
        except SaveError as e:
            kept = ("no checkpoint was written before" if self.saved_samples is None else
                    f"the previous checkpoint, at {self.saved_samples} samples, is kept: run the same command to "
                    "resume from it once there is room")
            raise SaveError(f"{e}; {kept}") from e
        self.saved_samples = self.progress.samples

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next minibatch of each model ([K, B, D] in [0, 1]) and its images' indices ([K, B]): epochs
        in a fresh random order per model, the remainder dropped. The batch is gathered into the same
        buffers every step (a step keeps no reference to it), which saves allocating them anew."""
        progress, batch, stack = self.progress, self.cfg.train.batch_size, len(self.cfgs)
        if progress.pos + batch > len(self.train_x):
            self.perms, progress.pos = self.noise.permutations(len(self.train_x)), 0
        idx = self.perms[:, progress.pos:progress.pos + batch]
        progress.pos += batch
        torch.index_select(self.train_x, 0, idx.flatten(), out=self.batch_images)
        x = torch.div(self.batch_images, self.pixel_scale, out=self.batch_x)  # as to_unit_interval, to the bit
        x = x.view(stack, batch, -1)
        if self.binarize_dynamic:
            x = self.noise.bernoulli(x)
        return x, idx

    def train_steps(self, n: int, stop: StopSignals) -> int:
        """Up to `n` training steps, fewer if a stop signal comes; returns how many."""
        step, next_batch = self.step, self.next_batch
        for done in range(1, n + 1):
            step(*next_batch())
            if stop.received is not None:
                break
        return done

    def clock(self) -> float:
        self.progress.wall_s = time.perf_counter() - self.started
        return self.progress.wall_s

    def evaluate(self) -> None:
        """The ELBO of both whole splits (for models with an encoder), their IWAE-k bounds (for each k of
        `eval.iwae_k`) and the marginal log-likelihood of their first images (if `eval.marginal` is
        set), written as one row of each model's metrics.csv."""
        rows = self.evaluation.rows(self.model, self.progress.samples, self.train_x, self.test_x, self.eval_seeds())
        wall_s = self.clock()
        for k, (row, record, metrics) in enumerate(zip(rows, self.records, self.metrics)):
            row.wall_s = wall_s
            metrics.write(row)
            record.rows += 1
            record.last = row.bounds()
            self.flag_if_wrecked(k, row)
        for tracker, row in zip(self.trackers, rows):
            tracker.log(row.measured())

    def flag_if_wrecked(self, k: int, row: Row) -> None:
        """Flag, once, a run whose ELBO has fallen far below its untrained model's: a step size too
        large can wreck a run without a NaN (the encoder's variances blown up by Adagrad's first
        full-size steps). The run goes on."""
        record = self.records[k]
        if record.untrained_elbo is None or record.warning is not None:
            return
        worst = min(row.train.elbo, row.test.elbo)
        if worst < record.untrained_elbo - WRECKED_MARGIN * max(abs(record.untrained_elbo), 100.0):
            record.warning = (f"the ELBO ({worst:.4g} at {row.samples} samples) is far below the untrained "
                              f"model's ({record.untrained_elbo:.1f}) with optimizer.lr={self.lrs[k]}: "
                              f"{self.remedy()}")
            log.warning("%s: %s", self.outs[k], record.warning)

    def summary(self, k: int, status: str, message: str = "") -> Summary:
        progress, record, cfg = self.progress, self.records[k], self.cfgs[k]
        s = Summary(status, message, progress.samples, record.last, progress.wall_s, str(self.device),
                    self.threads.counts[0], self.threads.current, len(self.cfgs), len(self.train_x),
                    self.weight_decay, list(self.image_shape) if self.image_shape else None,
                    str(cfg.algorithm.name), cfg.latent_dim, cfg.optimizer.lr, record.warning)
        s.write(self.outs[k])
        self.summaries[self.outs[k]] = s
        return s

    def summaries_now(self, status: str, message: str = "") -> None:
        for k in range(len(self.cfgs)):
            self.summary(k, status, message)

    def remedy(self) -> str:
        """What to try for a run that diverged or was wrecked."""
        if str(self.cfg.model.likelihood) == "gaussian" and self.cfg.model.decoder_logvar_min is None:
            return ("try a smaller optimizer.lr, or a floor on the decoder's log variance "
                    "(model.decoder_logvar_min=-10): pixels that barely vary let it fall without bound")
        return "try a smaller optimizer.lr"

    def leave_if_diverged(self) -> None:
        """Models whose weights became NaN or infinite are recorded "diverged" and leave the stack."""
        finite = torch.stack([p.flatten(1).sum(1) for p in self.model.parameters()]).isfinite().all(0).tolist()
        if all(finite):
            return
        self.clock()
        for k in (k for k, ok in enumerate(finite) if not ok):
            message = (f"the weights became NaN or infinite by step {self.progress.steps} ({self.progress.samples} "
                       f"samples) with optimizer.lr={self.lrs[k]}; {self.remedy()}")
            self.summary(k, "diverged", message)
            log.debug("%s: diverged: %s", self.outs[k], message)  # the command tells it
            self.metrics[k].close()
            self.trackers[k].close("diverged")
        self.keep([k for k, ok in enumerate(finite) if ok])

    def keep(self, models: list[int]) -> None:
        """Go on with these models of the stack only: every per-model tensor (first dimension) and list
        cut to them."""
        def take(value):
            return value[models] if isinstance(value, torch.Tensor) else [value[k] for k in models]

        for p in self.model.parameters():
            p.data, p.grad = take(p.data), None
        self.model.set_latent_dims(take(self.model.latent_dims))
        self.optimizer.keep(take)
        self.noise.gens, self.noise.latent_dims = take(self.noise.gens), take(self.noise.latent_dims)
        self.algorithm_state = {key: take(value) for key, value in self.algorithm_state.items()}
        self.perms = take(self.perms) if self.perms is not None else None
        for attr in ("cfgs", "outs", "lrs", "settings", "records", "metrics", "trackers", "ckpt_paths"):
            setattr(self, attr, take(getattr(self, attr)))
        self.make_batch_buffers()

    def make_batch_buffers(self) -> None:
        self.batch_images = torch.empty(len(self.cfgs) * self.cfg.train.batch_size, self.train_x.shape[1],
                                        dtype=self.train_x.dtype, device=self.device)
        self.batch_x = torch.empty(self.batch_images.shape, device=self.device)

    def run(self) -> list[Summary]:
        """Train to the end of the evaluation schedule, or until a stop signal; returns each model's summary."""
        if self.progress.steps >= self.events.last:
            return self.already_complete()
        self.metrics = [MetricsLog(out / "metrics.csv", self.columns, keep_rows=record.rows)
                        for out, record in zip(self.outs, self.records)]
        self.trackers = open_trackers(self.cfg, self.outs, self.settings, self.columns, self.saved_samples)
        bar = self.progress_bar()
        try:
            with StopSignals() as stop, logs_above_the_bar():
                self.summaries_now("running")
                self.set_step_sizes()
                while self.cfgs and self.progress.steps < self.events.last and stop.received is None:
                    before = self.progress.steps
                    if self.steps_to_next_event(stop, bar):  # a stop too: no diverged model is checkpointed
                        self.at_events(before, bar)
                return self.finish(stop.received)
        finally:
            bar.close()
            for metrics in self.metrics:
                metrics.close()
            for tracker, out in zip(self.trackers, self.outs):  # those still open: interrupted, or failed
                tracker.close(self.summaries[out].status if out in self.summaries else "failed")

    def steps_to_next_event(self, stop: StopSignals, bar: tqdm) -> bool:
        """Train up to the next event; whether it got there or a signal stopped it, rather than taking
        fewer steps while the thread count is under watch."""
        progress, batch = self.progress, self.cfg.train.batch_size
        wanted = self.events.steps_to_next(progress.steps)
        started = time.perf_counter()
        done = self.train_steps(self.threads.steps(wanted), stop)
        self.threads.timed(done, time.perf_counter() - started)
        progress.samples += done * batch
        progress.steps += done
        bar.update(done * batch)
        return done == wanted or stop.received is not None

    def at_events(self, before: int, bar: tqdm) -> None:
        """What fell due after step `before`: models that diverged leave, then an evaluation, a checkpoint,
        a change of step size (the warm-up's end, a stage's start)."""
        self.leave_if_diverged()
        now, events = self.progress.steps, self.events
        if not self.cfgs:
            return
        if passed(events.evaluations, before, now):
            self.evaluate()
            if len(self.cfgs) == 1:
                bar.set_postfix({k: f"{v:.2f}" for k, v in self.records[0].last.items()})
        if passed(events.checkpoints, before, now):
            self.clock()
            self.save_checkpoints()
            self.summaries_now("running")
        if passed(events.step_size_changes, before, now):
            self.set_step_sizes()

    def set_step_sizes(self) -> None:
        """Each model's step size for the steps from here: its optimizer.lr, as the schedule scales it."""
        factor = self.events.step_size_factor(self.progress.steps)
        self.optimizer.lrs = [lr * factor for lr in self.lrs]

    def finish(self, signal_received: int | None) -> list[Summary]:
        """After the loop: each model still in the stack checkpointed, and its model.pt written unless a
        signal stopped it."""
        if self.cfgs:
            self.clock()
            self.save_checkpoints()
            if signal_received is not None:
                message = (f"stopped by {signal.Signals(signal_received).name} at {self.progress.samples} samples; "
                           "checkpoint saved")
                log.warning(message)
                self.summaries_now("interrupted", message)
            else:
                for k, out in enumerate(self.outs):
                    save_model(self.settings[k], self.model, k, self.train_x.shape[1], out / "model.pt")
                self.summaries_now("completed")
                for tracker, out in zip(self.trackers, self.outs):
                    tracker.close("completed", out / "model.pt")
        return list(self.summaries.values())

    def already_complete(self) -> list[Summary]:
        message = (f"already complete at {self.progress.samples} samples; trained nothing (a larger "
                   "train.max_samples extends it)")
        log.debug("%s: %s", ", ".join(map(str, self.outs)), message)  # the command's report tells it
        self.summaries_now("completed", message)
        return list(self.summaries.values())

    def progress_bar(self) -> tqdm:
        stacked = f" x{len(self.cfgs)}" if len(self.cfgs) > 1 else ""
        latent_dims = ",".join(map(str, sorted(set(self.model.latent_dims))))
        return tqdm(total=self.events.last * self.cfg.train.batch_size, initial=self.progress.samples, unit="sample", unit_scale=True,
                    dynamic_ncols=True, desc=f"{self.cfg.algorithm.name} N_z={latent_dims}{stacked}",
                    disable=None if self.cfg.train.progress else True)  # None: on a terminal only


def train_stack(cfgs: list[Config], out_dirs: list[str | Path], data: Images | None = None) -> list[Summary]:
    """Train the models of `cfgs` as one stack, model k writing into out_dirs[k]; resume from their
    checkpoints where there are some. The configs may differ only in seed, latent_dim and
    optimizer.lr.

    `data` is the images to train and test on; by default they are loaded as the configs say. Returns each model's summary (also written to its summary.json), in the order of `cfgs`:
    a model that diverged is "diverged" while the others go on. Any other error of the stack is
    recorded in every model's summary.json and raised; RunDirBusy, without touching the dirs, if
    another process trains in one of them.
    """
    for cfg in cfgs:
        check_config(cfg)
    outs = [Path(d) for d in out_dirs]
    for out in outs:
        out.mkdir(parents=True, exist_ok=True)
    with ExitStack() as locks:
        for out in outs:
            locks.enter_context(RunDirLock(out))
        job = None
        try:
            job = Job([prepare(cfg, out, data) for cfg, out in zip(cfgs, outs)], data)
            job.run()
            return [job.summaries[out] for out in outs]
        except Exception as e:
            message = error_line(e)
            try:
                if job is not None:
                    job.summaries_now("failed", message)
                else:
                    for out in outs:
                        record_failure(out, message)
            except OSError as write_error:  # a full disk may refuse this too; the error itself still goes up
                log.error("%s: could not record the failure in summary.json (%s)", outs[0], write_error)
            raise


def train(cfg: Config, out_dir: str | Path, data: Images | None = None) -> Summary:
    """Train one model as `cfg` says, writing into `out_dir`; resume if a checkpoint is there. As
    `train_stack` for a stack of one, and raises Diverged when the model diverged."""
    summary = train_stack([cfg], [out_dir], data)[0]
    if summary.status == "diverged":
        raise Diverged(summary.message)
    return summary


def error_line(e: BaseException) -> str:
    """An error as one line: the project's own errors by their message, others with their type."""
    text = str(e).split("\nError stream produced")[0]  # submitit appends a failed job's whole stderr
    text = " ".join(text.split())
    own = (ConfigError, CheckpointError, SaveError, DataError, Diverged)
    return text if isinstance(e, own) else f"{type(e).__name__}: {text}".rstrip(": ")
