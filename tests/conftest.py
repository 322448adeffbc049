"""The fixtures several test files share; the helpers they are built on are in helpers.py."""
import logging
import sys
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig
from helpers import make_frey_root, make_mnist_root

from vae_repro import run as run_module


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    return make_mnist_root(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def frey_root(tmp_path_factory) -> Path:
    return make_frey_root(tmp_path_factory.mktemp("frey"))


@pytest.fixture
def main_cli(monkeypatch, capsys):
    """The command line run in this process: for commands that end before any job trains (bad settings,
    a dry run), where a subprocess would prove nothing more. Returns (exit status, stdout, stderr)."""
    root = logging.getLogger()  # Hydra's logging set-up for a job, undone after the test
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    # and its config of the run, which to_absolute_path reads the starting dir from
    monkeypatch.setattr(HydraConfig.instance(), "cfg", HydraConfig.instance().cfg)

    def run(args: list[str], cwd: Path) -> tuple[int, str, str]:
        monkeypatch.chdir(cwd)
        monkeypatch.setattr(sys, "argv", ["vae_repro.run", *args])
        status = 0
        try:
            run_module.main()
        except SystemExit as e:
            status = e.code
        out, err = capsys.readouterr()
        return status, out, err
    return run
