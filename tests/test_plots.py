"""The plot and table scripts on run dirs written by hand: short runs, seeds, other columns, sweep tables,
and scripts/run_fig2.sh without Frey Face's file."""
import json
import subprocess
import sys
from itertools import combinations

import numpy as np
import pandas as pd
import pytest
from helpers import QUICK, REPO, assert_one_line, make_mnist_root
from omegaconf import OmegaConf

from vae_repro import plotting
from vae_repro.config import Config

sys.path.insert(0, str(REPO / "scripts"))
import plot_fig2  # noqa: E402
import sweep_table  # noqa: E402

SAMPLES = [500, 1000, 2000, 3000]  # a short run's evaluations
ELBO = np.array([-690.0, -520.0, -420.0, -385.0])  # far below the paper's -150 to -95, as on synthetic digits
KL = np.array([250.0, 120.0, 60.0, 39.0])


def metrics(elbo=ELBO, kl=KL) -> dict[str, list]:
    """metrics.csv's columns for a run with this train ELBO and KL; the test split a little below."""
    return {"samples": SAMPLES, "train_elbo": elbo, "train_log_px": elbo + kl, "train_kl": kl,
            "test_elbo": elbo - 2, "test_log_px": elbo - 2 + kl + 1, "test_kl": kl + 1, "wall_s": [1.0, 2.0, 3.0, 4.0]}


def make_job(job_dir, columns=None, config=None, summary=None):
    """A job dir as a run leaves it: .hydra/config.yaml (the defaults with `config`'s changes), metrics.csv
    and, if given, summary.json."""
    (job_dir / ".hydra").mkdir(parents=True)
    cfg = OmegaConf.structured(Config)
    for key, value in (config or {}).items():
        OmegaConf.update(cfg, key, value)
    OmegaConf.save(cfg, job_dir / ".hydra" / "config.yaml")
    pd.DataFrame(columns or metrics()).to_csv(job_dir / "metrics.csv", index=False)
    if summary is not None:
        (job_dir / "summary.json").write_text(json.dumps(summary))
    return job_dir


def draw(dirs, columns=plot_fig2.COLUMNS, ylim=None):
    return plot_fig2.plot(plot_fig2.read_runs(dirs, columns), columns, ylim)


def test_a_short_run_below_the_papers_range_has_every_point_in_view(tmp_path):
    fig = draw([make_job(tmp_path / "job")])
    (ax,) = fig.axes
    low, high = ax.get_ylim()
    assert low < ELBO.min() - 2 and high > ELBO.max()
    assert high >= -95  # near enough to the paper's range to keep it
    assert len(ax.texts) == 0  # no "point(s) outside"


def test_curves_far_from_the_papers_range_get_a_range_of_their_own(tmp_path):
    fig = draw([make_job(tmp_path / "job", metrics(elbo=np.array([-2000.0, -1950.0, -1920.0, -1900.0])))])
    low, high = fig.axes[0].get_ylim()
    assert -2020 < low < -2002 and -1900 < high < -1880  # not squeezed flat by a frame reaching up to -95


def test_curves_within_the_papers_range_are_drawn_in_it(tmp_path):
    fig = draw([make_job(tmp_path / "job", metrics(elbo=np.array([-140.0, -120.0, -110.0, -105.0])))])
    low, high = fig.axes[0].get_ylim()
    assert low == pytest.approx(-150 - 0.02 * 55) and high == pytest.approx(-95 + 0.02 * 55)


def test_y_range_leaves_out_only_a_first_point_orders_of_magnitude_off():
    steep = np.array([-690.0, -385.0, -340.0])
    assert plotting.y_range([steep], None)[0] < -690
    low, _ = plotting.y_range([np.array([-9.5e6, -385.0, -340.0])], None)
    assert -400 < low < -385


