"""LNNBaseline and the Euler-Lagrange acceleration kernel (spec §7) against analytic Lagrangians."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffgal.lagrangian import (
    DoublePendulum,
    KeplerPolar,
    helmholtz_residuals,
    solve_second_order,
)
from diffgal.lagrangian._lnn import LNNBaseline, euler_lagrange_acceleration

GM = math.pi**2 / 4
GAMMA = 0.4
K = jnp.array([1.3, 0.7])


def harmonic(t, q, v):
    return 0.5 * jnp.sum(v**2) - 0.5 * jnp.sum(q**2)


def kepler(t, q, v):
    r, dr, dphi = q[0], v[0], v[1]
    return 0.5 * (dr**2 + r**2 * dphi**2) + GM / r


def caldirola_kanai(t, q, v):
    return jnp.exp(GAMMA * t) * (0.5 * jnp.sum(v**2) - 0.5 * jnp.sum(K * q**2))


def double_pendulum(t, q, v, g=9.81):
    (t1, t2), (w1, w2) = q, v
    kinetic = w1**2 + 0.5 * w2**2 + w1 * w2 * jnp.cos(t1 - t2)
    return kinetic + 2 * g * jnp.cos(t1) + g * jnp.cos(t2)


CASES = {
    "harmonic": (harmonic, lambda t, q, v: -q),
    "kepler": (kepler, KeplerPolar(gm=GM).force),
    "caldirola_kanai": (caldirola_kanai, lambda t, q, v: -K * q - GAMMA * v),
    "double_pendulum": (double_pendulum, DoublePendulum().force),
}


@pytest.mark.parametrize("method", ["solve", "lstsq"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_acceleration_matches_analytic(name, method):
    lagrangian, force = CASES[name]
    key_t, key_q, key_v = jax.random.split(jax.random.key(0), 3)
    ts = jax.random.uniform(key_t, (50,), minval=0.0, maxval=2.0)
    qs = jax.random.uniform(key_q, (50, 2), minval=0.5, maxval=1.5)
    vs = jax.random.uniform(key_v, (50, 2), minval=-1.0, maxval=1.0)
    accel = jax.jit(
        jax.vmap(lambda t, q, v: euler_lagrange_acceleration(lagrangian, t, q, v, method=method))
    )
    np.testing.assert_allclose(accel(ts, qs, vs), jax.vmap(force)(ts, qs, vs), atol=1e-10)


def test_lnn_is_euler_lagrange_and_solves():
    lnn = LNNBaseline(2, width=32, key=jax.random.key(1))
    t, q, v = jnp.asarray(0.3), jnp.array([0.2, -0.5]), jnp.array([0.7, 0.1])
    a = lnn(t, q, v)
    np.testing.assert_allclose(a, euler_lagrange_acceleration(lnn.lagrangian, t, q, v))
    # An LNN is Euler-Lagrange by construction: its velocity Hessian is a multiplier.
    g = jax.hessian(lnn.lagrangian, argnums=2)
    for r in eqx.filter_jit(helmholtz_residuals)(lnn, g, t, q, v):
        assert float(jnp.max(jnp.abs(r))) <= 1e-10
    # It plugs into the second-order solver as a force law.
    sol = solve_second_order(lnn, jnp.linspace(0.0, 0.5, 6), q, v)
    assert sol.qs.shape == (6, 2) and bool(jnp.all(jnp.isfinite(sol.qs)))
    # Layer-wise scaled initialisation: zero biases, weights ~ N(0, 1/fan_in).
    first = lnn.mlp.layers[0]
    assert not np.any(np.asarray(first.bias))
    assert abs(float(jnp.std(first.weight)) * math.sqrt(first.weight.shape[1]) - 1) < 0.25


def test_lnn_errors():
    with pytest.raises(ValueError, match="`method` must be 'solve' or 'lstsq'"):
        LNNBaseline(2, method="qr", key=jax.random.key(0))
    with pytest.raises(ValueError, match="expected a scalar `t`"):
        euler_lagrange_acceleration(harmonic, 0.0, jnp.ones((2, 2)), jnp.ones((2, 2)))
