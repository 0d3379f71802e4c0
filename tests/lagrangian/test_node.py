"""NeuralSecondOrderODE: normaliser chain rule (spec §9.7), the solver through the model (§9.8),
the curriculum and input errors (issue 5, point 6)."""

import math

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffgal.lagrangian import DampedOscillator, KeplerPolar, helmholtz_residuals
from diffgal.lagrangian._lnode import LagrangianNeuralODE
from diffgal.lagrangian._node import (
    NeuralSecondOrderODE,
    Normaliser,
    curriculum_fraction,
    curriculum_length,
    fit_normaliser,
    window_times,
)
from diffgal.lagrangian._train import train_lnode

NZ = Normaliser(q_mean=[0.3, -0.2], q_scale=[2.0, 0.5], t_mean=0.4, t_scale=0.7)


def test_fit_normaliser_moments():
    rng = np.random.default_rng(0)
    ts = np.linspace(1.0, 3.0, 11)
    qs = rng.normal([1.0, -4.0], [0.5, 3.0], size=(40, 11, 2))
    nz = fit_normaliser(ts, qs)
    np.testing.assert_allclose(nz.q_mean, qs.reshape(-1, 2).mean(0), rtol=1e-12)
    np.testing.assert_allclose(nz.q_scale, qs.reshape(-1, 2).std(0), rtol=1e-12)
    np.testing.assert_allclose(nz.t_to(ts).mean(), 0.0, atol=1e-12)
    np.testing.assert_allclose(nz.t_to(ts).std(), 1.0, rtol=1e-12)
    # A constant component gets scale 1 rather than 0.
    qs[..., 1] = 2.0
    assert float(fit_normaliser(ts, qs).q_scale[1]) == 1.0


def test_normaliser_round_trips_and_chain_rule():
    rng = np.random.default_rng(1)
    t, q, v, a = rng.normal(size=()), rng.normal(size=2), rng.normal(size=2), rng.normal(size=2)
    np.testing.assert_allclose(NZ.t_from(NZ.t_to(t)), t, atol=1e-6)
    np.testing.assert_allclose(NZ.q_from(NZ.q_to(q)), q, atol=1e-6)
    np.testing.assert_allclose(NZ.v_from(NZ.v_to(v)), v, atol=1e-6)
    np.testing.assert_allclose(NZ.a_from(NZ.a_to(a)), a, atol=1e-6)

    # ṽ and ã are the derivatives of q̃(t̃) along a curve: the chain-rule maps of spec §5.
    curve = lambda t: jnp.stack([jnp.sin(2.0 * t), jnp.cos(3.0 * t) * t])
    curve_n = lambda tn: NZ.q_to(curve(NZ.t_from(tn)))
    tn = NZ.t_to(0.9)
    np.testing.assert_allclose(jax.jacfwd(curve_n)(tn), NZ.v_to(jax.jacfwd(curve)(0.9)), rtol=1e-12)
    np.testing.assert_allclose(
        jax.jacfwd(jax.jacfwd(curve_n))(tn),
        NZ.a_to(jax.jacfwd(jax.jacfwd(curve))(0.9)),
        rtol=1e-12,
    )
    # force_to and force_from are inverse.
    force = lambda t, q, v: jnp.stack([q[0] * v[1] - t, jnp.sin(q[1]) - v[0] ** 2])
    back = NZ.force_from(NZ.force_to(force))
    np.testing.assert_allclose(back(t, q, v), force(t, q, v), rtol=1e-12)


@pytest.mark.parametrize("system", [KeplerPolar(), DampedOscillator()], ids=["kepler", "damped"])
def test_residuals_vanish_in_normalised_coordinates(system):
    """Spec §9.7: EL-ness is affine invariant with g̃ = S g S / s_t (pitfall 5)."""
    ts, qs, vs = system.sample_points(jax.random.key(0), 100)
    force_n = NZ.force_to(system.force)
    g_n = NZ.multiplier_to(system.multiplier)
    res = jax.vmap(helmholtz_residuals, in_axes=(None, None, 0, 0, 0))(
        force_n, g_n, NZ.t_to(ts), NZ.q_to(qs), NZ.v_to(vs)
    )
    for r in res:
        assert float(jnp.max(jnp.abs(r))) <= 1e-10


class _Constant(eqx.Module):
    value: jax.Array

    def __call__(self, x):
        return self.value


def _oscillator_model(omega, v0, *, dtype=jnp.float64):
    model = NeuralSecondOrderODE(2, normaliser=NZ, rtol=1e-9, atol=1e-9, key=jax.random.key(0))
    # The analytic oscillator about q = 0, written in the model's normalised coordinates.
    force_n = NZ.force_to(lambda t, q, v: -(omega**2) * q)

    class _Force(eqx.Module):
        def __call__(self, t, q, v):
            return force_n(t, q, v)

    model = eqx.tree_at(lambda m: m.force, model, _Force())
    model = eqx.tree_at(lambda m: m.v0_net, model, _Constant(NZ.v_to(jnp.asarray(v0))))
    return model


