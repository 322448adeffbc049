"""A command's jobs in local worker processes: stopping joblib's on Ctrl-C or SIGTERM, each with a
checkpoint, and waiting for submitit's.

Ctrl-C reaches every process of the terminal's process group, joblib's idle workers too, which die
of it, and joblib then kills the other workers mid-checkpoint. So a job in a joblib worker ignores
SIGINT, and the command takes the first SIGINT or SIGTERM for all: it sends SIGTERM to each job
that trains (the pid in its dir's lock file), which checkpoints and returns "interrupted", and
leaves a stop file, so that a job starting afterwards returns at once. A second signal ends the
command without waiting.
"""
import os
import signal
import tempfile
import threading
import time
from pathlib import Path

from vae_repro.checkpoint import raise_terminated
from vae_repro.rundir import holder

STOP_FILE = "VAE_REPRO_STOP_FILE"  # "PID:PATH": the command's pid, and the file it makes once it stops its jobs


class StopWorkers:
    """`with StopWorkers(job_dirs) as stop:` around a joblib launch; `stop.signal` is the first signal
    that came, if any."""

    def __init__(self, job_dirs: list[Path]):
        self.job_dirs, self.signal, self.launched = job_dirs, None, True
        self.path = Path(tempfile.gettempdir()) / f"vae_repro-stop-{os.getpid()}"

    def __enter__(self):
        self.path.unlink(missing_ok=True)
        os.environ[STOP_FILE] = f"{os.getpid()}:{self.path}"
        self.previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, frame):
        if self.signal is not None:
            self._restore()
            raise KeyboardInterrupt
        self.signal = signum
        self.path.touch()
        threading.Thread(target=self._stop_jobs, daemon=True).start()

    def _stop_jobs(self) -> None:
        """SIGTERM to each job that trains, and to any that takes its dir later, until the launch ends."""
        stopped = set()
        while self.launched:
            for job_dir in self.job_dirs:
                pid = holder(job_dir)
                if pid and pid.isdigit() and (pid, job_dir) not in stopped and int(pid) != os.getpid():
                    stopped.add((pid, job_dir))
                    try:
                        os.kill(int(pid), signal.SIGTERM)
                    except ProcessLookupError:  # ended meanwhile
                        pass
            time.sleep(0.2)

    def _restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def __exit__(self, *exc):
        self.launched = False
        self._restore()
        self.path.unlink(missing_ok=True)
        del os.environ[STOP_FILE]


def in_worker() -> bool:
    """Whether this job runs in a joblib worker process of a command that stops them (StopWorkers)."""
    value = os.environ.get(STOP_FILE)
    return value is not None and value.split(":", 1)[0] != str(os.getpid())


def prepare_worker() -> None:
    """A job in a worker leaves Ctrl-C to its command, and takes SIGTERM as Terminated once it has
    checkpointed, to return "interrupted" to joblib rather than die."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, raise_terminated)


def command_stopped() -> bool:
    """Whether the command of this job has stopped its jobs already: then the job does not start."""
    value = os.environ.get(STOP_FILE)
    return value is not None and Path(value.split(":", 1)[1]).exists()


def child_processes() -> list[int]:
    """The pids of this process's children that have not ended; none where /proc is missing."""
    me, pids = str(os.getpid()), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, parent = stat.read_text().rsplit(")", 1)[1].split()[:2]  # after the command's name
        except (OSError, IndexError, ValueError):  # ended meanwhile
            continue
        if parent == me and state not in ("Z", "X"):
            pids.append(int(stat.parent.name))
    return pids


def wait_for_child_processes(poll_s: float = 0.5) -> None:
    """Submitit's local launcher stops waiting at the first job that raises; its other jobs train on."""
    while child_processes():
        time.sleep(poll_s)
