"""logger=tensorboard and logger=mlflow: every evaluation row at step = training samples, the
config as hyperparameters, a resumed job continuing its tracker run without a step twice, and a
tracker that fails never stopping the training."""
import json
import signal
import sys
import time

import pytest
import torch
from helpers import LONG, QUICK, assert_one_line, metrics_rows, run_cli, start, wait_for_checkpoint

from vae_repro.config import Config, DataConfig, LoggerConfig, ModelConfig, TrainConfig
from vae_repro.trackers import run_name, swept_keys
from vae_repro.train import train

pytest.importorskip("mlflow", reason="the tracking extra: pip install -e '.[tracking]'")
pytest.importorskip("tensorboard", reason="the tracking extra: pip install -e '.[tracking]'")
from mlflow.tracking import MlflowClient  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.plugins.hparams import plugin_data_pb2  # noqa: E402

ROW_METRICS = ["train_elbo", "train_log_px", "train_kl", "test_elbo", "test_log_px", "test_kl", "wall_s"]


def small_config(data_root, logger: LoggerConfig) -> Config:
    return Config(device="cpu", latent_dim=3, data=DataConfig(root=str(data_root), download=False),
                  model=ModelConfig(hidden_size=50), logger=logger,
                  train=TrainConfig(max_samples=3000, eval_start=500, eval_points_per_decade=2, progress=False))


def event_folder(job_dir):
    """The job's one folder in tensorboard/, whose name TensorBoard shows as the run's."""
    (folder,) = (job_dir / "tensorboard").iterdir()
    return folder


def scalars(job_dir) -> dict[str, list[tuple[int, float]]]:
    """What TensorBoard shows of the job: each scalar's (step, value) pairs."""
    events = EventAccumulator(str(event_folder(job_dir)))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def mlflow_run(uri: str, job_dir):
    client = MlflowClient(uri)
    run_id = (job_dir / "mlflow_run_id").read_text().strip()
    return client, client.get_run(run_id)


def history(client, run, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))


def csv_column(job_dir, key: str) -> list[tuple[int, float]]:
    return [(int(row["samples"]), float(row[key])) for row in metrics_rows(job_dir)]


def test_tensorboard_has_every_row_at_its_samples_and_the_config_as_hparams(data_root, tmp_path):
    cfg = small_config(data_root, LoggerConfig(name="tensorboard"))
    train(cfg, tmp_path / "job")
    logged = scalars(tmp_path / "job")
    assert sorted(logged) == sorted(ROW_METRICS)
    for key in ROW_METRICS:
        assert [(s, pytest.approx(v, rel=1e-6)) for s, v in csv_column(tmp_path / "job", key)] == logged[key]
    events = EventAccumulator(str(event_folder(tmp_path / "job")))
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    assert start.hparams["latent_dim"].string_value == "3" and start.hparams["model.hidden_size"].string_value == "50"


