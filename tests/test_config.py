import math

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from vae_repro.algorithms import ALGORITHMS
from vae_repro.config import AlgorithmName, Config, ConfigError, Likelihood, check_config
from vae_repro.jobs import job_config
from vae_repro.likelihoods import LIKELIHOODS
from vae_repro.run import CONF_DIR, _sweep_jobs, available_cores, jobs_at_once
from vae_repro.schedule import eval_schedule


def compose_config(overrides=(), hydra_cfg=False):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra_cfg)


def test_yaml_defaults_match_the_schema_and_the_paper():
    cfg = OmegaConf.to_object(compose_config())
    assert cfg == Config()
    assert (cfg.latent_dim, cfg.model.hidden_size, str(cfg.model.activation), cfg.model.init_std) == (20, 500, "tanh", 0.01)
    assert (cfg.train.batch_size, cfg.train.mc_samples, cfg.train.max_samples) == (100, 1, 1e8)
    assert cfg.optimizer.lr in (0.01, 0.02, 0.1)
    assert cfg.optimizer.prior_std == 1.0 and cfg.optimizer.weight_decay is None  # 1 / N_train, see test_train
    assert str(cfg.model.likelihood) == "bernoulli" and cfg.model.decoder_logvar_min is None


def test_a_jobs_paths_are_absolute_from_where_the_command_starts(tmp_path, monkeypatch):
    """One function for every way a job starts: the pre-check, Hydra's task and the stack launcher."""
    monkeypatch.chdir(tmp_path)
    cfg = job_config(compose_config(["data=array", "data.path=mine.npz", "data.root=here", "logger=mlflow"]))
    assert (cfg.data.path, cfg.data.root) == (str(tmp_path / "mine.npz"), str(tmp_path / "here"))
    assert cfg.logger.tracking_uri == f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}"


def test_frey_face_data_brings_the_papers_frey_model_and_yields_to_the_command_line():
    frey = OmegaConf.to_object(compose_config(["data=frey_face"]))
    assert (str(frey.data.name), str(frey.model.likelihood), frey.model.hidden_size) == ("frey_face", "gaussian", 200)
    mine = OmegaConf.to_object(compose_config(["data=frey_face", "model.hidden_size=500",
                                               "model.likelihood=bernoulli"]))
    assert (mine.model.hidden_size, str(mine.model.likelihood)) == (500, "bernoulli")
    sweep = compose_config(["sweep=fig2_frey"], hydra_cfg=True)
    assert str(sweep.data.name) == "frey_face" and str(sweep.hydra.sweeper.params.latent_dim) == "2,5,10,20"


def test_an_experiment_preset_overrides_the_defaults_and_yields_to_the_command_line():
    quick = OmegaConf.to_object(compose_config(["experiment=quick"]))
    assert (quick.train.max_samples, quick.train.eval_points_per_decade) == (1e6, 4)
    mine = OmegaConf.to_object(compose_config(["experiment=quick", "train.max_samples=2e5"]))
    assert (mine.train.max_samples, mine.train.eval_points_per_decade) == (2e5, 4)


def test_overrides_are_typed():
    cfg = OmegaConf.to_object(compose_config(["latent_dim=10", "optimizer.lr=0.1", "train.max_samples=1e6",
                                              "data=fashion_mnist", "data.binarize=dynamic", "device=cpu"]))
    assert (cfg.latent_dim, cfg.optimizer.lr, cfg.train.max_samples) == (10, 0.1, 1e6)
    assert (str(cfg.data.name), str(cfg.data.binarize), str(cfg.device)) == ("fashion_mnist", "dynamic", "cpu")


@pytest.mark.parametrize("override", ["latent_dim=abc", "latent_dim=2.5", "data.binarize=sometimes",
                                      "device=tpu", "model.activation=gelu", "train.batch_size=big"])
def test_wrong_type_is_rejected_at_composition(override):
    with pytest.raises(ConfigCompositionException):
        compose_config([override])


@pytest.mark.parametrize("key,value", [("latent_dim", 0), ("latent_dim", -3), ("optimizer.lr", 0.0),
                                       ("optimizer.lr", -0.1), ("train.batch_size", 0),
                                       ("train.max_samples", 0.5)])
def test_out_of_range_values_are_rejected(key, value):
    cfg = OmegaConf.to_object(compose_config([f"{key}={value}"]))
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        check_config(cfg)