def test_ylim_sets_the_range_and_points_outside_are_counted(tmp_path, monkeypatch):
    job = make_job(tmp_path / "job")
    figures, plot = [], plot_fig2.plot

    def keep_figure(*args):
        figures.append(plot(*args))
        return figures[-1]

    monkeypatch.setattr(plot_fig2, "plot", keep_figure)
    assert plot_fig2.main([str(job), "--ylim", "-600", "-300", "--out", str(tmp_path / "f.png")]) == 0
    (ax,) = figures[0].axes
    assert ax.get_ylim() == (-600, -300)
    (note,) = [t.get_text() for t in ax.texts]
    assert note.startswith("2 point(s) outside")  # -690 and -692, the first train and test ELBO


def legend_texts(fig):
    return [t.get_text() for t in fig.legends[0].get_texts()]


def assert_legend_inside_the_figure_and_off_the_panels(fig):
    fig.canvas.draw()
    legend, figure = fig.legends[0].get_window_extent(), fig.bbox
    assert figure.x0 <= legend.x0 and legend.x1 <= figure.x1 and figure.y0 <= legend.y0 and legend.y1 <= figure.y1
    assert not any(legend.overlaps(ax.get_window_extent()) for ax in fig.axes)


def test_one_panel_legend_fits_and_names_the_band_of_seeds(tmp_path):
    for seed in (0, 1):
        for algorithm, shift in (("aevb", 0.0), ("wake_sleep", -30.0)):
            make_job(tmp_path / f"{algorithm}{seed}", metrics(elbo=ELBO + shift + seed),
                     {"seed": seed, "algorithm.name": algorithm})
    fig = draw([tmp_path])
    assert len(fig.axes) == 1 and len(fig.axes[0].collections) == 4  # a band per algorithm and split
    assert legend_texts(fig) == ["AEVB (train)", "AEVB (test)", "WS (train)", "WS (test)",
                                 "band: min-max over 2 seeds"]
    assert_legend_inside_the_figure_and_off_the_panels(fig)


def test_a_band_over_runs_of_one_seed_says_so(tmp_path):
    """Two sweeps of the same config and seed (say through two launchers): their band spans runs, not seeds."""
    for sweep, shift in (("basic", 0.0), ("stack", 0.5)):
        make_job(tmp_path / sweep, metrics(elbo=ELBO + shift))
    make_job(tmp_path / "other_seed", metrics(elbo=ELBO + 1.0), {"seed": 1})
    assert legend_texts(draw([tmp_path / "basic", tmp_path / "stack"]))[-1] == "band: min-max over 2 runs of 1 seed"
    assert legend_texts(draw([tmp_path]))[-1] == "band: min-max over 3 runs of 2 seeds"


