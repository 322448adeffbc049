"""One writer per run dir: a job holds an exclusive lock on a file in its dir while it trains.

The lock is `flock` on `<dir>/.lock`, which the kernel drops when the holder's process ends,
however it ends (SIGKILL, out of memory, a SLURM requeue), so the same command run again
takes it and resumes. The file also names the holder's pid, for the message of a second
command that finds the dir taken.
"""
import fcntl
import os
from pathlib import Path

LOCK_FILE = ".lock"


class RunDirBusy(RuntimeError):
    """Another live process trains in this run dir."""


def busy_message(run_dir: Path, pid: str) -> str:
    return (f"{run_dir}: a job (pid {pid or 'unknown'}) is training in this dir right now; "
            "wait for it to end, stop it, or choose another output dir")


def holder(run_dir: Path) -> str | None:
    """The pid (as written in the lock file) of the live process that holds `run_dir`, or None
    if no process does. Creates nothing."""
    path = Path(run_dir) / LOCK_FILE
    try:
        file = open(path)
    except FileNotFoundError:
        return None
    with file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return file.read().strip()
        fcntl.flock(file, fcntl.LOCK_UN)
        return None


class RunDirLock:
    """`with RunDirLock(dir):` holds `dir` for this process, or raises RunDirBusy naming the holder."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)

    def __enter__(self):
        self.file = open(self.run_dir / LOCK_FILE, "a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            pid = self.file.read().strip()
            self.file.close()
            raise RunDirBusy(busy_message(self.run_dir, pid)) from None
        self.file.truncate(0)
        self.file.write(f"{os.getpid()}\n")
        self.file.flush()
        return self

    def __exit__(self, *exc):
        self.file.close()  # releases the lock
