"""`calibrate`: bad held-out pairs are rejected before any draw, naming the argument."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffgal.chemistry import SBI_CHEMPY_COLUMNS
from diffgal.inference import GLOBAL_NAMES, ChemistryPrior, Posterior, calibrate


def _unused_posterior():
    """A `Posterior` shell without a flow: the checks run before the flow is touched."""
    return Posterior(
        flow=None,
        prior=ChemistryPrior(),
        u_mean=jnp.zeros(2),
        u_std=jnp.ones(2),
        x_mean=jnp.zeros(8),
        x_std=jnp.ones(8),
        params=GLOBAL_NAMES,
        x_columns=SBI_CHEMPY_COLUMNS,
        config=(("noise", 0.05),),
    )


THETA = np.tile([-2.3, -2.89, -0.3, 0.55, 0.5, 7.0], (4, 1))
X = np.zeros((4, 8))


@pytest.mark.parametrize(
    ("theta", "x", "match"),
    [
        (THETA[:, :2], X, r"`calibrate`: `theta` must have shape \(n, 6\).*got shape \(4, 2\)"),
        (THETA[:0], X[:0], r"`theta` must have shape \(n, 6\) with n >= 1"),
        (THETA, X[:3], r"`calibrate`: `x` must have shape \(4, 8\).*got shape \(3, 8\)"),
        (THETA, X[:, :7], r"`x` must have shape \(4, 8\).*\[C/Fe\]"),
        (np.where(np.eye(4, 6) > 0, np.nan, THETA), X, r"`theta` has NaN/inf entries in 4 rows"),
        (THETA, np.where(np.eye(4, 8) > 0, np.inf, X), r"`x` has NaN/inf entries in 4 rows"),
        (
            np.c_[THETA[:, :5], [7.0, 13.5, 1.0, 7.0]],
            X,
            r"2 rows of `theta` lie outside the posterior's prior support.*first: \[1, 2\]",
        ),
    ],
)
def test_bad_pairs_raise_naming_the_argument(theta, x, match):
    with pytest.raises(ValueError, match=match):
        calibrate(jax.random.key(0), _unused_posterior(), theta, x, n_draws=10)
