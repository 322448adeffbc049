"""The user's own command line, options and overrides in any order: split for Hydra, checked, run,
and the resume line as typed."""
import json
import subprocess
import sys

import pytest
from helpers import QUICK, REPO, run_cli
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from vae_repro import run as run_module
from vae_repro.command_line import split_command_line

PLOT = [sys.executable, str(REPO / "scripts" / "plot_fig2.py")]


@pytest.mark.parametrize("words, options, overrides", [
    (["latent_dim=2,5", "-m"], ["-m"], ["latent_dim=2,5"]),
    (["-m", "latent_dim=2,5"], ["-m"], ["latent_dim=2,5"]),
    (["a=1", "-m", "b=2"], ["-m"], ["a=1", "b=2"]),
    (["a=1", "--cfg", "job", "b=2", "--multirun"], ["--cfg", "job", "--multirun"], ["a=1", "b=2"]),
    (["--cfg=job", "a=1", "-m"], ["--cfg=job", "-m"], ["a=1"]),
    (["a=1", "-cn", "other", "+b=2", "~c"], ["-cn", "other"], ["a=1", "+b=2", "~c"]),
    (["--info", "a=1"], ["--info"], ["a=1"]),  # --info's value is optional, and a=1 is none of its choices
    (["--info", "plugins", "a=1"], ["--info", "plugins"], ["a=1"]),
    (["a=1", "--help"], ["--help"], ["a=1"]),
])
def test_options_and_overrides_are_told_apart_in_any_order(words, options, overrides):
    line = split_command_line(words)
    assert (line.options, line.overrides) == (options, overrides)
    assert line.for_hydra() == [*overrides, *options]  # Hydra reads its overrides as one run
    assert line.words == words


@pytest.mark.parametrize("words", [
    ["latent_dim=2,5,10,20", "-m", "--cfg", "job"],  # the user's own line
    ["-m", "latent_dim=2,5,10,20", "--cfg", "job"],
    ["--cfg", "job", "latent_dim=2,5,10,20", "--multirun"],
    ["latent_dim=2,5", "--cfg=job", "-m", "latent_dim=2,5,10,20"],  # the last value of a key wins, as in Hydra
])
def test_the_users_line_shows_each_jobs_config_and_runs_nothing(words, tmp_path, main_cli):
    status, out, err = main_cli(words, tmp_path)
    assert status == 0, err
    configs = [OmegaConf.create(job.split("\n", 1)[1].split("# 4 jobs")[0]) for job in out.split("# job ")[1:]]
    assert [c.latent_dim for c in configs] == [2, 5, 10, 20]
    assert out.strip().endswith("# 4 jobs; nothing was run") and list(tmp_path.iterdir()) == []


def test_a_bad_value_on_the_users_line_is_one_line(tmp_path, main_cli):
    status, _, err = main_cli(["latent_dim=2,x", "-m"], tmp_path)
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("error: latent_dim: ") and "'x'" in err


def test_the_resume_line_keeps_the_users_order_and_pins_the_sweeps_dir(data_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    typed = ["latent_dim=2,3", "-m", f"data.root={data_root}", *QUICK]
    command = run_module.precheck(split_command_line(typed))
    assert command.args[:-1] == typed and command.args[-1].startswith("hydra.sweep.dir=outputs/multirun/")
    assert split_command_line(command.args).for_hydra()[-1] == "-m"
    assert command.job_dirs == [command.out_dir / "0", command.out_dir / "1"]
    assert list(tmp_path.iterdir()) == []  # checked, nothing made


LAUNCHERS = [pytest.param([], id="basic"),
             pytest.param(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], id="joblib", marks=pytest.mark.slow),
             pytest.param(["hydra/launcher=stack"], id="stack", marks=pytest.mark.slow)]


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_a_sweep_with_m_last_trains_every_job_and_plots(launcher, data_root, tmp_path):
    """`-m` last, overrides on both sides of it and the launcher after: the line as a user types it."""
    result = run_cli(["latent_dim=2,3", "-m", f"data.root={data_root}", *QUICK, *launcher], tmp_path)
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("2 of 2 jobs completed; outputs in ")
    sweep = tmp_path / last.split(" outputs in ")[1].removeprefix(f"{tmp_path}/")
    assert sweep.parent.parent == tmp_path / "outputs" / "multirun"  # the default, timestamped dir
    for num, latent_dim in ((0, 2), (1, 3)):
        assert OmegaConf.load(sweep / str(num) / ".hydra" / "config.yaml").latent_dim == latent_dim
    plotted = subprocess.run([*PLOT, str(sweep), "--out", str(tmp_path / "fig2.png")], capture_output=True, text=True)
    assert plotted.returncode == 0, plotted.stderr
    assert (tmp_path / "fig2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_sweep_expands_as_hydras_basic_sweeper_does():
    overrides = OverridesParser.create().parse_overrides(["latent_dim=range(2,4)", "seed=choice(1,2)", "device=cpu"])
    assert run_module.expand_sweep(overrides) == [
        ["latent_dim=2", "seed=1", "device=cpu"], ["latent_dim=2", "seed=2", "device=cpu"],
        ["latent_dim=3", "seed=1", "device=cpu"], ["latent_dim=3", "seed=2", "device=cpu"]]


def test_an_interval_is_refused_by_the_basic_sweeper_in_one_line(tmp_path, main_cli):
    status, _, err = main_cli(["optimizer.lr=interval(0.01,0.1)", "-m"], tmp_path)
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("error: optimizer.lr=interval(0.01,0.1): ") and "interval" in err


@pytest.mark.parametrize("words", [["latent_dim=2,5", "-m", "--help"], ["--help", "latent_dim=2,5"], ["foo=1", "-h"]])
def test_help_is_shown_whatever_the_overrides_beside_it(words, tmp_path, main_cli):
    """Hydra composes the overrides before it shows its help: a sweep's values or a misspelt key ended it
    in a traceback. In this process, and the first as typed."""
    status, out, err = main_cli(words, tmp_path)
    assert status == 0 and err == "" and out.startswith("python -m vae_repro.run [KEY=VALUE ...] [-m]")
    if words[0] == "latent_dim=2,5":
        result = run_cli(words, tmp_path)
        assert result.returncode == 0 and result.stderr == "" and result.stdout == out


def test_the_last_line_counts_the_flagged_jobs(tmp_path, capsys):
    for num, warning in ((0, "the ELBO (-6.9e+06 at 10000 samples) is far below ..."), (1, None)):
        (tmp_path / str(num)).mkdir()
        summary = {"status": "completed", "message": "", **({"warning": warning} if warning else {})}
        (tmp_path / str(num) / "summary.json").write_text(json.dumps(summary))
    command = run_module.Command([], True, tmp_path, [tmp_path / "0", tmp_path / "1"], 1, "BasicLauncher", True)
    assert run_module.report(command) == 0
    out, err = capsys.readouterr()
    assert out.strip().splitlines()[-1] == f"2 of 2 jobs completed, 1 flagged; outputs in {tmp_path}"
    assert err == f"{tmp_path / '0'}: warning: the ELBO (-6.9e+06 at 10000 samples) is far below ...\n"
