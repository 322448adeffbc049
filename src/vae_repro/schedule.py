"""When things happen in a job's training: its evaluations (log-spaced in samples, as the paper's
curves), checkpoints, checks that the weights are finite, and the step size's changes (the warm-up's
end, the stages of optimizer.lr_stages), all in steps, converted from the config's samples once."""
import math
from dataclasses import dataclass

from vae_repro.config import Config

# Steps between checks that the weights are finite: a NaN or infinity stays in the weights once
# there, and a check is a host sync on a GPU.
CHECK_EVERY = 100


def eval_schedule(start: int, per_decade: int, max_samples: int, batch_size: int) -> list[int]:
    """Sample counts at which to evaluate: log-spaced from `start`, rounded up to whole batches,
    always ending at the last step."""
    last = math.ceil(max_samples / batch_size) * batch_size
    points, i = {last}, 0
    while (s := start * 10 ** (i / per_decade)) < last:
        points.add(math.ceil(round(s) / batch_size) * batch_size)
        i += 1
    return sorted(points)


class Every:
    """Events at every multiple of `every` (of samples or steps)."""

    def __init__(self, every: int):
        self.every = every

    def next_after(self, now: int) -> int:
        return (now // self.every + 1) * self.every


class At:
    """Events at the given counts (of samples or steps)."""

    def __init__(self, points: list[int]):
        self.points = sorted(points)

    def next_after(self, now: int) -> int | float:
        return next((p for p in self.points if p > now), math.inf)


def until(events: Every | At, now: int) -> int | float:
    """How far the next event is."""
    return events.next_after(now) - now


def passed(events: Every | At, before: int, now: int) -> bool:
    """Whether an event lies after `before` and at or before `now`."""
    return events.next_after(before) <= now


@dataclass
class Events:
    """When things happen, in steps, converted from the config's samples once."""
    evaluations: At
    checkpoints: Every  # after the first step at or past each multiple of train.checkpoint_every samples
    checks: Every  # that the weights are finite
    warmup_end: int
    stage_starts: list[int]  # the steps at which stages 1, 2, ... of optimizer.lr_stages start
    last: int

    @classmethod
    def of(cls, cfg: Config, n_train: int) -> "Events":
        batch = cfg.train.batch_size  # the schedule's points are whole batches
        schedule = eval_schedule(int(cfg.train.eval_start), cfg.train.eval_points_per_decade,
                                 int(cfg.train.max_samples), batch)
        steps_per_pass = n_train // batch  # an epoch's remainder is dropped
        stage_starts = [steps_per_pass * (3 ** i - 1) // 2 for i in range(1, cfg.optimizer.lr_stages)]
        return cls(At([s // batch for s in schedule]), Every(math.ceil(cfg.train.checkpoint_every / batch)),
                   Every(CHECK_EVERY), cfg.optimizer.warmup_steps, stage_starts, schedule[-1] // batch)

    @property
    def step_size_changes(self) -> At:
        return At([self.warmup_end, *self.stage_starts])

    def steps_to_next(self, now: int) -> int:
        return min(until(events, now) for events in (self.evaluations, self.checkpoints, self.checks,
                                                      self.step_size_changes))

    def step_size_factor(self, step: int) -> float:
        """The factor of optimizer.lr for the step after `step`: 0 in the warm-up (which only fills the
        optimizer's state), 10^(-i/7) in stage i."""
        if step < self.warmup_end:
            return 0.0
        return 10 ** (-sum(start <= step for start in self.stage_starts) / 7)
