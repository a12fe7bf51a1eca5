"""benchmarks/tables.py at tiny budgets, and the FID-over-steps callback (metrics.FIDCurve)."""
import glob
import json
import os
import shutil

import numpy as np
import pytest
import keras
import tensorflow as tf

import metrics
from conftest import benchmark, run_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUDGET = 0.1  # minutes: the smallest step counts (10 and up)


def tables(*args):
    return run_script("benchmarks/tables.py", *args, timeout=900)


def run_table(tmp_path_factory, table, *extra):
    """A table at BUDGET, planned from the reference COSTS unless extra sets --probe_steps."""
    out = str(tmp_path_factory.mktemp(f"table{table}"))
    result = tables(f"--table={table}", f"--budget={BUDGET}", f"--out_dir={out}",
                    "--probe_steps=0", *extra)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return os.path.join(out, f"table{table}")


def read(out, *path):
    with open(os.path.join(out, *path)) as f:
        return json.load(f) if path[-1].endswith(".json") else f.read()


def markdown_rows(text):
    return {cells[0]: cells[1:] for cells in (
        [c.strip() for c in line.strip("|").split("|")]
        for line in text.splitlines() if line.startswith("| ") and "---" not in line)}


def check_steps(out, names, stage_steps):
    for name in names:
        assert read(out, name, "flags.json")["steps"] == stage_steps, name


# --- The FID-over-steps callback ----------------------------------------------------------