def test_fig2_sweep_runs_both_algorithms_for_the_papers_latent_sizes():
    hydra_cfg = compose_config(["sweep=fig2"], hydra_cfg=True).hydra
    assert str(hydra_cfg.sweeper.params.latent_dim) == "3,5,10,20,200"
    assert str(hydra_cfg.sweeper.params.algorithm) == "aevb,wake_sleep"
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        jobs, _ = _sweep_jobs(["sweep=fig2"])
        aevb_alone, _ = _sweep_jobs(["sweep=fig2", "algorithm=aevb"])
    algorithms = lambda jobs: sorted(o for job in jobs for o in job if o.startswith("algorithm="))  # noqa: E731
    assert len(jobs) == 10 and algorithms(jobs) == ["algorithm=aevb"] * 5 + ["algorithm=wake_sleep"] * 5
    assert len(aevb_alone) == 5 and algorithms(aevb_alone) == ["algorithm=aevb"] * 5


def test_mcem_turns_on_the_marginal_likelihood_unless_told_otherwise():
    assert str(OmegaConf.to_object(compose_config(["algorithm=mcem"])).eval.marginal) == "hmc"
    assert str(OmegaConf.to_object(compose_config(["algorithm=mcem", "eval.marginal=none"])).eval.marginal) == "none"
    assert str(OmegaConf.to_object(compose_config(["algorithm=aevb"])).eval.marginal) == "none"


def test_fig3_sweep_runs_three_algorithms_on_two_training_set_sizes():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        jobs, _ = _sweep_jobs(["sweep=fig3"])
        cfgs = [OmegaConf.to_object(compose("config", overrides=job)) for job in jobs]
    assert sorted((str(c.algorithm.name), c.data.train_size or 0) for c in cfgs) == sorted(
        (a, n) for a in ("aevb", "wake_sleep", "mcem") for n in (1000, 0))  # 0: all
    assert {(c.latent_dim, c.model.hidden_size, str(c.eval.marginal)) for c in cfgs} == {(3, 100, "hmc")}


def test_iwae_paper_sweep_trains_its_model_with_k_1_5_50():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        jobs, _ = _sweep_jobs(["sweep=iwae_paper"])
        cfgs = [OmegaConf.to_object(compose("config", overrides=job)) for job in jobs]
    assert sorted(c.algorithm.k for c in cfgs) == [1, 5, 50]
    assert {(c.train.max_samples, c.train.eval_points_per_decade) for c in cfgs} == {(1.968e8, 2)}
    assert {(str(c.algorithm.name), c.latent_dim, tuple(c.model.hidden_sizes), str(c.data.binarize)) for c in cfgs} == {
        ("iwae", 50, (200, 200), "dynamic")}
    assert {(str(c.optimizer.name), c.optimizer.lr, tuple(c.optimizer.betas), c.optimizer.eps, c.optimizer.lr_stages,
             c.optimizer.weight_decay) for c in cfgs} == {("adam", 1e-3, (0.9, 0.999), 1e-4, 8, 0.0)}
    assert {(str(c.eval.marginal), c.eval.marginal_samples, c.eval.active_units) for c in cfgs} == {("is", 5000, True)}


@pytest.mark.parametrize("launcher,n_jobs,expected", [
    ({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}, 10, 1),
    ({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": -1}, 10, "cores"),
    ({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": -1}, 1, 1),
    ({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": 3}, 10, 3),
    ({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": 3}, 2, 2),
    ({"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"}, 4, 4),
    ({"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"}, 10, 1),
])
def test_jobs_at_once_follows_the_launcher(launcher, n_jobs, expected):
    expected = min(n_jobs, available_cores()) if expected == "cores" else expected
    assert jobs_at_once(OmegaConf.create(launcher), n_jobs) == expected


def test_eval_schedule_is_log_spaced_in_whole_batches():
    points = eval_schedule(start=10_000, per_decade=5, max_samples=100_000_000, batch_size=100)
    assert points[0] == 10_000 and points[-1] == 100_000_000
    assert len(points) == 4 * 5 + 1
    assert all(p % 100 == 0 for p in points)
    ratios = [b / a for a, b in zip(points, points[1:])]
    assert all(ratio == pytest.approx(10 ** 0.2, rel=0.01) for ratio in ratios)
    # a run shorter than the first point is still evaluated once, at its end
    assert eval_schedule(10_000, 5, 250, 100) == [300]
    assert math.isclose(len(eval_schedule(10_000, 5, 1_000_000, 100)), 11)


def test_each_algorithm_and_likelihood_is_named_in_each_of_its_homes():
    """docs/extending.md's list of the files that a new algorithm or likelihood touches, kept true."""
    presets = {path.stem for path in (CONF_DIR / "algorithm").glob("*.yaml")}
    assert set(ALGORITHMS) == {name.value for name in AlgorithmName} == presets
    assert set(LIKELIHOODS) == {name.value for name in Likelihood}