def test_overlay_draws_every_latent_size_of_a_dataset_on_one_panel(tmp_path):
    for latent_dim in (2, 5, 10):
        make_job(tmp_path / f"mnist{latent_dim}", metrics(elbo=ELBO + latent_dim), {"latent_dim": latent_dim})
        make_job(tmp_path / f"ws{latent_dim}", metrics(elbo=ELBO - latent_dim),
                 {"latent_dim": latent_dim, "algorithm.name": "wake_sleep"})
    for dataset in ("frey_face", "fashion_mnist"):
        make_job(tmp_path / dataset, config={"data.name": dataset, "latent_dim": 2})
    fig = plot_fig2.plot_overlay(plot_fig2.read_runs([tmp_path]))
    assert [ax.get_title() for ax in fig.axes] == ["MNIST", "Fashion-MNIST", "Frey Face"]  # three: no empty slot
    mnist = fig.axes[0]
    drawn = [line for line in mnist.get_lines() if len(line.get_xdata())]
    assert len(drawn) == 3 * 2  # each N_z and algorithm, the test split's
    assert all(np.array_equal(line.get_ydata(), ELBO + shift - 2) for line, shift in zip(drawn, (2, -2, 5, -5, 10, -10)))
    assert len({tuple(line.get_color()) for line in drawn}) == 3  # a colour per N_z
    assert {line.get_linestyle() for line in drawn} == {"-", "--"}  # a style per algorithm
    assert legend_texts(fig) == ["$N_z$ = 2", "$N_z$ = 5", "$N_z$ = 10", "AEVB", "WS"]
    assert mnist.get_ylabel().startswith("test ") and not mnist.texts  # one run per curve: nothing to note
    assert_legend_inside_the_figure_and_off_the_panels(fig)
    assert plot_fig2.main([str(tmp_path), "--overlay", "--out", str(tmp_path / "overlay.png")]) == 0
    assert (tmp_path / "overlay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_curve_of_one_evaluation_is_drawn_as_a_point(tmp_path):
    one_row = {column: values[-1:] for column, values in metrics().items()}
    ax = draw([make_job(tmp_path / "short", one_row)]).axes[0]
    assert [(len(line.get_xdata()), line.get_marker()) for line in ax.get_lines()] == [(1, "o"), (1, "o")]


def test_iwae_is_drawn_beside_aevb_in_a_colour_of_its_own(tmp_path):
    make_job(tmp_path / "aevb")
    make_job(tmp_path / "iwae", metrics(elbo=ELBO + 5.0), {"algorithm.name": "iwae"})
    fig = draw([tmp_path])
    assert legend_texts(fig) == ["AEVB (train)", "AEVB (test)", "IWAE (train)", "IWAE (test)"]
    colours = {line.get_label(): line.get_color() for line in fig.axes[0].get_lines()}
    assert colours["IWAE (train)"] != colours["AEVB (train)"]
    assert plot_fig2.y_label(("train_iwae50", "test_iwae50")) == "IWAE-50 bound per datapoint (nats)"
    assert plot_fig2.y_label(("test_iwae5",)) == "test IWAE-5 bound per datapoint (nats)"


def test_an_algorithm_of_your_own_is_drawn_under_its_name_and_mcem_without_an_elbo_is_left_out(tmp_path):
    make_job(tmp_path / "aevb")
    mine = make_job(tmp_path / "mine", metrics(elbo=ELBO + 5.0))
    config = mine / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace("name: aevb", "name: my_objective"))  # a name the schema lacks
    no_elbo = {column: [np.nan] * len(SAMPLES) for column in metrics()} | {"samples": SAMPLES}  # its columns empty
    make_job(tmp_path / "mcem", no_elbo, {"algorithm.name": "mcem"})
    fig = draw([tmp_path])
    assert legend_texts(fig) == ["AEVB (train)", "AEVB (test)", "my_objective (train)", "my_objective (test)"]
    colours = {line.get_label(): line.get_color() for line in fig.axes[0].get_lines()}
    assert colours["my_objective (train)"] not in (colours["AEVB (train)"], "tab:purple", "tab:green")


def test_no_band_entry_without_seeds(tmp_path):
    make_job(tmp_path / "aevb")
    make_job(tmp_path / "ws", config={"algorithm.name": "wake_sleep"})
    fig = draw([tmp_path])
    assert legend_texts(fig) == ["AEVB (train)", "AEVB (test)", "WS (train)", "WS (test)"]
    assert len(fig.axes[0].collections) == 0
    assert_legend_inside_the_figure_and_off_the_panels(fig)


def test_a_short_runs_x_tick_labels_do_not_overlap(tmp_path):
    fig = draw([make_job(tmp_path / "job")])
    fig.canvas.draw()
    ax = fig.axes[0]
    labels = [t for t in ax.xaxis.get_ticklabels(which="both") if t.get_visible() and t.get_text()
              and ax.get_xlim()[0] <= t.get_position()[0] <= ax.get_xlim()[1]]
    assert [t.get_text() for t in labels] == ["500", "1k", "2k"]
    assert not any(a.get_window_extent().overlaps(b.get_window_extent()) for a, b in combinations(labels, 2))


def test_column_without_its_split_draws_train_and_test(tmp_path):
    fig = draw([make_job(tmp_path / "job")], plot_fig2.columns_to_draw("kl", plotting.metrics_columns([tmp_path])))
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["AEVB (train)", "AEVB (test)"]
    assert np.array_equal(ax.get_lines()[0].get_ydata(), KL) and np.array_equal(ax.get_lines()[1].get_ydata(), KL + 1)
    assert "KL" in ax.get_ylabel()
    low, high = ax.get_ylim()
    assert 0 < low < 39 and 251 < high < 300  # the KL's own range, not the ELBO's paper range


