"""What a job asks of the machine it runs on: the device, a C++ compiler where train.compile
needs one, malloc's policy for the memory a step frees, and its CPU threads."""
import ctypes
import time

import torch

from vae_repro.config import Config, ConfigError

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda: CUDA is not available on this machine; use device=cpu or device=auto")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def check_compile(cfg: Config, device: torch.device) -> None:
    """train.compile on a CPU needs the C++ compiler that torch.compile builds its kernels with; on
    CUDA, the compiled passes cannot be captured in the step's CUDA graph (the capture fails)."""
    if cfg.train.compile and cfg.train.cuda_graph and device.type == "cuda":
        raise ConfigError("train.compile=true: the compiled passes cannot be captured in the CUDA graph that "
                          "replays each step (train.cuda_graph=true); choose one: add train.cuda_graph=false to "
                          "compile, or leave train.compile=false")
    if cfg.train.compile and device.type == "cpu":
        from torch._inductor.cpp_builder import get_cpp_compiler  # here: importing it takes a while
        try:
            get_cpp_compiler()  # torch.compile's own search: $CXX, then g++
        except Exception as e:
            raise ConfigError(f"train.compile=true: torch.compile needs a C++ compiler on a CPU and found none "
                              f"({' '.join(str(e).split())[:120]}); install one (e.g. g++) or leave "
                              "train.compile=false") from None


def keep_freed_memory() -> None:
    """Have glibc's malloc keep freed memory for reuse rather than give it back to the system. A
    step allocates and frees a few MB of temporaries, an evaluation tens of MB; by default glibc
    returns them and takes them again, a page fault per 4 KB each time: about a sixth of a step's
    time and nearly half of an evaluation's at the paper's sizes. The process then holds its peak."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # another C library (macOS, musl) keeps its own policy
        return
    libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)  # never trim the heap below 1 GB of free memory
    libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)  # serve blocks up to 32 MB from the heap, not fresh mappings


class ThreadCount:
    """The CPU threads of a job's steps where the config leaves them open (threads=0): all it may
    use, or one while other busy processes share the cores. PyTorch's threads wait for each other
    spinning, so beside two busy processes a step on two threads of two cores ran 40 times slower
    than alone, while one thread kept about half its speed. The loop times its blocks of steps and
    now and then tries the other count, step by step, keeping it if it steps faster and giving up
    as soon as it cannot. Results do not depend on the count (MKL_CBWR, see __init__.py)."""

    BLOCK_S = 0.5  # the steps between two looks at the clock, in seconds
    TRIAL_S, TRIAL_STEPS = 0.05, 5  # a trial of the other count: this long, and at least this many steps
    FIRST_BETWEEN_TRIALS_S, MOST_BETWEEN_TRIALS_S = 5.0, 300.0  # doubling from the one to the other while trials lose
    MARGIN = 0.1  # the other count takes over when it steps this much faster

    def __init__(self, most: int, choose: bool):
        self.counts = (most, 1) if choose and most > 1 else (most,)
        self.current, self.trying = most, None
        self.step_s: float | None = None  # the latest seconds per step of the current count
        self.between_trials_s, self.next_trial = self.FIRST_BETWEEN_TRIALS_S, 0.0
        self.trial_steps = self.trial_target = 0
        self.trial_s = 0.0

    def steps(self, wanted: int) -> int:
        """How many of the `wanted` steps to run before the next `timed`, on the count this sets."""
        if len(self.counts) == 1:
            return wanted
        if self.step_s is None:
            return min(wanted, self.TRIAL_STEPS)
        if self.trying is None and time.perf_counter() >= self.next_trial:
            self.trying = self.counts[self.counts.index(self.current) - 1]
            self.trial_steps, self.trial_s = 0, 0.0
            self.trial_target = max(self.TRIAL_STEPS, int(self.TRIAL_S / self.step_s))
            torch.set_num_threads(self.trying)
        return 1 if self.trying is not None else min(wanted, max(1, int(self.BLOCK_S / self.step_s)))

    def timed(self, steps: int, seconds: float) -> None:
        """The last `steps` took `seconds`; during a trial, keep the faster count once it is clear."""
        if len(self.counts) == 1 or steps == 0:
            return
        if self.trying is None:
            self.step_s = seconds / steps
            return
        self.trial_steps, self.trial_s = self.trial_steps + steps, self.trial_s + seconds
        par = (1 - self.MARGIN) * self.step_s  # the most a step of the trial may take to win
        if self.trial_s > par * self.trial_target:  # lost, however its other steps go
            self.between_trials_s = min(2 * self.between_trials_s, self.MOST_BETWEEN_TRIALS_S)
        elif self.trial_steps >= self.trial_target:  # won
            self.current, self.between_trials_s = self.trying, self.FIRST_BETWEEN_TRIALS_S
            self.step_s = self.trial_s / self.trial_steps
        else:
            return
        self.trying = None
        torch.set_num_threads(self.current)
        self.next_trial = time.perf_counter() + self.between_trials_s