def test_model_reproduces_analytic_oscillator():
    """Spec §9.8 through the model: (q, v) ODETerm + Tsit5, normaliser and v0 path, 1e-6."""
    omega = 2 * math.pi
    q0, v0 = np.array([1.0, -0.5]), np.array([0.3, 2.0])
    model = _oscillator_model(omega, v0)
    ts = np.linspace(0.1, 2.1, 41)
    dt = ts - ts[0]
    exact_q = q0 * np.cos(omega * dt)[:, None] + (v0 / omega) * np.sin(omega * dt)[:, None]
    exact_v = -q0 * omega * np.sin(omega * dt)[:, None] + v0 * np.cos(omega * dt)[:, None]
    sol = model.trajectory(ts, q0)
    assert bool(sol.result == diffrax.RESULTS.successful)
    np.testing.assert_allclose(sol.qs, exact_q, atol=1e-6)
    np.testing.assert_allclose(sol.vs, exact_v, atol=1e-6)
    np.testing.assert_allclose(model.predict(ts, q0), sol.qs, rtol=0, atol=0)
    np.testing.assert_allclose(model(ts, q0[None]), sol.qs, rtol=0, atol=0)
    # The physical acceleration is the analytic force.
    np.testing.assert_allclose(model.acceleration(0.3, q0, v0), -(omega**2) * q0, rtol=1e-12)


def test_predict_float32():
    model = NeuralSecondOrderODE(2, normaliser=NZ, key=jax.random.key(0))
    model = jax.tree_util.tree_map(
        lambda x: x.astype(jnp.float32) if eqx.is_inexact_array(x) else x, model
    )
    ts = np.linspace(0.0, 1.0, 5, dtype=np.float32)
    qs = model.predict(ts, np.array([1.0, 0.5], np.float32))
    assert qs.dtype == jnp.float32 and qs.shape == (5, 2)
    assert bool(jnp.all(jnp.isfinite(qs)))


def test_v0_from_first_positions():
    model = NeuralSecondOrderODE(2, n_v0_points=3, key=jax.random.key(0))
    assert model.v0_net.in_size == 6
    ts = np.linspace(0.0, 1.0, 6)
    assert model.predict(ts, np.ones((3, 2))).shape == (6, 2)
    with pytest.raises(ValueError, match=r"`q0` must have shape \(3, 2\)"):
        model.predict(ts, np.ones(2))
    # infer_q0: a q0 net (last layer zero at initialisation) corrects the first observation.
    denoised = NeuralSecondOrderODE(2, n_v0_points=3, infer_q0=True, key=jax.random.key(0))
    first = np.array([[1.0, 0.5], [1.1, 0.4], [1.2, 0.3]])
    np.testing.assert_array_equal(denoised.predict(ts, first)[0], first[0])
    assert NeuralSecondOrderODE(2, key=jax.random.key(0)).q0_net is None


def test_curriculum():
    assert float(curriculum_fraction(0, 1200.0)) == pytest.approx(0.1, rel=1e-12)
    assert float(curriculum_fraction(1200, 1200.0)) == pytest.approx(0.5, rel=1e-12)
    assert int(curriculum_length(0, 150, 1200.0)) == 15
    assert int(curriculum_length(0, 10, 1200.0)) == 2  # max(2, ⌈0.1·10⌉)
    assert int(curriculum_length(6000, 150, 1200.0)) == 150  # r > 0.999
    assert int(curriculum_length(0, 150, None)) == 150
    lengths = [int(curriculum_length(s, 150, 1200.0)) for s in range(0, 6000, 100)]
    assert lengths == sorted(lengths)


def test_window_times():
    tn = jnp.linspace(-1.0, 1.0, 10)
    for window in (2, 5, 9, 10):
        tw = window_times(tn, jnp.asarray(window))
        np.testing.assert_array_equal(tw[:window], tn[:window])
        assert bool(jnp.all(jnp.diff(tw) > 0))
        if window < 10:
            assert float(tw[-1]) < float(tn[window])


def test_input_errors():
    key = jax.random.key(0)
    model = NeuralSecondOrderODE(2, key=key)
    with pytest.raises(ValueError, match="`q0` must have shape"):
        model.predict(np.linspace(0, 1, 5), np.ones(3))
    with pytest.raises(ValueError, match="`ts` must be 1-D"):
        model.predict(np.ones((5, 2)), np.ones(2))
    with pytest.raises(Exception, match="strictly increasing"):
        model.predict(np.array([0.0, 0.5, 0.4, 1.0]), np.ones(2))
    with pytest.raises(ValueError, match=r"`n` must be >= 2.*variational \(Darboux\)"):
        LagrangianNeuralODE(1, key=key)
    with pytest.raises(ValueError, match="normaliser is for n = 2"):
        NeuralSecondOrderODE(3, normaliser=NZ, key=key)
    with pytest.raises(ValueError, match="`Normaliser`: `q_mean` and `q_scale`"):
        Normaliser([0.0, 0.0], [1.0])
    with pytest.raises(ValueError, match="finite"):
        fit_normaliser(np.linspace(0, 1, 3), np.full((2, 3, 2), np.nan))

    ts = np.linspace(0.0, 1.0, 4)
    qs = np.ones((3, 4, 2))
    with pytest.raises(ValueError, match=r"`qs` must have shape \(n_traj, n_time, n\)"):
        train_lnode(key, model, ts, qs[..., :1], steps=1, show_progress=False)
    with pytest.raises(ValueError, match="`ts` must be finite and strictly increasing"):
        train_lnode(key, model, ts[::-1], qs, steps=1, show_progress=False)
    bad = qs.copy()
    bad[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match=r"`qs` holds NaN or inf in 1 trajectories \(first: "):
        train_lnode(key, model, ts, bad, steps=1, show_progress=False)
    with pytest.raises(ValueError, match="`lam` must be 0"):
        train_lnode(key, model, ts, qs, steps=1, lam=1.0, show_progress=False)
    with pytest.raises(TypeError, match="`model` must be a NeuralSecondOrderODE"):
        train_lnode(key, object(), ts, qs, steps=1, show_progress=False)
