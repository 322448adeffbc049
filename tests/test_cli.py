"""The real command line in subprocesses: sweeps, the plot script, and every bad input."""
import dataclasses
import json
import re
import shlex
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
from helpers import QUICK, REPO, assert_one_line, default_ctrl_c, make_mnist_root, metrics_rows, run_cli
from omegaconf import OmegaConf

from vae_repro import jobs
from vae_repro import run as run_module
from vae_repro.checkpoint import load_checkpoint
from vae_repro.config import Config, ConfigError, TrainConfig
from vae_repro.machine import check_compile

PLOT = [sys.executable, str(REPO / "scripts" / "plot_fig2.py")]
sys.path.insert(0, str(REPO / "scripts"))
import plot_fig2  # noqa: E402


@pytest.fixture(scope="module")
def sweep_dir(data_root, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("sweep")
    result = run_cli(["-m", "algorithm=aevb,wake_sleep", "latent_dim=2,5", f"data.root={data_root}", *QUICK,
                      "hydra.sweep.dir=multirun"], cwd)
    assert result.returncode == 0, result.stderr
    return cwd / "multirun"


@pytest.mark.slow
def test_sweep_over_two_algorithms_and_two_latent_sizes_writes_four_curves(sweep_dir):
    jobs = sorted(p.parent for p in sweep_dir.rglob("metrics.csv"))
    assert len(jobs) == 4
    for job, (algorithm, latent_dim) in zip(jobs, [("aevb", 2), ("aevb", 5), ("wake_sleep", 2), ("wake_sleep", 5)]):
        rows = metrics_rows(job)
        assert {"samples", "train_elbo", "test_elbo", "wall_s", "train_kl", "test_log_px"} <= set(rows[0])
        samples = [int(r["samples"]) for r in rows]
        assert len(samples) >= 3 and samples == sorted(set(samples)) and samples[-1] == 3000
        config = (job / ".hydra" / "config.yaml").read_text()
        assert f"latent_dim: {latent_dim}" in config and f"name: {algorithm}" in config
        summary = json.loads((job / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["latent_dim"] == latent_dim
        assert summary["algorithm"] == algorithm
        assert summary["samples_per_s"] > 0 and summary["device"] == "cpu"
        assert (job / "model.pt").exists()


@pytest.mark.slow
def test_plot_script_draws_both_algorithms_in_each_panel(sweep_dir, tmp_path):
    fig = plot_fig2.plot(plot_fig2.read_runs([sweep_dir]))
    assert [ax.get_title() for ax in fig.axes] == ["MNIST, $N_z$ = 2", "MNIST, $N_z$ = 5"]
    assert all(ax.get_xscale() == "log" for ax in fig.axes)
    for ax in fig.axes:
        assert [line.get_label() for line in ax.get_lines()] == ["AEVB (train)", "AEVB (test)", "WS (train)", "WS (test)"]
        assert [line.get_linestyle() for line in ax.get_lines()] == ["-", "--", "-", "--"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["AEVB (train)", "AEVB (test)", "WS (train)", "WS (test)"]
    assert_legend_covers_no_panel(fig)
    low, high = fig.axes[0].get_ylim()
    assert low <= -150 and high >= -95

    out = tmp_path / "fig2.png"
    result = subprocess.run([*PLOT, str(sweep_dir), "--out", str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def assert_legend_covers_no_panel(fig):
    fig.canvas.draw()
    legend = fig.legends[0].get_window_extent()
    assert not any(legend.overlaps(ax.get_window_extent()) for ax in fig.axes)


def copy_job(src, dst, config_edits=None, elbo_shift=0.0):
    """A copy of a finished job, its config edited and its ELBO columns shifted."""
    (dst / ".hydra").mkdir(parents=True)
    config = OmegaConf.load(src / ".hydra" / "config.yaml")
    for key, value in (config_edits or {}).items():
        OmegaConf.update(config, key, value)
    OmegaConf.save(config, dst / ".hydra" / "config.yaml")
    frame = pd.DataFrame(metrics_rows(src)).apply(pd.to_numeric)
    frame[["train_elbo", "test_elbo"]] += elbo_shift
    frame.to_csv(dst / "metrics.csv", index=False)


@pytest.mark.slow
def test_plot_gives_each_dataset_a_row_with_its_own_range(sweep_dir, tmp_path):
    copy_job(sweep_dir / "0", tmp_path / "fashion", {"data.name": "fashion_mnist"}, elbo_shift=10_000.0)
    copy_job(sweep_dir / "2", tmp_path / "seed1", {"seed": 1}, elbo_shift=1.0)  # a second wake-sleep seed
    fig = plot_fig2.plot(plot_fig2.read_runs([sweep_dir, tmp_path]))
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["MNIST, $N_z$ = 2", "MNIST, $N_z$ = 5", "Fashion-MNIST, $N_z$ = 2"]
    mnist, fashion = fig.axes[0].get_ylim(), fig.axes[2].get_ylim()
    assert fig.axes[1].get_ylim() == mnist and mnist[0] <= -150 and mnist[1] >= -95
    assert fashion[0] > mnist[1]  # its own range, far above MNIST's
    assert [line.get_label() for line in fig.axes[2].get_lines()] == ["AEVB (train)", "AEVB (test)"]
    assert len(fig.axes[0].collections) == 2  # min-max bands of the two wake-sleep seeds, train and test


@pytest.mark.slow
def test_plot_keeps_runs_of_other_settings_apart_and_seeds_together(sweep_dir, tmp_path):
    copy_job(sweep_dir / "0", tmp_path / "gaussian", {"model.likelihood": "gaussian"}, elbo_shift=800.0)
    copy_job(sweep_dir / "0", tmp_path / "seed1", {"seed": 1, "data.root": "/elsewhere"}, elbo_shift=1.0)
    fig = plot_fig2.plot(plot_fig2.read_runs([sweep_dir, tmp_path]))
    assert [ax.get_title() for ax in fig.axes] == [
        "MNIST, $N_z$ = 2\nmodel.likelihood=bernoulli", "MNIST, $N_z$ = 5\nmodel.likelihood=bernoulli",
        "MNIST, $N_z$ = 2\nmodel.likelihood=gaussian"]
    assert len(fig.axes[0].collections) == 2  # the two AEVB seeds: one mean with a band, train and test
    assert len(fig.axes[2].collections) == 0 and fig.axes[2].get_ylim()[0] > fig.axes[0].get_ylim()[1]


@pytest.mark.slow
def test_plot_leaves_out_a_wild_first_point_and_says_so(sweep_dir, tmp_path):
    job = tmp_path / "job"
    copy_job(sweep_dir / "0", job)
    frame = pd.DataFrame(metrics_rows(job)).apply(pd.to_numeric)
    frame.loc[0, "train_elbo"] = -9_555_020.0  # the first evaluation of a Gaussian decoder on flat pixels
    frame.to_csv(job / "metrics.csv", index=False)
    fig = plot_fig2.plot(plot_fig2.read_runs([job]))
    low, high = fig.axes[0].get_ylim()
    assert -1000 < low <= -150 and high >= -95
    (note,) = [t.get_text() for t in fig.axes[0].texts]
    assert re.fullmatch(r"\d+ point\(s\) outside, e\.g\. -9\.555e\+06", note)


@pytest.mark.slow
def test_plot_ignores_a_half_written_last_row(sweep_dir, tmp_path):
    job = tmp_path / "job"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text((sweep_dir / "0" / ".hydra" / "config.yaml").read_text())
    text = (sweep_dir / "0" / "metrics.csv").read_text()
    (job / "metrics.csv").write_text(text + "3100,-180.5,-17")  # a row cut off mid-write
    result = subprocess.run([*PLOT, str(job), "--out", str(tmp_path / "f.png")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert len(plot_fig2.read_runs([job])) == len(metrics_rows(sweep_dir / "0"))


@pytest.mark.slow
def test_plot_errors(sweep_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = subprocess.run([*PLOT, str(empty)], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {empty}: no metrics.csv below this dir"

    job = tmp_path / "job"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text("latent_dim: 3\ndata:\n  name: mnist\n")
    (job / "metrics.csv").write_text("samples,train_elbo\n100,-200.0\n")
    result = subprocess.run([*PLOT, str(job)], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {job / 'metrics.csv'}: missing column(s) test_elbo"

    (job / "metrics.csv").write_text("samples,train_elbo,test_elbo\n")  # started, not yet evaluated
    result = subprocess.run([*PLOT, str(job)], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: no evaluated rows yet in the metrics.csv files below {job}"


def corrupt_root(tmp_path, how):
    root = make_mnist_root(tmp_path / "corrupt")
    path = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    data = bytearray(path.read_bytes())
    if how == "magic":
        data[2:4] = b"\x09\x09"
    else:
        data = data[:-1000]
    path.write_bytes(bytes(data))
    return root


# Each bad input and the facts its one line must name.
BAD_INPUTS = [
    (["latent_dim=0"], ("latent_dim=0", ">= 1")),
    (["latent_dim=-3"], ("latent_dim=-3", ">= 1")),
    (["latent_dim=abc"], ("latent_dim", "'abc'", "Integer")),
    (["latnt_dim=3"], ("latnt_dim", "did you mean latent_dim?", "--help")),
    (["optimizer.lrr=0.1"], ("optimizer.lrr", "did you mean optimizer.lr?")),
    (["+model.num_layers=2"], ("model.num_layers", "no such key", "--help")),  # added, but nothing reads it
    (["+model.hiden_size=200", "-m"], ("model.hiden_size", "did you mean model.hidden_size?")),
    (["latent_dim=2,x", "-m"], ("latent_dim", "'x'", "Integer")),
    (["trian.max_samples=1e4"], ("trian", "no such key", "did you mean train?")),
    (["eval.iwae_k=5"], ("eval.iwae_k", "expected a list in brackets", "eval.iwae_k=[...]")),
    (["latent_dim=2,5"], ("latent_dim=2,5", "add -m")),  # a sweep's values without -m
    (["--cfg", "job", "latent_dim=2,5"], ("latent_dim=2,5", "add -m")),  # with Hydra's options as without
    (["foo=1", "--cfg", "job"], ("foo", "no such key")),
    (["-m", "latent_dim=2,x", "--cfg", "job"], ("latent_dim", "'x'")),  # before any job's config is shown
    (["latent_dim=3,0", "-m", "seed=1"], ("latent_dim=0", ">= 1")),
    (["optimizer.lr=0"], ("optimizer.lr=0.0", "> 0")),
    (["optimizer.lr=-0.01"], ("optimizer.lr=-0.01", "> 0")),
    (["train.batch_size=0"], ("train.batch_size=0", ">= 1")),
    (["data=svhn"], ("data/svhn", "array fashion_mnist folder frey_face mnist")),
    (["algorithm=em"], ("algorithm/em", "aevb beta_vae iwae mcem wake_sleep")),
    (["algorithm.name=ws"], ("algorithm.name", "'ws'", "aevb, wake_sleep, mcem, iwae")),
    (["algorithm=mcem", "eval.marginal=is"], ("eval.marginal=is", "encoder")),
    (["eval.iwae_k=[5,0]"], ("eval.iwae_k=0", ">= 1")),
    (["algorithm=mcem", "eval.iwae_k=[5]"], ("eval.iwae_k", "encoder")),
    (["eval.marginal=exact"], ("eval.marginal", "'exact'", "none, hmc, is")),
    (["eval.marginal=hmc", "eval.marginal_samples=3"], ("eval.marginal_samples=3", "at least 4")),
    (["data.train_size=0"], ("data.train_size=0", ">= 1")),
    (["-m", "data.train_size=100,5000"], ("data.train_size=5000", "300 training images")),
    (["optimizer.warmup_steps=-1"], ("optimizer.warmup_steps=-1", ">= 0")),
    (["threads=-2"], ("threads=-2", ">= 0")),
    (["data.name=svhn"], ("data.name", "'svhn'", "mnist, fashion_mnist, frey_face")),
    (["-m", "latent_dim=3,0"], ("latent_dim=0", ">= 1")),
    (["-m", "sweep=fig2", "optimizer.lr=0"], ("optimizer.lr=0.0", "> 0")),
    (["hydra.run.dir=a_file"], ("hydra.run.dir", "a_file", "is a file")),
    (["hydra.run.dir=a_file/run"], ("hydra.run.dir", "a_file/run", "is a file")),
    (["-m", "latent_dim=2,3", "hydra.sweep.dir=a_file"], ("hydra.sweep.dir", "a_file/0", "is a file")),
    (["hydra.run.dir=/proc/run"], ("hydra.run.dir", "/proc/run", "cannot make")),
    (["-m", "latent_dim=2,3", "--cfg", "hydra"], ("--cfg hydra", "-m", "--cfg job")),
    (["model.hidden_sizes=[]"], ("model.hidden_sizes=[]", ">= 1", "[200,200]")),
    (["model.hidden_sizes=[200,0]"], ("model.hidden_sizes=[200, 0]", ">= 1")),
    (["model.hidden_sizes=[200,-5]"], ("model.hidden_sizes=[200, -5]", ">= 1")),
    (["model.hidden_sizes=[200,abc]"], ("model.hidden_sizes", "'abc'", "Integer")),
    (["model.hidden_sizes=[200,2.5]"], ("model.hidden_sizes", "'2.5'", "Integer")),
    (["model.hidden_sizes=200"], ("model.hidden_sizes", "expected a list in brackets", "model.hidden_sizes=[...]")),
    (["optimizer=sgd"], ("optimizer/sgd", "adagrad adam")),
    (["optimizer.name=sgd"], ("optimizer.name", "'sgd'", "adagrad, adam")),
    (["optimizer=adam", "optimizer.betas=[0.9,1.0]"], ("optimizer.betas=[0.9, 1.0]", "[0, 1)")),
    (["optimizer=adam", "optimizer.betas=[-0.1,0.9]"], ("optimizer.betas=[-0.1, 0.9]", "[0, 1)")),
    (["optimizer=adam", "optimizer.betas=[0.9]"], ("optimizer.betas=[0.9]", "two numbers")),
    (["optimizer=adam", "optimizer.eps=0"], ("optimizer.eps=0.0", "> 0")),
    (["algorithm=beta_vae", "algorithm.beta=-1"], ("algorithm.beta=-1.0", ">= 0")),
    (["algorithm=beta_vae", "train.gradients=handwritten"], ("train.gradients=handwritten", "beta_vae",
                                                              "train.gradients=autograd")),
    (["train.gradients=magic"], ("train.gradients", "'magic'", "auto, handwritten, autograd")),
    (["algorithm.beta=2"], ("algorithm.beta=2.0", "algorithm=beta_vae only", "algorithm=aevb")),
    (["optimizer.betas=[0.8,0.9]"], ("optimizer.betas=[0.8, 0.9]", "optimizer=adam only", "optimizer=adagrad")),
    (["sweep=iwae_paper"], ("sweep=iwae_paper", "a sweep of several jobs", "algorithm.k", "add -m")),
    (["sweep=fig3"], ("sweep=fig3", "a sweep of several jobs", "add -m")),
]


@pytest.mark.parametrize("args,facts", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_config_gives_one_line_and_status_2(args, facts, data_root, tmp_path, main_cli):
    (tmp_path / "a_file").write_text("not a dir\n")
    status, out, err = main_cli([f"data.root={data_root}", *QUICK, *args], tmp_path)
    assert status == 2
    assert_one_line(err, *facts)
    assert [p.name for p in tmp_path.iterdir()] == ["a_file"]  # no output dir was created


def test_missing_data_root_without_download(tmp_path, main_cli):
    status, _, err = main_cli(["data.root=nowhere", "data.download=false", *QUICK], tmp_path)
    assert status == 2
    assert_one_line(err, f"data.root={tmp_path / 'nowhere'}", "data.download=true")
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_offline_without_data_names_the_root_and_the_fix(tmp_path):
    # A proxy that refuses every connection stands for a machine without network.
    offline = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}
    result = run_cli(["data.root=empty", *QUICK], tmp_path, **offline)
    assert result.returncode == 2
    assert_one_line(result.stderr, f"data.root={tmp_path / 'empty'}", "downloading it failed",
                    str(tmp_path / "empty" / "MNIST" / "raw"))
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("how,message", [("magic", "wrong IDX magic number 0x00000909, expected 0x00000803"),
                                         ("size", "but its header describes")])
def test_corrupt_idx_file(how, message, tmp_path, main_cli):
    root = corrupt_root(tmp_path, how)
    status, _, err = main_cli([f"data.root={root}", *QUICK], tmp_path)
    assert status == 2
    assert_one_line(err, "train-images-idx3-ubyte", message)
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("launcher", [pytest.param([], marks=pytest.mark.slow), ["hydra/launcher=stack"]])
def test_each_checkpoint_is_read_once_per_command(launcher, data_root, tmp_path, main_cli, monkeypatch):
    sweep = ["latent_dim=2,3", f"data.root={data_root}", *QUICK, "hydra.sweep.dir=sweep", *launcher, "-m"]
    assert main_cli([*sweep, "train.max_samples=500"], tmp_path)[0] == 0
    reads = []
    monkeypatch.setattr(jobs, "load_checkpoint", lambda path, settings: reads.append(path) or load_checkpoint(
        path, settings))
    status, out, _ = main_cli([*sweep, "train.max_samples=1000"], tmp_path)  # each job resumed from its checkpoint
    assert status == 0 and out.strip().splitlines()[-1].startswith("2 of 2 jobs completed")
    assert sorted(reads) == [tmp_path / "sweep" / str(num) / "checkpoint.pt" for num in range(2)]


@pytest.mark.slow
def test_a_checkpoint_damaged_after_the_check_fails_its_job_alone(data_root, tmp_path, main_cli, monkeypatch):
    sweep = ["latent_dim=2,3", f"data.root={data_root}", *QUICK, "hydra.sweep.dir=sweep", "-m"]
    assert main_cli([*sweep, "train.max_samples=500"], tmp_path)[0] == 0
    checked = run_module.precheck

    def damage_after_the_check(line):
        command = checked(line)
        (tmp_path / "sweep" / "1" / "checkpoint.pt").write_bytes(b"not a checkpoint")
        return command
    monkeypatch.setattr(run_module, "precheck", damage_after_the_check)
    status, out, _ = main_cli([*sweep, "train.max_samples=1000"], tmp_path)
    assert status == 1 and "1 of 2 jobs completed" in out.strip().splitlines()[-1]
    summary = json.loads((tmp_path / "sweep" / "1" / "summary.json").read_text())
    assert summary["status"] == "failed" and "checkpoint.pt" in summary["message"] and "damaged" in summary["message"]


def test_a_dry_run_of_a_sweep_shows_each_jobs_config(data_root, tmp_path, main_cli):
    status, out, err = main_cli(["-m", "latent_dim=2,3", "optimizer.lr=0.01,0.02", f"data.root={data_root}", *QUICK,
                                 "--cfg", "job"], tmp_path)
    assert status == 0, err
    jobs = out.split("# job ")[1:]
    assert len(jobs) == 4 and out.strip().endswith("# 4 jobs; nothing was run")
    configs = [OmegaConf.create(job.split("\n", 1)[1].split("# 4 jobs")[0]) for job in jobs]
    assert [(c.latent_dim, c.optimizer.lr) for c in configs] == [(2, 0.01), (2, 0.02), (3, 0.01), (3, 0.02)]
    assert all(c.train.max_samples == 3000 for c in configs)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_compile_without_a_compiler_is_one_line(data_root, tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    result = run_cli([f"data.root={data_root}", *QUICK, "train.compile=true"], tmp_path, PATH=str(empty), CXX="")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: train.compile=true: torch.compile needs a C++ compiler on a CPU and found none")
    assert not (tmp_path / "outputs").exists()


def test_compile_with_the_cuda_graph_is_refused_on_cuda_alone():
    """On an H100 the capture of compiled passes failed (cudaErrorStreamCaptureInvalidated)."""
    cfg = Config(train=TrainConfig(compile=True))
    with pytest.raises(ConfigError, match=r"^train.compile=true: the compiled passes cannot be captured in the CUDA "
                                          r"graph that replays each step \(train.cuda_graph=true\); choose one: add "
                                          r"train.cuda_graph=false to compile, or leave train.compile=false$"):
        check_compile(cfg, torch.device("cuda"))  # only reads the device's type
    cfg.train.cuda_graph = False
    check_compile(cfg, torch.device("cuda"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_cuda(data_root, tmp_path, main_cli):
    status, _, err = main_cli([f"data.root={data_root}", *QUICK, "device=cuda"], tmp_path)
    assert status == 2
    assert_one_line(err, "device=cuda", "device=cpu")


@pytest.mark.slow
def test_help_explains_every_top_level_key_with_examples(tmp_path):
    result = run_cli(["--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    for field in dataclasses.fields(Config):
        assert re.search(rf"^{field.name}[=.]", result.stdout, re.M), field.name
    for group in ("sweep", "experiment", "logger"):
        assert re.search(rf"^{group}=", result.stdout, re.M)
    assert "algorithm: aevb, beta_vae, iwae, mcem, wake_sleep" in result.stdout  # the config groups, from conf/
    examples = result.stdout.split("== Examples ==")[1].strip().splitlines()
    assert len([line for line in examples if line.startswith("python -m vae_repro.run ")]) == 7
    assert "optimizer.lr=0.1" not in result.stdout.split("== Examples ==")[1]  # it wrecks an MNIST model
    assert "hydra.launcher.n_jobs" in result.stdout and "hydra/launcher=joblib" in result.stdout


def test_a_run_ends_by_saying_where_its_output_is(data_root, tmp_path):
    result = run_cli([f"data.root={data_root}", *QUICK], tmp_path)
    assert result.returncode == 0, result.stderr
    run_dir = next((tmp_path / "outputs" / "runs").glob("*/*"))
    assert result.stdout.strip().splitlines()[-1] == f"run completed; outputs in {run_dir}"


@pytest.mark.slow
@pytest.mark.parametrize("sig, returncode", [(signal.SIGINT, 130), (signal.SIGTERM, -signal.SIGTERM)],
                         ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_run_prints_the_command_that_resumes_it(sig, returncode, data_root, tmp_path):
    """Ctrl-C, or a plain `kill`: the run checkpoints, says how to resume, and ends by the signal (SIGTERM's
    own exit status, for whoever waits on it)."""
    args = [f"data.root={data_root}", "train.max_samples=1e5", "train.checkpoint_every=1e4", "train.progress=false",
            "device=cpu"]
    # As from a terminal, even where the tests run in the background (which ignores Ctrl-C in its children).
    process = subprocess.Popen([sys.executable, "-m", "vae_repro.run", *args], cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               preexec_fn=default_ctrl_c)
    deadline = time.time() + 120
    while not list(tmp_path.glob("outputs/runs/*/*/checkpoint.pt")):
        assert process.poll() is None and time.time() < deadline
        time.sleep(0.05)
    process.send_signal(sig)
    out, err = process.communicate(timeout=60)
    assert process.returncode == returncode, (out[-2000:], err[-4000:])
    run_dir = next(tmp_path.glob("outputs/runs/*/*"))
    relative = run_dir.relative_to(tmp_path)
    assert out.strip().splitlines()[-2:] == [
        f"run not completed; outputs so far in {run_dir}",
        f"to resume: python -m vae_repro.run {' '.join(args)} hydra.run.dir={relative}"]
    assert err.strip().splitlines()[-1].startswith(f"{run_dir}: interrupted: stopped by {sig.name} at ")

    resume = shlex.split(out.strip().splitlines()[-1].removeprefix("to resume: "))
    result = subprocess.run([sys.executable, *resume[1:]], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == f"run completed; outputs in {run_dir}"
    assert json.loads((run_dir / "summary.json").read_text())["samples"] == 100_000


@pytest.mark.slow
def test_diverging_job_fails_alone_and_is_listed(data_root, tmp_path):
    result = run_cli(["-m", "optimizer.lr=100,0.02", f"data.root={data_root}", *QUICK, "hydra.sweep.dir=sweep"],
                     tmp_path)
    assert result.returncode == 1
    assert "diverged: the weights became NaN or infinite by step" in result.stderr and "optimizer.lr=100.0" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"{tmp_path / 'sweep' / '0'}: diverged: the weights became NaN")
    assert result.stdout.strip().splitlines()[-1] == f"1 of 2 jobs completed; outputs in {tmp_path / 'sweep'}"
    assert json.loads((tmp_path / "sweep" / "0" / "summary.json").read_text())["status"] == "diverged"
    assert json.loads((tmp_path / "sweep" / "1" / "summary.json").read_text())["status"] == "completed"


def test_a_single_run_that_diverges_says_so_once(data_root, tmp_path):
    """Its failure's DEBUG record goes to its log file alone, the report's line to the console."""
    result = run_cli([f"data.root={data_root}", *QUICK, "optimizer.lr=1e6", "hydra.run.dir=run"], tmp_path)
    assert result.returncode == 1
    assert result.stderr.count("diverged: the weights became NaN or infinite") == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"{tmp_path / 'run'}: diverged: ")
    assert "DEBUG" not in result.stderr and "diverged" in (tmp_path / "run" / "run.log").read_text()