@pytest.mark.slow
def test_mlflow_has_a_run_per_job_with_params_metrics_model_and_sweep_tag(data_root, tmp_path):
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    result = run_cli(["-m", "hydra/launcher=stack", f"data.root={data_root}", "data.download=false", "latent_dim=2,3",
                      "logger=mlflow", f"logger.tracking_uri={uri}", "hydra.sweep.dir=sweep", *QUICK], tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"to browse the runs: mlflow ui --backend-store-uri {uri}" in result.stdout
    for job, latent_dim in (("0", 2), ("1", 3)):
        job_dir = tmp_path / "sweep" / job
        client, run = mlflow_run(uri, job_dir)
        assert run.info.status == "FINISHED" and run.info.run_name == f"latent_dim={latent_dim}"  # what differs
        assert run.data.tags["sweep"] == str(tmp_path / "sweep") and run.data.tags["job_dir"] == str(job_dir)
        saved = json.loads((job_dir / "summary.json").read_text())
        assert saved["status"] == "completed"
        assert run.data.params["latent_dim"] == str(latent_dim) and run.data.params["optimizer.lr"] == "0.02"
        for key in ROW_METRICS:
            assert history(client, run, key) == csv_column(job_dir, key)
        assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["model.pt"]
    assert client.get_experiment_by_name("vae_repro").artifact_location.startswith((tmp_path / "store").as_uri())


@pytest.mark.slow
@pytest.mark.parametrize("logger", ["tensorboard", "mlflow"])
def test_a_killed_job_resumes_its_tracker_run_without_a_step_twice_or_lost(logger, data_root, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # Checkpoints at 30,000 and 60,000 samples; rows at 31,700 and 56,300 between them.
    args = [f"data.root={data_root}", *LONG, "train.checkpoint_every=3e4", "hydra.run.dir=job", f"logger={logger}",
            f"logger.tracking_uri={uri}"]
    job = tmp_path / "job"
    process = start(args, tmp_path)
    wait_for_checkpoint(job, process, settle_s=0)
    while len(metrics_rows(job)) < 7:  # the row at 31,700 logged, past the checkpoint at 30,000
        assert process.poll() is None
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert torch.load(job / "checkpoint.pt", weights_only=True)["state"]["samples"] == 30_000
    result = run_cli(args, tmp_path)  # the same command again: it logs the row at 31,700 again
    assert result.returncode == 0, result.stderr
    expected = csv_column(job, "test_elbo")
    assert [s for s, _ in expected] == [1000, 1800, 3200, 5700, 10000, 17800, 31700, 56300, 100000]
    if logger == "tensorboard":
        assert scalars(job)["test_elbo"] == [(s, pytest.approx(v, rel=1e-6)) for s, v in expected]
    else:
        client, run = mlflow_run(uri, job)
        assert history(client, run, "test_elbo") == expected and run.info.status == "FINISHED"
        assert len(client.search_runs([run.info.experiment_id])) == 1


def test_a_tracker_failing_mid_run_is_told_once_and_the_training_goes_on(data_root, tmp_path, monkeypatch, caplog):
    calls = []

    def server_gone(self, run_id, metrics=(), params=(), tags=()):
        calls.append(run_id)
        if metrics:
            raise ConnectionError("API request to http://tracking:5000 failed: Connection refused")
        return original(self, run_id, metrics=metrics, params=params, tags=tags)

    original = MlflowClient.log_batch
    monkeypatch.setattr(MlflowClient, "log_batch", server_gone)
    cfg = small_config(data_root, LoggerConfig(name="mlflow", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"))
    summary = train(cfg, tmp_path / "job")
    assert summary.status == "completed" and summary.samples == 3000
    assert len(metrics_rows(tmp_path / "job")) == 3 and (tmp_path / "job" / "model.pt").exists()
    told = [r.getMessage() for r in caplog.records if "logger" in r.getMessage()]
    assert told == [f"{tmp_path / 'job'}: logger failed (API request to http://tracking:5000 failed: Connection "
                    "refused); training goes on, metrics.csv keeps the record"]
    assert len(calls) == 2  # the params, then the first row; no more tries after it failed


def test_a_tracking_server_that_does_not_answer_costs_the_job_nothing_but_a_line(data_root, tmp_path, caplog):
    cfg = small_config(data_root, LoggerConfig(name="mlflow", tracking_uri="http://127.0.0.1:9"))
    summary = train(cfg, tmp_path / "job")
    assert summary.status == "completed" and len(metrics_rows(tmp_path / "job")) == 3
    told = [r.getMessage() for r in caplog.records if "logger" in r.getMessage()]
    assert len(told) == 1 and "logger could not start" in told[0] and "127.0.0.1:9" in told[0]
    assert not (tmp_path / "job" / "mlflow_run_id").exists()


@pytest.mark.parametrize("logger", ["tensorboard", "mlflow"])
def test_a_missing_tracker_package_is_one_line(logger, main_cli, monkeypatch, data_root, tmp_path):
    monkeypatch.setitem(sys.modules, logger, None)  # import fails as if not installed
    status, out, err = main_cli([f"data.root={data_root}", f"logger={logger}", *QUICK], tmp_path)
    assert status == 2
    assert_one_line(err, f"logger={logger}", f"the {logger} package is not installed", "pip install -e '.[tracking]'")
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("task, params, swept", [
    (["latent_dim=2,5", "data.root=/data", "train.progress=false"], None, {"latent_dim"}),
    (["algorithm=aevb,iwae", "seed=range(3)", "+model.x=1"], None, {"algorithm", "seed"}),
    (["sweep=fig2"], {"algorithm": "aevb,wake_sleep", "latent_dim": "3,5"}, {"algorithm", "latent_dim"}),
    (["sweep=fig2", "algorithm=aevb"], {"algorithm": "aevb,wake_sleep", "latent_dim": "3,5"}, {"latent_dim"}),
])
def test_a_sweeps_runs_are_named_by_the_keys_it_varies(task, params, swept):
    assert swept_keys(task, params) == swept
    job = ["algorithm=aevb", "latent_dim=3", "seed=1", "data.root=/long/path", "train.progress=False"]
    assert run_name(job, swept, "0") == " ".join(o for o in job if o.split("=")[0] in swept)


def test_a_single_runs_tracker_run_is_named_by_what_it_trains():
    job = ["latent_dim=3", "data.root=/long/path", "train.progress=False", "seed=1", "hydra.run.dir=x", "logger=tensorboard"]
    assert run_name(job, None, "12-00-00") == "latent_dim=3 seed=1"
    assert run_name(["data.root=/long/path"], None, "12-00-00") == "12-00-00"


@pytest.mark.slow
def test_tensorboard_names_a_sweeps_runs_by_their_overrides(data_root, tmp_path):
    result = run_cli(["latent_dim=2,3", "-m", f"data.root={data_root}", "logger=tensorboard", "hydra.sweep.dir=sweep",
                      *QUICK], tmp_path)
    assert result.returncode == 0, result.stderr
    sweep = tmp_path / "sweep"
    assert [event_folder(sweep / job).name for job in ("0", "1")] == ["latent_dim=2", "latent_dim=3"]
    assert result.stdout.strip().splitlines()[-1] == f"to browse the runs: tensorboard --logdir {sweep}"
