"""The console while a job trains: log lines above the progress bar, not through it."""
import logging
from contextlib import contextmanager

from tqdm import tqdm


class BarSafeStream:
    """A console stream whose lines tqdm writes above its bar, instead of through it."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        if text.strip():
            tqdm.write(text.rstrip("\n"), file=self.stream)

    def flush(self) -> None:
        self.stream.flush()


@contextmanager
def logs_above_the_bar():
    """Log lines on the console above the progress bar. tqdm's logging_redirect_tqdm does this too,
    but its handler drops the console handler's level, so DEBUG records reached the console."""
    consoles = [h for h in logging.getLogger().handlers if type(h) is logging.StreamHandler]
    streams = [h.setStream(BarSafeStream(h.stream)) for h in consoles]
    try:
        yield
    finally:
        for handler, stream in zip(consoles, streams):
            handler.setStream(stream)
