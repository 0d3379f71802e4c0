"""ChemistryPrior and the resumable HDF5 training sets."""

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from diffgal.inference import ChemistryPrior, load_training_set, simulate_training_set


def test_prior_moments_density_and_bijection():
    prior = ChemistryPrior()
    theta = np.asarray(prior.sample(jax.random.key(0), (40_000,)))
    np.testing.assert_allclose(theta[:, :5].mean(0), prior.loc, atol=4 * 0.3 / 200)
    np.testing.assert_allclose(theta[:, :5].std(0), prior.scale, rtol=0.03)
    assert theta[:, 5].min() >= 2.0 and theta[:, 5].max() <= 12.8
    # The density equals the product of scipy's marginals, -inf outside the box.
    row = theta[:3]
    ref = stats.norm(prior.loc, prior.scale).logpdf(row[:, :5]).sum(1) + stats.uniform(
        2.0, 10.8
    ).logpdf(row[:, 5])
    np.testing.assert_allclose(prior.log_prob(row), ref, rtol=1e-12)
    assert prior.log_prob(np.r_[row[0, :5], 13.0]) == -np.inf
    # The support bijection round-trips, and its log-det matches autodiff.
    z = prior.to_unconstrained(row)
    np.testing.assert_allclose(prior.from_unconstrained(z), row, rtol=1e-12)
    jac = jax.vmap(jax.jacfwd(prior.from_unconstrained))(z)
    np.testing.assert_allclose(
        prior.log_det_from_unconstrained(z), jnp.log(jnp.abs(jnp.linalg.det(jac))), rtol=1e-10
    )
    assert prior.global_index == (0, 1) and prior.local_index == (2, 3, 4, 5)


def test_prior_errors():
    with pytest.raises(ValueError, match="`loc` and `scale` must have shape"):
        ChemistryPrior(loc=(1.0, 2.0))
    with pytest.raises(ValueError, match="`scale` must be > 0"):
        ChemistryPrior(scale=(0.3, 0.3, 0.0, 0.1, 0.1))
    with pytest.raises(ValueError, match="last axis of size 6"):
        ChemistryPrior().log_prob(np.zeros((3, 5)))


def test_simulation_resumes_without_losing_shards(tmp_path):
    key = jax.random.key(3)
    kwargs = dict(yields="default", shard_size=40, show_progress=False)  # one shard shape
    full = simulate_training_set(key, tmp_path / "full", 120, **kwargs)
    part = tmp_path / "part"
    simulate_training_set(key, part, 120, **kwargs)
    # An interrupted run: the last shard is missing and a half-written temporary is left over.
    (part / "shard_00002.h5").unlink()
    (part / "shard_00002.h5.tmp").write_bytes(b"half")
    kept = (part / "shard_00000.h5").stat().st_mtime_ns
    with pytest.raises(ValueError, match="shard_00002.h5 .* missing or incomplete"):
        load_training_set(part)
    simulate_training_set(key, part, 120, **kwargs)
    assert (part / "shard_00000.h5").stat().st_mtime_ns == kept  # finished shard untouched
    a, b = load_training_set(full), load_training_set(part)
    np.testing.assert_array_equal(a.theta, b.theta)
    np.testing.assert_array_equal(a.x, b.x)
    assert a.theta.shape[0] + a.n_failed == 120 and a.x.shape[1] == 9
    with h5py.File(full / "shard_00001.h5") as f:
        assert f["theta"].shape == (40, 6)
    # Another setting in the same folder is an error, not a silent mix.
    with pytest.raises(ValueError, match="other settings .*n_sims"):
        simulate_training_set(key, part, 160, **kwargs)
    with pytest.raises(FileNotFoundError, match="has no manifest.json"):
        load_training_set(tmp_path / "nothing")
    with pytest.raises(ValueError, match="`n_sims` must be >= 1"):
        simulate_training_set(key, tmp_path / "x", 0, **kwargs)
