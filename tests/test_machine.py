"""What a job takes of the machine: its CPU threads on a shared machine, and the signals of a
command whose jobs train in joblib's worker processes."""
import pytest
import torch

from vae_repro import machine, workers
from vae_repro.machine import ThreadCount


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    most = torch.get_num_threads()
    clock = Clock()
    monkeypatch.setattr(machine.time, "perf_counter", clock)
    yield clock
    torch.set_num_threads(most)


def test_a_job_moves_to_one_thread_when_it_steps_faster_and_tries_back_now_and_then(clock):
    threads = ThreadCount(2, choose=True)
    assert threads.steps(100) == ThreadCount.TRIAL_STEPS  # how fast two threads step is not known yet
    threads.timed(5, 5 * 0.010)
    assert threads.steps(100) == 1 and torch.get_num_threads() == 1  # a trial of one thread, step by step
    for _ in range(ThreadCount.TRIAL_STEPS):
        threads.timed(1, 0.004)  # as beside busy processes: one thread steps faster
    assert threads.current == 1 and torch.get_num_threads() == 1
    assert threads.steps(1000) == int(ThreadCount.BLOCK_S / 0.004)  # half a second of steps between looks
    clock.now += ThreadCount.FIRST_BETWEEN_TRIALS_S
    assert threads.steps(100) == 1 and torch.get_num_threads() == 2  # two threads again, on trial
    threads.timed(1, 0.5)  # one step slower than the whole trial may take: given up at once
    assert threads.current == 1 and torch.get_num_threads() == 1
    clock.now += ThreadCount.FIRST_BETWEEN_TRIALS_S
    assert threads.steps(100) > 1  # a lost trial doubles the wait for the next


def test_a_job_on_two_free_cores_keeps_both():
    threads = ThreadCount(2, choose=True)
    threads.timed(threads.steps(100), 5 * 0.004)
    assert threads.steps(100) == 1  # the first trial comes at once
    for _ in range(10):
        threads.timed(1, 0.007)
        if threads.trying is None:
            break
    assert threads.current == 2 and torch.get_num_threads() == 2


def test_a_count_given_in_the_config_is_kept():
    threads = ThreadCount(1, choose=True)
    assert threads.steps(100) == 100 and threads.counts == (1,)
    threads = ThreadCount(2, choose=False)
    threads.timed(100, 100.0)
    assert threads.steps(100) == 100 and threads.current == 2


def test_a_job_learns_of_its_commands_stop_from_the_stop_file(tmp_path, monkeypatch):
    stop_file = tmp_path / "stop"
    monkeypatch.delenv(workers.STOP_FILE, raising=False)
    assert not workers.in_worker() and not workers.command_stopped()
    monkeypatch.setenv(workers.STOP_FILE, f"1:{stop_file}")  # a command of another pid
    assert workers.in_worker() and not workers.command_stopped()
    stop_file.touch()
    assert workers.command_stopped()
