"""vae.py and idgan.py each work alone: copied into an empty folder, with only third-party
packages beside them, each trains one step (the README's "Files": copy one into teaching
material). metrics.py's library is checked the same way in tests/test_metrics.py."""
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPTS = {
    "vae.py": """
import sys, numpy as np, keras, vae
x = np.random.default_rng(0).random((4, 32, 32, 1), dtype=np.float32)
model = vae.BetaVAE(vae.build_encoder(3, 32), vae.build_decoder(3, 32), beta=4.0, seed=0)
model.compile(optimizer=vae.adam(1e-3))
logs = model.train_on_batch(x, return_dict=True)
factor = vae.FactorVAE(vae.build_encoder(3, 32), vae.build_decoder(3, 32),
                       vae.build_tc_discriminator(3), gamma=10.0, seed=0)
factor.compile(vae.adam(1e-3), vae.tc_optimizer())
factor_logs = factor.train_on_batch(x, x[::-1], return_dict=True)
assert np.isfinite(logs["loss"]) and np.isfinite(factor_logs["tc"])
print(sorted(m for m in sys.modules if m in ("data", "idgan", "metrics", "train_vae")))
""",
    "idgan.py": """
import sys, numpy as np, keras, idgan
x = np.random.default_rng(0).random((4, 32, 32, 1), dtype=np.float32)
encoder = keras.Sequential([keras.Input((32, 32, 1)), keras.layers.Flatten(),
                            keras.layers.Dense(6)])
model = idgan.IDGAN(idgan.build_conv_generator(3, 2, 32), idgan.build_conv_discriminator(32),
                    encoder, nuisance_dim=2, c_dim=3, seed=0)
model.compile(idgan.rmsprop(1e-3), idgan.rmsprop(1e-4))
logs = model.train_on_batch(x, return_dict=True)
assert all(np.isfinite(v) for v in logs.values()) and "distill_nll" in logs
print(sorted(m for m in sys.modules if m in ("data", "vae", "metrics", "train_vae")))
""",
}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_the_file_works_alone(tmp_path, name):
    shutil.copy(os.path.join(ROOT, name), tmp_path / name)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    script = "import sys; sys.path.insert(0, '.')\n" + SCRIPTS[name]  # -I: only this folder
    result = subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"  # no other project module