def test_fid_curve_logs_closed_form_fids_and_keeps_each_step_once(tmp_path):
    # Features = the pixels; generated images = the real ones shifted by delta, so the two
    # Gaussians share a covariance and FID = |mean difference|^2 = D * delta^2.
    rng = np.random.default_rng(0)
    real = rng.random((400, 2, 2, 1)).astype(np.float32)
    features = lambda images: np.asarray(images, np.float64).reshape(len(images), -1)  # noqa
    real_stats = metrics.feature_statistics([features(real)])
    deltas = iter([0.5, 0.25, 0.1])
    delta = [0.0]

    def generate(n):  # one delta per FID: the callback asks for 400 in batches of 100
        if not generate.served % 400:
            delta[0] = next(deltas)
        start = generate.served % 400
        generate.served += n
        return real[start:start + n] + delta[0]
    generate.served = 0

    csv = tmp_path / "fid_curve.csv"
    csv.write_text("step,fid\n10,9.0\n20,8.0\n30,7.0\n")  # 30: after the backup at 20
    curve = metrics.FIDCurve(10, generate, features, real_stats, 400, str(csv),
                             str(tmp_path / "logs"), start_step=20, log=lambda line: None)
    curve.on_train_begin()
    for batch in range(25):  # steps 21 .. 45: FIDs at 30 and 40
        curve.on_train_batch_end(batch)
    rows = metrics.read_fid_curve(str(csv))
    assert [step for step, _ in rows] == [10, 20, 30, 40]
    assert rows[:2] == [(10, 9.0), (20, 8.0)]
    assert rows[2][1] == pytest.approx(4 * 0.5 ** 2, abs=1e-6)
    assert rows[3][1] == pytest.approx(4 * 0.25 ** 2, abs=1e-6)
    logged = {}
    for path in glob.glob(str(tmp_path / "logs" / "events.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == "fid":
                    logged[event.step] = float(tf.make_ndarray(value.tensor))
    assert logged == pytest.approx({30: rows[2][1], 40: rows[3][1]})


# --- The gap analysis -------------------------------------------------------------------


@pytest.fixture(scope="module")
def gap(tmp_path_factory):
    return run_table(tmp_path_factory, "gap")


def test_gap_runs_share_encoders_and_steps(gap):
    results = read(gap, "results.json")
    plan = results["plan"]
    check_steps(gap, ["vae"], plan["stage1_steps"])
    check_steps(gap, ["idgan", "idgan_oracle", "gan"], plan["stage2_steps"])
    assert read(gap, "idgan", "flags.json")["vae"] == os.path.join(gap, "vae")
    assert read(gap, "gan", "flags.json")["vae"] == os.path.join(gap, "vae")
    assert read(gap, "gan", "flags.json")["use_codes"] is False
    assert read(gap, "idgan_oracle", "flags.json")["vae"] == os.path.join(gap, "oracle")
    oracle = read(gap, "oracle", "flags.json")
    assert (oracle["model"], oracle["c_dim"]) == ("oracle", 5)  # one code per factor
    encoder = keras.models.load_model(os.path.join(gap, "oracle", "encoder.keras"))
    stats = np.asarray(encoder(np.zeros((2, 64, 64, 1), np.float32)))
    np.testing.assert_allclose(stats[:, 5:], np.log(0.1 ** 2), rtol=1e-5)  # fixed variance


def test_gap_curves_are_what_the_runs_logged(gap):
    results, table = read(gap, "results.json"), read(gap, "results.md")
    rows = markdown_rows(table)
    header = rows.pop("step")
    for run, label in [("vae", "beta-VAE decoder"), ("idgan", "(a) ID-GAN, beta-VAE encoder"),
                       ("idgan_oracle", "(b) ID-GAN, oracle encoder"), ("gan", "(c) plain GAN")]:
        every = read(gap, run, "flags.json")["fid_every"]
        steps = read(gap, run, "flags.json")["steps"]
        curve = metrics.read_fid_curve(os.path.join(gap, run, "fid_curve.csv"))
        assert [s for s, _ in curve] == list(range(every, steps + 1, every))
        assert all(np.isfinite(v) and v >= 0 for _, v in curve)
        assert [list(p) for p in results["curves"][label]] == [list(p) for p in curve]
        column = header.index(label)
        for step, value in curve:
            assert float(rows[f"{step:,}"][column]) == pytest.approx(value, abs=0.006)
    assert os.path.getsize(os.path.join(gap, "figures", "idgan_oracle_samples.png")) > 0
    floor = results["real_floor"]
    assert np.isfinite(floor) and floor > 0
    assert f"two independent sets of real sprites score {floor:.2f}" in table


# --- Tables 1, 2 and 3 --------------------------------------------------------------------


def check_cells(rows, table_rows, columns):
    """Every markdown cell equals results.json's value (2 decimals; Table 2: mean ± spread)."""
    for name, values in table_rows.items():
        values = values if isinstance(values, list) else [values]
        for key, column in columns.items():
            numbers = [v[key] for v in values if v.get(key) is not None]
            cell = rows[name][column]
            if not numbers:
                assert cell == "-"
                continue
            assert float(cell.split(",")[0].split(" ± ")[0]) == pytest.approx(np.mean(numbers),
                                                                             abs=0.006)
            if key == "fid":  # marked exactly where some seed's FID is at least tr(Sigma_real)
                assert ("collapsed" in cell) == any(
                    v["fid"] >= v["fid_trace"] for v in values if "fid_trace" in v)


def test_table3_reports_fid_l_i_and_gilbo_of_three_gans_on_one_encoder(tmp_path_factory):
    out = run_table(tmp_path_factory, "3", "--eval_samples=96")
    results = read(out, "results.json")
    assert results["plan"]["eval_samples"] == 96
    for run in ("cgan", "idgan_nodistill", "idgan"):
        assert read(out, run, "flags.json")["vae"] == os.path.join(out, "beta_vae")
    check_steps(out, ["cgan", "idgan_nodistill", "idgan"], results["plan"]["stage2_steps"])
    assert read(out, "idgan_nodistill", "flags.json")["distill_weight"] == 0.0
    rows = markdown_rows(read(out, "results.md"))
    check_cells(rows, results["rows"], {"fid": 0, "l_i": 1, "gilbo": 2})
    metrics_file = read(out, results["metrics"]["idgan"])
    assert results["rows"]["ID-GAN"]["l_i"] == metrics_file["l_i"]
    assert results["rows"]["ID-GAN"]["fid"] == metrics_file["fid_idgan"]
    assert metrics_file["num_samples"] == 96  # --eval_samples pins the plan's size


def test_table2_compares_one_and_two_objectives(tmp_path_factory):
    out = run_table(tmp_path_factory, "2", "--seeds=1", "--probe_steps=4")  # timed here
    results = read(out, "results.json")
    costs = read(out, "costs.json")
    assert costs["probe_steps"] == 4 and results["costs_measured"] is True
    assert set(costs["costs"]) == {"beta_vae", "vae_gan", "end_to_end", "idgan"}
    assert results["costs"] == costs["costs"] and all(v > 0 for v in costs["costs"].values())
    assert read(out, "probes", "idgan", "flags.json")["vae"] == os.path.join(
        out, "probes", "beta_vae")  # the stage-2 probe on the stage-1 probe's encoder
    assert "planned from seconds per step from 4-step timed runs here" in read(out, "results.md")
    check_steps(out, ["beta_vae_s0", "vae_gan_s0", "end_to_end_s0"], results["plan"]["stage1_steps"])
    assert read(out, "idgan_s0", "flags.json")["vae"] == os.path.join(out, "beta_vae_s0")
    rows = markdown_rows(read(out, "results.md"))
    assert rows["ID-GAN (two-step)"][5] == "2.00 ± 1.74"  # the paper's FID beside ours
    check_cells(rows, results["rows"], {"fvm_paper": 1, "fvm": 2, "mig": 4, "fid": 6})
    two_step, vae = results["rows"]["ID-GAN (two-step)"][0], results["rows"]["beta-VAE"][0]
    assert two_step["mig"] == vae["mig"]  # one encoder
    assert two_step["fid"] == read(out, results["metrics"]["idgan_s0"])["fid_idgan"]
    # The beta-VAE draws no samples: its grid is drawn from its decoder (prior_samples).
    grid = tf.io.decode_png(tf.io.read_file(os.path.join(out, "figures", "beta_vae_s0_samples.png")))
    assert grid.shape == (8 * 64, 8 * 64, 1)


def test_table1_runs_six_systems_on_color_sprites(tmp_path_factory):
    out = run_table(tmp_path_factory, "1")
    results = read(out, "results.json")
    for name in ("vae", "beta_vae", "factor_vae"):
        assert read(out, name, "flags.json")["dataset"] == "color_sprites"
        assert read(out, f"idgan_{name}", "flags.json")["vae"] == os.path.join(out, name)
    assert read(out, "vae", "flags.json")["beta"] == 1.0
    rows = markdown_rows(read(out, "results.md"))
    check_cells(rows, results["rows"], {"fvm_paper": 1, "fvm": 2, "mig": 4, "fid": 6})
    assert rows["GAN"][1] == "-" and rows["GAN"][0] == "N/A"


@pytest.mark.parametrize("args, expected", [
    (["--table=2", "--budget=0"], "--budget must be a positive number of minutes"),
    (["--budget=1"], "--table is required"),
    (["--table=4", "--budget=1"], "table"),
    (["--table=gap", "--budget=1", "--out_dir=/proc/nope"], "cannot create --out_dir"),
])
def test_bad_flags_give_one_line(args, expected):
    result = tables(*args)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("tables.py: error:") and expected in last
    assert "Traceback" not in result.stderr


# --- Planning from seconds per step measured on this machine ----------------------------

table_report = benchmark("table_report")  # first: tables.py imports it by this name
tables_module = benchmark("tables")


def test_prior_samples_draw_standard_normal_codes_through_the_decoder(tmp_path):
    """table_report.prior_samples on a decoder of known form, sigmoid(c W): the grid's tiles,
    row by row, are the images of numpy seed 0's 64 N(0, I) codes, to 8-bit rounding."""
    weights = np.random.default_rng(5).standard_normal((3, 4 * 4)).astype("float32")
    decoder = keras.Sequential([keras.Input((3,)), keras.layers.Dense(
        16, use_bias=False, activation="sigmoid"), keras.layers.Reshape((4, 4, 1))])
    decoder.layers[0].set_weights([weights])
    decoder.save(tmp_path / "decoder.keras")
    table_report.prior_samples(str(tmp_path / "decoder.keras"), str(tmp_path / "s.png"))
    grid = tf.io.decode_png(tf.io.read_file(str(tmp_path / "s.png"))).numpy()
    codes = np.random.default_rng(0).standard_normal((64, 3))
    expected = 1 / (1 + np.exp(-codes @ weights))  # (64, 16), one tile per row
    tiles = grid.reshape(8, 4, 8, 4).transpose(0, 2, 1, 3).reshape(64, 16) / 255
    assert grid.shape == (32, 32, 1) and np.max(np.abs(tiles - expected)) <= 0.5 / 255 + 1e-4


def test_probe_cost_times_the_steps_between_the_last_two_progress_lines():
    """Each line's time is step / (its rate since the start): 100 / 2.5 = 40 s and 200 / 4 =
    50 s, so the 100 steps between cost 0.1 s each, whatever start-up took."""
    lines = ["Resuming nothing", "step 100/200: loss 3.2 (50.0%, 2.5 steps/s, 40s so far, ETA 40s)",
             "FID every 10 steps", "step 200/200: loss 3.1 (100.0%, 4 steps/s, 50s so far, ETA 0s)",
             "Done: 200 of 200 steps in x."]
    assert tables_module.probe_cost(lines) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="no two progress lines"):
        tables_module.probe_cost(lines[:2])


def test_plan_follows_the_measured_costs_and_its_expected_time_fits_the_budget():
    slow = {key: 2 * cost for key, cost in tables_module.COSTS.items()}
    for table, seeds in (("2", 2), ("1", 1)):
        fast = tables_module.plan(table, 150, seeds)
        half = tables_module.plan(table, 150, seeds, slow)
        for stage in ("stage1_steps", "stage2_steps"):
            assert half[stage] == pytest.approx(fast[stage] / 2, rel=0.02), (table, stage)
        assert half["eval_samples"] <= fast["eval_samples"]
        assert tables_module.machine_scale(slow) == 2
        for costs, steps in ((tables_module.COSTS, fast), (slow, half)):
            minutes = tables_module.expected_minutes(table, seeds, steps, costs)
            assert 0.6 * 150 < minutes <= 150, (table, minutes)


def test_evaluation_stages_count_what_metrics_evaluate_computes():
    stages = tables_module.evaluation_stages(50_000, has_idgan=True, disentanglement=True)
    assert stages == [("FactorVAE metric", 970_000), ("FactorVAE metric", 90_000),
                      ("MIG", 10_000), ("FID, real", 100_000), ("FID, VAE", 50_000),
                      ("FID, ID-GAN", 50_000), ("L_I", 50_000),
                      ("GILBO", 50_000 + 2 * 2000 * 64)]  # its training pairs, twice
    assert tables_module.evaluation_stages(100, False, False) == [("FID, real", 200),
                                                                 ("FID, VAE", 100)]
    assert tables_module.eval_seconds("3", 1, 0) == 0.0


# --- FID's noise in the tables (table_report) ----------------------------------------------


def noisy(fid, spread, floor=50.0, trace=1000.0):
    return dict(fid=fid, fid_spread=spread, fid_floor=floor, fid_trace=trace, fid_diversity=0.5)


@pytest.mark.parametrize("b, verdict", [(109.9, "not distinguished"), (110.0, "distinguished"),
                                        (112.0, "distinguished"), (88.0, "distinguished")])
def test_fid_differences_below_twice_the_combined_spread_are_not_distinguished(b, verdict):
    """Spreads 3 and 4: 2 sqrt(3^2 + 4^2) = 10, so FIDs 100 and b differ when |100 - b| >= 10."""
    line = table_report.distinguished("A", noisy(100.0, 3.0), "B", noisy(b, 4.0))
    assert line.endswith(": " + verdict) and "10.00" in line, line


def test_tables_print_spread_floor_and_collapse_beside_each_fid():
    rows = {"cGAN": noisy(1200.0, 5.0), "ID-GAN w/o distill": noisy(300.0, 4.0, "not measured: "
                                                                    "the data has fewer than "
                                                                    "4,000 images"),
            "ID-GAN": dict(noisy(290.0, 3.0), l_i=-9.0, gilbo=-7.0)}
    cells = markdown_rows("\n".join(table_report.markdown("3", rows, 1)))
    assert cells["cGAN"][0] == "1200.00, collapsed (FID ≥ tr Σ_real)"  # 1200 >= its trace 1000
    assert cells["ID-GAN"][0] == "290.00" and cells["ID-GAN"][3:] == ["3.00", "50.00"]
    assert cells["ID-GAN w/o distill"][4] == "not measured: the data has fewer than 4,000 images"
    two_seeds = {name: [noisy(400.0, 2.0), noisy(1100.0, 6.0)] for name in table_report.PAPER["2"]}
    text = "\n".join(table_report.markdown("2", two_seeds, 2))
    cells = markdown_rows(text)
    assert cells["VAE-GAN"][6:] == [
        "750.00 ± 350.00, collapsed in 1 of 2 seeds (FID ≥ tr Σ_real)", "2.00 / 6.00", "50.00"]
    assert "- seed 1: VAE-GAN vs beta-VAE: 1100.00 vs 1100.00" in text


def test_metrics_without_fid_noise_read_not_measured():
    """A metrics.json of before the spread (the committed tables'): every noise cell and the
    comparisons say so; nothing is judged collapsed."""
    rows = {name: dict(fid=9000.0, fvm=0.5, fvm_paper=0.5, mig=0.1)
            for name in table_report.PAPER["1"]}
    text = "\n".join(table_report.markdown("1", rows, 1))
    cells = markdown_rows(text)
    assert cells["GAN"][6:] == ["9000.00"] + [table_report.GONE] * 2
    assert text.endswith(f"FID differences and collapse not judged: spread and tr Σ_real "
                         f"{table_report.GONE}.")


def test_rereport_keeps_every_committed_figure(tmp_path):
    """benchmarks/table_report.py DIR on a copy of each committed table: results.json unchanged
    (bit for bit), results.md's cells equal to its rows, its header line kept."""
    for table, columns in (("table1", {"fvm_paper": 1, "fvm": 2, "mig": 4, "fid": 6}),
                           ("table2", {"fvm_paper": 1, "fvm": 2, "mig": 4, "fid": 6}),
                           ("table3", {"fid": 0, "l_i": 1, "gilbo": 2})):
        source = os.path.join(ROOT, "benchmarks", "results", table)
        out = tmp_path / table
        shutil.copytree(source, out, ignore=shutil.ignore_patterns("figures"))
        result = run_script("benchmarks/table_report.py", str(out))
        assert result.returncode == 0, result.stderr
        assert (out / "results.json").read_text() == open(
            os.path.join(source, "results.json")).read()
        text = (out / "results.md").read_text()
        assert text.splitlines()[0] == open(os.path.join(source, "results.md")).readline().strip()
        rows = {k: [c.split(",")[0] for c in v] for k, v in markdown_rows(text).items()}
        check_cells(rows, read(str(out), "results.json")["rows"], columns)


@pytest.mark.parametrize("content, message", [
    (None, "give one table directory holding results.json"),
    ("{", "results.json"), ('{"table": "1"}', "results.json")])
def test_rereport_bad_directories_give_one_line(tmp_path, content, message):
    if content is not None:
        (tmp_path / "results.json").write_text(content)
        (tmp_path / "results.md").write_text("header\n")
    result = run_script("benchmarks/table_report.py", str(tmp_path))
    assert result.returncode == 2 and result.stdout == "", result
    line, = result.stderr.splitlines()
    assert line.startswith("table_report.py: error: ") and message in line, line
