"""Explicit-likelihood baselines: hierarchical NUTS and the joint MAP agree on an emulator world."""

import jax
import numpy as np
import pytest

from diffgal.chemistry import CHEMPY_COLUMNS, SBI_CHEMPY_COLUMNS, THETA_COLUMNS
from diffgal.inference import (
    ChemistryPrior,
    check_observations,
    fit_emulator,
    hierarchical_nuts,
    map_fit,
)


def test_nuts_and_map_recover_the_globals_of_an_emulator_world():
    prior = ChemistryPrior()
    theta = np.asarray(prior.sample(jax.random.key(0), (4000,)))
    a = np.linspace(-0.6, 0.6, 54).reshape(6, 9)
    x = np.tanh(((theta - np.r_[prior.loc, 7.4]) / np.r_[prior.scale, 3.0]) @ a * 0.4)
    emu = fit_emulator(
        jax.random.key(1), theta, x, width_sizes=(16,), max_epochs=5, show_progress=False
    ).emulator
    # Mock stars from the emulator itself, so both methods share the exact likelihood.
    n = 12
    stars = np.array(prior.sample(jax.random.key(2), (n,)))
    stars[:, :2] = (-2.3, -2.89)
    cols = [CHEMPY_COLUMNS.index(c) for c in SBI_CHEMPY_COLUMNS]
    x_obs = np.asarray(emu(stars))[:, cols]
    x_obs = x_obs + 0.05 * np.asarray(jax.random.normal(jax.random.key(3), x_obs.shape))
    nuts = hierarchical_nuts(
        jax.random.key(4), x_obs, emu, num_warmup=200, num_samples=200, num_chains=2
    )
    mp = map_fit(jax.random.key(5), x_obs, emulator=emu, steps=300)
    sd = np.sqrt(np.diag(nuts.cov))
    assert np.all(np.abs(nuts.mean - (-2.3, -2.89)) < 4 * sd)
    assert max(nuts.info["r_hat"].values()) < 1.05
    assert nuts.info["divergences"] <= 5
    # The Laplace width of the MAP agrees with the NUTS width; the modes are close.
    np.testing.assert_allclose(np.sqrt(np.diag(mp.cov)), sd, rtol=0.35)
    assert np.all(np.abs(mp.mean - nuts.mean) < sd)


def test_observation_errors():
    good = np.zeros((3, 8))
    with pytest.raises(ValueError, match=r"`x_obs` must have shape \(n_star, 8\)"):
        check_observations("f", good[:, :7])
    with pytest.raises(ValueError, match="`x_obs` holds no stars"):
        check_observations("f", good[:0])
    with pytest.raises(ValueError, match="NaN/inf entries in 1 rows"):
        check_observations("f", np.where(np.arange(24).reshape(3, 8) == 9, np.nan, good))
    assert check_observations("f", good).shape == (3, 8)
    # A custom column set is named in the message, not counted.
    message = r"\(n_star, 2\) with columns Fe_H, O_Fe; got shape \(3, 8\)"
    with pytest.raises(ValueError, match=message):
        check_observations("f", good, ("Fe_H", "O_Fe"))


def test_hierarchical_nuts_rejects_a_mismatched_table_or_emulator():
    from diffgal.inference import Emulator

    emu = Emulator(width_sizes=(2,), key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"`hierarchical_nuts`: `x_obs` must have shape \(n_sta"):
        hierarchical_nuts(jax.random.key(1), np.zeros((3, 7)), emu)
    with pytest.raises(ValueError, match=r"`x_obs` must have shape \(n_star, 2\)"):
        hierarchical_nuts(jax.random.key(1), np.zeros((3, 8)), emu, x_columns=("[Fe/H]", "[O/Fe]"))
    with pytest.raises(ValueError, match=r"`x_columns` \['\[Zn/Fe\]'\] are not outputs"):
        hierarchical_nuts(jax.random.key(1), np.zeros((3, 1)), emu, x_columns=("[Zn/Fe]",))
    five = Emulator(width_sizes=(2,), theta_columns=THETA_COLUMNS[:5], key=jax.random.key(0))
    with pytest.raises(ValueError, match="`emulator` must take the `THETA_COLUMNS`"):
        hierarchical_nuts(jax.random.key(1), np.zeros((3, 8)), five)
