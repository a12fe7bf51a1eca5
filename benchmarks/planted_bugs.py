"""Does the suite catch plausible bugs? Plants each in a copy of the repository and runs the
tests that must fail.

    nice -n 5 python benchmarks/planted_bugs.py [--only=NAME,...] [--list]

BUGS is a table of (name, file, exact original text, broken text, tests). For each row the
working tree (without .git) is copied to a temporary directory, the original text, which
must occur exactly once, is replaced by the broken one, and `python -m pytest -x -q` runs the
row's tests there. A row is "caught" when pytest reports a failed test (exit status 1);
"MISSED" when the tests pass, and "ERROR" for any other status (no tests collected, a usage
error): both count as misses. Exit status 1 if any row is missed, 2 if an original text is
not found (the table no longer matches the code: fix the row).
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

OBJECTIVES = "tests/test_objectives.py::"
BUGS = [
    # --- vae.py -------------------------------------------------------------------------
    ("beta-VAE drops beta", "vae.py",
     "loss = reconstruction + self.beta * kl",
     "loss = reconstruction + kl",
     [OBJECTIVES + "test_beta_vae_step_with_uncertain_codes_and_a_decoder_that_ignores_them"]),
    ("KL with +logvar", "vae.py",
     "ops.square(mu) - 1.0 - logvar, axis=-1)",
     "ops.square(mu) - 1.0 + logvar, axis=-1)",
     ["tests/test_vae.py::test_kl_matches_numerical_integration"]),
    ("FactorVAE subtracts gamma * TC", "vae.py",
     "loss = reconstruction + kl + self.gamma * tc",
     "loss = reconstruction + kl - self.gamma * tc",
     [OBJECTIVES + "test_factor_vae_update_is_sgd_on_the_elbo_with_weighted_tc"]),
    ("beta-VAE loss averaged per replica, not over the global batch", "vae.py",
     "over replicas.\n            scaled_loss = tf.nn.compute_average_loss(loss)",
     "over replicas.\n            scaled_loss = ops.mean(loss)",
     ["tests/test_vae.py::test_two_replicas_train_exactly_like_one_device"]),
    ("TorchAdam with eps inside the root", "vae.py",
     "denominator = (ops.sqrt(v) / ops.sqrt(_one_minus_power(self.beta_2, step))\n"
     "                       + self.epsilon)",
     "denominator = ops.sqrt(v / _one_minus_power(self.beta_2, step) + self.epsilon)",
     ["tests/test_vae.py::test_adam_is_pytorchs_adam"]),
    ("stage-1 traversal row i sweeps code i + 1", "vae.py",
     "rows = np.repeat(np.arange(c_dim), len(values))",
     "rows = np.repeat((np.arange(c_dim) + 1) % c_dim, len(values))",
     ["tests/test_vae.py::test_traversal_grid_sweeps_one_code_per_row"]),
    # --- idgan.py -----------------------------------------------------------------------
    ("R1 on fake images", "idgan.py",
     "real_outputs, r1 = r1_penalty(self.discriminate, real * 2.0 - 1.0)\n"
     "            fake_outputs = self.discriminate(fake)",
     "real_outputs = self.discriminate(real * 2.0 - 1.0)\n"
     "            fake_outputs, r1 = r1_penalty(self.discriminate, fake)",
     [OBJECTIVES + "test_idgan_discriminator_update_is_sgd_on_the_loss_with_weighted_r1"]),
    ("distillation reads G's [-1, 1] image unmapped", "idgan.py",
     "self.encode((fake + 1.0) / 2.0))",
     "self.encode(fake))",
     [OBJECTIVES + "test_idgan_generator_update_is_sgd_on_the_loss_with_weighted_distillation"]),
    ("distillation weight dropped", "idgan.py",
     "g_loss = g_adversarial + self.distill_weight * nll",
     "g_loss = g_adversarial + nll",
     [OBJECTIVES + "test_idgan_generator_update_is_sgd_on_the_loss_with_weighted_distillation"]),
    ("Gaussian NLL multiplies by the variance", "idgan.py",
     "ops.square(c - mu) * ops.exp(-logvar)",
     "ops.square(c - mu) * ops.exp(logvar)",
     ["tests/test_idgan.py::test_gaussian_nll_matches_numpy"]),
    ("EMA decay on the new weights", "idgan.py",
     "self.ema_decay * a + (1.0 - self.ema_decay) * w",
     "(1.0 - self.ema_decay) * a + self.ema_decay * w",
     [OBJECTIVES + "test_idgan_ema_follows_the_step_and_the_encoder_stays_frozen"]),
    ("D loss averaged per replica, not over the global batch", "idgan.py",
     "d_loss = tf.nn.compute_average_loss(d_loss)",
     "d_loss = ops.mean(d_loss)",
     ["tests/test_idgan.py::test_replica_equivalence"]),
    ("TorchRMSprop with eps inside the root", "idgan.py",
     "lr * gradient / (ops.sqrt(v) + self.epsilon)",
     "lr * gradient / ops.sqrt(v + self.epsilon)",
     ["tests/test_vae.py::test_rmsprop_is_pytorchs_rmsprop"]),
    # --- metrics.py ---------------------------------------------------------------------
    ("FID without the 2 of -2 tr sqrt", "metrics.py",
     "- 2.0 * trace_sqrt)",
     "- trace_sqrt)",
     ["tests/test_metrics.py::test_frechet_distance_matches_scipy_sqrtm"]),
    ("FID of few wide samples normalised by n instead of n - 1", "metrics.py",
     "np.sqrt((n_x - 1) * (n_y - 1)))",
     "np.sqrt(n_x * n_y))",
     ["tests/test_metrics.py::"
      "test_feature_distance_of_few_wide_samples_equals_the_covariances_route"]),
    ("MIG not normalised by the factor's entropy", "metrics.py",
     "np.mean((top[0] - top[1]) / entropy.sum(axis=1))",
     "np.mean(top[0] - top[1])",
     ["tests/test_metrics.py::test_mig_matches_pairwise_reference"]),
    ("FactorVAE metric votes with the largest variance", "metrics.py",
     "np.add.at(table, (np.argmin(ratios, axis=1), fixed), 1)",
     "np.add.at(table, (np.argmax(ratios, axis=1), fixed), 1)",
     ["tests/test_metrics.py::test_factor_copies_score_perfectly"]),
    # --- data.py ------------------------------------------------------------------------
    ("natural shuffle seeded by seed + start", "data.py",
     "shuffle_seed = int(np.random.default_rng([seed, start]).integers(2**31))",
     "shuffle_seed = seed + start",
     ["tests/test_data.py::test_natural_shuffle_is_keyed_by_the_pair_seed_start"]),
    ("colour sprites with 7 levels per channel", "data.py",
     "rng.integers(0, 8, (len(binary), 1, 1, 3)) / 7.0",
     "rng.integers(0, 7, (len(binary), 1, 1, 3)) / 6.0",
     ["tests/test_data.py::test_color_variant_colours_only_the_sprite"]),
    # --- train_vae.py -------------------------------------------------------------------
    ("FactorVAE's permuted codes from the same batch", "train_vae.py",
     "stream.map(lambda x: (x[:batch_size], x[batch_size:]))",
     "stream.map(lambda x: (x[:batch_size], x[:batch_size]))",
     ["tests/test_vae.py::test_factor_vae_stream_gives_two_batches_of_batch_size_per_step"]),
    ("a resumed run restarts the data stream", "train_vae.py",
     "self.steps_done(), augment=augment)",
     "0, augment=augment)",
     ["tests/test_faults.py::"
      "test_a_resumed_stage1_run_equals_an_uninterrupted_one_and_logs_its_losses"]),
    ("a non-empty --out_dir without a run is trained into", "train_vae.py",
     'fail(f"--out_dir {self.dir} is not empty and holds no run; choose another --out_dir")',
     'print(f"--out_dir {self.dir} is not empty and holds no run; choose another --out_dir")',
     ["tests/test_bad_inputs.py"]),
    # --- train_idgan.py -----------------------------------------------------------------
    ("stage-2 traversal row i sweeps code i + 1", "train_idgan.py",
     "np.repeat(np.arange(c_dim), columns)] = np.tile(values, c_dim)",
     "np.repeat((np.arange(c_dim) + 1) % c_dim, columns)] = np.tile(values, c_dim)",
     ["tests/test_train_idgan.py::test_stage2_traversals_sweep_one_code_per_row"]),
    ("stage 1's decoder.keras loaded without a check", "train_idgan.py",
     "decoder, images = load_model(path), encoder.input_shape[1:]",
     "decoder, images = keras.models.load_model(path), encoder.input_shape[1:]",
     ["tests/test_bad_inputs.py"]),
    ("batch 24 kept at 1024 px", "train_idgan.py",
     "batch_size=64 if res <= 128 else 24 if res <= 512 else 8,",
     "batch_size=64 if res <= 128 else 24,",
     ["tests/test_train_idgan.py::test_published_defaults_per_dataset"]),
    # --- FID's own noise (metrics.py) and its reading (benchmarks/table_report.py) -----------
    ("FID spread scores the same draw every round", "metrics.py",
     "rows = rng.integers(len(x), size=len(x))",
     "rows = np.arange(len(x))",
     ["tests/test_metrics.py::test_fid_spread_follows_independent_full_size_draws"]),
    ("floor scores the first real set twice", "metrics.py",
     "return real, feature_distance(real, second)",
     "return real, feature_distance(real, real)",
     ["tests/test_metrics.py::test_floor_is_the_fid_of_the_next_disjoint_real_set"]),
    ("trace of the generated covariance", "metrics.py",
     'f"{key}_trace": np.trace(sigma),',
     'f"{key}_trace": np.trace(fake[1]),',
     ["tests/test_metrics.py::test_fid_scores_of_one_point_at_the_real_mean_are_its_trace"]),
    ("collapse judged the wrong way round", "benchmarks/table_report.py",
     'return row["fid"] >= row["fid_trace"]',
     'return row["fid"] < row["fid_trace"]',
     ["tests/test_tables.py::test_tables_print_spread_floor_and_collapse_beside_each_fid"]),
]

def copy_with_bug(target, file, original, broken):
    shutil.copytree(ROOT, target, ignore=shutil.ignore_patterns(
        ".git", "__pycache__", ".pytest_cache", "runs"))
    path = os.path.join(target, file)
    with open(path) as f:
        text = f.read()
    if text.count(original) != 1:
        sys.exit(f"planted_bugs.py: error: {file} holds the original text {original!r} "
                 f"{text.count(original)} times, not once; update the row")
    with open(path, "w") as f:
        f.write(text.replace(original, broken))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="comma-separated bug names (default: all)")
    parser.add_argument("--list", action="store_true", help="print the table and exit")
    args = parser.parse_args()
    only = [name for name in args.only.split(",") if name]
    unknown = set(only) - {bug[0] for bug in BUGS}
    if unknown:
        parser.error(f"--only: unknown bug names {sorted(unknown)}")
    rows = [bug for bug in BUGS if not only or bug[0] in only]
    if args.list:
        for name, file, _, _, tests in rows:
            print(f"{file:15} {name:62} {' '.join(tests)}")
        return
    with tempfile.TemporaryDirectory() as scratch:  # every original text checked first
        for k, (_, file, original, broken, _) in enumerate(rows):
            copy_with_bug(os.path.join(scratch, str(k)), file, original, broken)
    missed, start = 0, time.monotonic()
    for name, file, original, broken, tests in rows:
        with tempfile.TemporaryDirectory() as scratch:
            copy = os.path.join(scratch, "repo")
            copy_with_bug(copy, file, original, broken)
            began = time.monotonic()
            result = subprocess.run(
                [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                cwd=copy, capture_output=True, text=True,
                env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        verdict = {0: "MISSED", 1: "caught"}.get(result.returncode,
                                                 f"ERROR (pytest {result.returncode})")
        missed += verdict != "caught"
        tests_named = " ".join(t.split("::")[-1] for t in tests)
        print(f"{verdict:18} {time.monotonic() - began:5.0f} s  {file:14} {name}  [{tests_named}]",
              flush=True)
        if verdict.startswith("ERROR"):
            print("    " + "\n    ".join(result.stdout.strip().splitlines()[-5:]), flush=True)
    print(f"{len(rows) - missed} of {len(rows)} caught in {time.monotonic() - start:.0f} s")
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