def test_a_full_column_name_draws_that_column_alone(tmp_path):
    make_job(tmp_path / "aevb")
    make_job(tmp_path / "ws", config={"algorithm.name": "wake_sleep"})
    columns = plot_fig2.columns_to_draw("test_kl", plotting.metrics_columns([tmp_path]))
    assert columns == ("test_kl",)
    ax = draw([tmp_path], columns).axes[0]
    assert [(line.get_label(), line.get_linestyle()) for line in ax.get_lines()] == [("AEVB (test)", "--"),
                                                                                    ("WS (test)", "--")]
    assert all(np.array_equal(line.get_ydata(), KL + 1) for line in ax.get_lines())
    assert ax.get_ylabel().startswith("test ") and "KL" in ax.get_ylabel()


def test_an_unknown_column_is_one_line_naming_the_columns(tmp_path, capsys):
    job = make_job(tmp_path / "job")
    assert plot_fig2.main([str(job), "--column", "nope", "--out", str(tmp_path / "f.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --column nope: no such column; ")
    assert "train_elbo, train_log_px, train_kl, test_elbo, test_log_px, test_kl, wall_s" in err
    assert not (tmp_path / "f.png").exists()


def summary(status, elbo, samples=3000):
    return {"status": status, "samples": samples, "train_elbo": elbo, "test_elbo": elbo - 2,
            "samples_per_s": samples / 10, "wall_s": 10.0}


@pytest.fixture
def sweep(tmp_path):
    """Hydra's layout: jobs 0 to 10 (10 to see them in number order); they differ in N_z and seed, and in where
    their data lay, which is no setting."""
    sweep = tmp_path / "multirun"
    make_job(sweep / "0", config={"latent_dim": 2, "data.root": "/a"}, summary=summary("completed", -340.0))
    make_job(sweep / "1", config={"latent_dim": 5, "data.root": "/b"}, summary=summary("running", -330.0, 2000))
    make_job(sweep / "10", config={"latent_dim": 5, "seed": 1}, summary=summary("failed", -335.0))
    make_job(sweep / "2", config={"latent_dim": 2, "seed": 1})  # launched, no summary yet
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    return sweep


def test_sweep_table_has_a_row_per_job_and_the_swept_keys(sweep, tmp_path, capsys):
    out = tmp_path / "table.csv"
    assert sweep_table.main([str(sweep), "--csv", str(out)]) == 0
    table = pd.read_csv(out)
    assert list(table.columns) == ["job", "latent_dim", "seed", "status", "train_elbo", "test_elbo", "samples",
                                   "samples_per_s"]
    assert list(table["job"]) == [str(sweep / n) for n in ("0", "1", "2", "10")]
    assert list(table["latent_dim"]) == [2, 5, 2, 5] and list(table["seed"]) == [0, 0, 1, 1]
    assert list(table["status"]) == ["completed", "running", "not started", "failed"]
    assert list(table["train_elbo"].fillna(0)) == [-340.0, -330.0, 0, -335.0]
    assert list(table["test_elbo"].fillna(0)) == [-342.0, -332.0, 0, -337.0]
    assert list(table["samples"].fillna(0)) == [3000, 2000, 0, 3000]
    assert list(table["samples_per_s"].fillna(0)) == [300.0, 200.0, 0, 300.0]

    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split() == list(table.columns) and str(out) in printed[-1]
    assert printed[3].split() == [str(sweep / "2"), "2", "1", "not", "started", "-", "-", "-", "-"]
    assert printed[1].split()[3:] == ["completed", "-340.00", "-342.00", "3000", "300.00"]


def test_sweep_table_shows_a_flagged_jobs_warning(sweep, capsys):
    warning = "the ELBO (-6.9e+06 at 10000 samples) is far below ..."
    make_job(sweep / "3", config={"latent_dim": 2, "seed": 2}, summary=summary("completed", -4e6) | {"warning": warning})
    table = sweep_table.table([sweep])
    assert list(table.columns)[-1] == "warning"
    flagged = table.set_index("job")["warning"].notna()
    assert flagged[str(sweep / "3")] and flagged.sum() == 1

    assert sweep_table.main([str(sweep)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 1 + 5 + 1  # the header, a row per job, the flagged job's warning
    (row,) = [line for line in printed if line.split()[0] == str(sweep / "3")]
    assert "completed, flagged" in row and "-4000000.00" in row and warning not in row
    assert printed[-1].startswith("flagged") and str(sweep / "3") in printed[-1] and warning in printed[-1]
    assert sum("flagged" in line for line in printed[1:-1]) == 1


def test_sweep_table_over_seeds_gives_the_mean_and_deviation_per_setting(tmp_path, capsys):
    sweep = tmp_path / "multirun"
    for num, (latent_dim, seed, elbo) in enumerate([(2, 0, -340.0), (2, 1, -342.0), (2, 2, -347.0), (5, 0, -330.0),
                                                     (5, 1, -331.0)]):
        make_job(sweep / str(num), config={"latent_dim": latent_dim, "seed": seed}, summary=summary("completed", elbo))
    make_job(sweep / "5", config={"latent_dim": 5, "seed": 2}, summary=summary("running", -500.0, 2000))
    out = tmp_path / "seeds.csv"
    assert sweep_table.main([str(sweep), "--over-seeds", "--csv", str(out)]) == 0
    table = pd.read_csv(out)
    assert list(table.columns) == ["latent_dim", "seeds", "train_elbo_mean", "train_elbo_std", "test_elbo_mean",
                                   "test_elbo_std"]
    assert len(table) == 2 and list(table["latent_dim"]) == [2, 5] and list(table["seeds"]) == [3, 2]
    assert table["train_elbo_mean"].tolist() == pytest.approx([np.mean([-340, -342, -347]), -330.5])
    assert table["train_elbo_std"].tolist() == pytest.approx([np.std([-340, -342, -347], ddof=1), np.std([-330, -331],
                                                                                                          ddof=1)])
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 1 + 2 + 2  # the header, a row per setting, the job left out, the file written
    assert printed[1].split() == ["2", "3", "-343.00", "±", "3.61", "-345.00", "±", "3.61"]
    assert "left out" in printed[-2] and "1 job not completed" in printed[-2]


def test_sweep_table_adds_the_iwae_bounds_and_marginals_the_jobs_measured(sweep):
    measured = summary("completed", -340.0) | {"train_iwae5": -338.0, "test_iwae5": -339.5,
                                               "test_log_px_marginal": -336.0}
    make_job(sweep / "3", config={"latent_dim": 2, "seed": 2}, summary=measured)
    table = sweep_table.table([sweep])
    assert list(table.columns) == ["job", "latent_dim", "seed", "status", "train_elbo", "test_elbo", "train_iwae5",
                                   "test_iwae5", "test_log_px_marginal", "samples", "samples_per_s"]
    assert table.set_index("job").loc[str(sweep / "3"), "test_iwae5"] == -339.5


def test_sweep_table_of_a_dir_without_jobs_is_one_line(tmp_path, capsys):
    assert sweep_table.main([str(tmp_path)]) == 2
    assert_one_line(capsys.readouterr().err, str(tmp_path), "no metrics.csv or summary.json")
    assert sweep_table.main([str(tmp_path / "nowhere")]) == 2
    assert_one_line(capsys.readouterr().err, str(tmp_path / "nowhere"), "no such dir")


@pytest.mark.slow
def test_run_fig2_without_frey_face_draws_the_mnist_row(tmp_path):
    mnist = make_mnist_root(tmp_path / "mnist")
    result = subprocess.run(["bash", str(REPO / "scripts" / "run_fig2.sh"), "out", "--mnist-root", str(mnist),
                             "--frey-root", str(tmp_path / "nowhere"), "algorithm=aevb", "latent_dim=2",
                             "data.download=false", *QUICK], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    (error,) = [line for line in result.stderr.splitlines() if "error" in line]  # the CLI's one line
    assert error.startswith("error: frey_face not found: ") and str(tmp_path / "nowhere") in error
    assert "wrote out/fig2.png" in result.stdout
    assert (tmp_path / "out" / "fig2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.parent.name for p in (tmp_path / "out").rglob("metrics.csv")] == ["0"]
