"""Test systems, the second-order solve and the noisy-trajectory generator (spec §6, §9.8)."""

import math

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffgal.lagrangian import (
    AbstractSystem,
    CurlForce,
    DampedOscillator,
    DoublePendulum,
    DouglasCaseIIIb,
    DouglasCaseIV,
    HarmonicOscillator,
    KeplerPolar,
    RotatingFrame,
    SamplingBox,
    semi_implicit_euler_ok,
    simulate,
    solve_second_order,
)

#: Every concrete system (contract tests run over this registry).
SYSTEMS = {
    "harmonic": HarmonicOscillator(),
    "damped": DampedOscillator(),
    "kepler": KeplerPolar(),
    "double_pendulum": DoublePendulum(),
    "curl": CurlForce(),
    "rotating_frame": RotatingFrame(),
    "case_iiib": DouglasCaseIIIb(),
    "case_iv": DouglasCaseIV(),
}
NON_VARIATIONAL = {"case_iiib", "case_iv"}


@pytest.mark.parametrize("name", sorted(SYSTEMS))
def test_system_contract(name):
    system = SYSTEMS[name]
    assert isinstance(system, AbstractSystem) and system.n == 2
    ts, qs, vs = system.sample_points(jax.random.key(0), 64)
    box = system.box
    assert ts.shape == (64,) and qs.shape == vs.shape == (64, 2)
    assert np.all((ts >= box.t[0]) & (ts <= box.t[1]))
    assert np.all((qs >= np.array(box.q_low)) & (qs <= np.array(box.q_high)))
    assert np.all((vs >= np.array(box.v_low)) & (vs <= np.array(box.v_high)))

    @eqx.filter_jit
    def evaluate(system, ts, qs, vs):
        force = jax.vmap(system.force)(ts, qs, vs)
        grads = jax.vmap(jax.jacfwd(system.force, argnums=(0, 1, 2)))(ts, qs, vs)
        g = None if system.multiplier is None else jax.vmap(system.multiplier)(ts, qs, vs)
        return force, grads, g

    force, grads, g = evaluate(system, ts, qs, vs)
    assert force.shape == (64, 2) and np.all(np.isfinite(force))
    assert all(np.all(np.isfinite(x)) for x in grads)
    f32 = evaluate(system, *(x.astype(jnp.float32) for x in (ts, qs, vs)))[0]
    assert f32.dtype == jnp.float32

    if name in NON_VARIATIONAL:
        assert system.multiplier is None and g is None
    else:
        assert g.shape == (64, 2, 2)
        np.testing.assert_array_equal(g, jnp.swapaxes(g, 1, 2))
        assert np.all(np.abs(np.linalg.det(np.asarray(g))) > 0)

    q0, v0 = system.sample_initial_conditions(jax.random.key(1), 5)
    assert q0.shape == v0.shape == (5, 2) and np.all(np.isfinite(q0)) and np.all(np.isfinite(v0))
    times = system.times()
    assert times.ndim == 1 and times[0] == system.time_grid[0] and len(times) > 1
    assert len(system.times(7)) == 7


def test_sampling_box_errors():
    with pytest.raises(ValueError, match="same length"):
        SamplingBox((0, 1), (0, 0), (1, 1), (0,), (1, 1))
    with pytest.raises(ValueError, match="lower bound must be below"):
        SamplingBox((1, 0), (0, 0), (1, 1), (0, 0), (1, 1))


def test_default_parameters_match_the_spec():
    omega = 2 * math.pi * 3 / 4
    damped = DampedOscillator()
    np.testing.assert_allclose(damped.stiffness, [(0.8 * omega) ** 2, omega**2])
    np.testing.assert_allclose(damped.damping, [0.4 * omega, 0.5 * omega])
    assert float(KeplerPolar().gm) == pytest.approx(math.pi**2 / 4)
    np.testing.assert_allclose(HarmonicOscillator().omega, [2 * math.pi * 6] * 2)


# -- spec §9.8: the solver ------------------------------------------------------------------------


def _oscillator_exact(omega, q0, v0, ts):
    return (
        q0 * jnp.cos(omega * ts[:, None]) + v0 / omega * jnp.sin(omega * ts[:, None]),
        -q0 * omega * jnp.sin(omega * ts[:, None]) + v0 * jnp.cos(omega * ts[:, None]),
    )


def test_tsit5_reproduces_the_analytic_oscillator():
    omega = jnp.array([2.0, 3.5])
    system = HarmonicOscillator(omega=omega)
    q0, v0 = jnp.array([1.0, -0.5]), jnp.array([0.3, 0.7])
    ts = jnp.linspace(0.0, 5.0, 51)
    qs, vs, result = solve_second_order(system.force, ts, q0, v0, rtol=1e-9, atol=1e-9)
    assert result == diffrax.RESULTS.successful
    q_exact, v_exact = _oscillator_exact(omega, q0, v0, ts)
    assert float(jnp.max(jnp.abs(qs - q_exact))) <= 1e-6
    assert float(jnp.max(jnp.abs(vs - v_exact))) <= 1e-6


def test_tsit5_reproduces_the_analytic_damped_oscillator():
    k, gamma = 4.0, 0.6
    system = DampedOscillator(stiffness=k, damping=gamma)
    q0, v0 = jnp.array([1.0, 0.2]), jnp.array([0.0, -1.0])
    ts = jnp.linspace(0.0, 4.0, 41)
    qs, _, _ = solve_second_order(system.force, ts, q0, v0, rtol=1e-9, atol=1e-9)
    wd = math.sqrt(k - gamma**2 / 4)
    decay = jnp.exp(-gamma * ts[:, None] / 2)
    exact = decay * (
        q0 * jnp.cos(wd * ts[:, None]) + (v0 + gamma * q0 / 2) / wd * jnp.sin(wd * ts[:, None])
    )
    assert float(jnp.max(jnp.abs(qs - exact))) <= 1e-6


def test_gradient_through_the_solve_matches_analytic_for_every_adjoint():
    """d q(T) / d ω through diffrax, with the force (an eqx.Module) passed as `args`."""
    q0, v0, ts = jnp.array([1.0, 0.5]), jnp.array([0.2, -0.3]), jnp.array([0.0, 0.7, 1.3])

    def q_end(system, adjoint):
        sol = solve_second_order(system.force, ts, q0, v0, rtol=1e-10, atol=1e-10, adjoint=adjoint)
        return jnp.sum(sol.qs[-1])

    omega, T = 1.7, ts[-1]
    exact = (
        -q0 * T * jnp.sin(omega * T) - v0 / omega**2 * jnp.sin(omega * T)
        + v0 / omega * T * jnp.cos(omega * T)
    )  # fmt: skip
    system = HarmonicOscillator(omega=omega)
    # BacksolveAdjoint differentiates only args and y0: it works because the force is `args`.
    # (The default RecursiveCheckpointAdjoint is exercised by the training tests.)
    grad = eqx.filter_jit(eqx.filter_grad(q_end))(system, diffrax.BacksolveAdjoint())
    np.testing.assert_allclose(grad.omega, exact, rtol=1e-6)


def test_semi_implicit_euler_only_for_separable_forces():
    harmonic, damped = HarmonicOscillator(omega=2.0), DampedOscillator()
    assert (
        float(semi_implicit_euler_ok(harmonic.force, harmonic.sample_points(jax.random.key(2), 16)))
        == 0.0
    )
    with pytest.raises(ValueError, match="SemiImplicitEuler.*∂F/∂v"):
        semi_implicit_euler_ok(damped.force, damped.sample_points(jax.random.key(3), 16))
    for system in (KeplerPolar(), RotatingFrame()):  # polar and Coriolis terms read v
        with pytest.raises(ValueError, match="separable"):
            semi_implicit_euler_ok(system.force, system.sample_points(jax.random.key(4), 16))
    q0, v0, ts = jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0]), jnp.linspace(0.0, 2.0, 5)
    with pytest.raises(ValueError, match="SemiImplicitEuler needs a separable force"):
        solve_second_order(damped.force, ts, q0, v0, solver=diffrax.SemiImplicitEuler(), dt0=1e-3)
    # Under jit the same check is a runtime error.
    jitted = eqx.filter_jit(
        lambda q0: (
            solve_second_order(
                damped.force, ts, q0, v0, solver=diffrax.SemiImplicitEuler(), dt0=1e-3
            ).qs
        )
    )
    with pytest.raises(RuntimeError, match="separable"):
        jitted(q0)
    qs, _, _ = solve_second_order(
        harmonic.force, ts, q0, v0, solver=diffrax.SemiImplicitEuler(), dt0=1e-3
    )
    exact, _ = _oscillator_exact(jnp.array(2.0), q0, v0, ts)
    assert float(jnp.max(jnp.abs(qs - exact))) <= 5e-3  # first order, symplectic
    with pytest.raises(ValueError, match="needs `dt0`"):
        solve_second_order(harmonic.force, ts, q0, v0, solver=diffrax.SemiImplicitEuler())


def test_solve_errors_name_the_argument():
    F = HarmonicOscillator().force
    q0, v0 = jnp.ones(2), jnp.zeros(2)
    with pytest.raises(ValueError, match="`ts` must be strictly increasing"):
        solve_second_order(F, jnp.array([0.0, 0.5, 0.5, 1.0]), q0, v0)
    with pytest.raises(ValueError, match="`ts` must be a 1-D array"):
        solve_second_order(F, jnp.zeros((2, 3)), q0, v0)
    with pytest.raises(ValueError, match="`q0` and `v0` must both have shape"):
        solve_second_order(F, jnp.linspace(0, 1, 3), q0, jnp.zeros(3))
    with pytest.raises(ValueError, match="must be finite"):
        solve_second_order(F, jnp.linspace(0, 1, 3), jnp.array([jnp.nan, 1.0]), v0)
    with pytest.raises(ValueError, match="`t0` must not exceed"):
        solve_second_order(F, jnp.linspace(0, 1, 3), q0, v0, t0=0.5)
    jitted = jax.jit(lambda ts: solve_second_order(F, ts, q0, v0).qs)
    with pytest.raises(RuntimeError, match="strictly increasing"):
        jitted(jnp.array([0.0, 0.2, 0.1]))


def test_solve_throw_false_reports_failure():
    blowup = lambda t, q, v: q**3  # finite-time blow-up
    sol = solve_second_order(blowup, jnp.linspace(0.0, 10.0, 3), jnp.ones(2), jnp.ones(2),
                             max_steps=64, throw=False)  # fmt: skip
    assert sol.result != diffrax.RESULTS.successful


# -- the noisy-trajectory generator -----------------------------------------------------------


def test_simulate_kepler_conserves_energy_and_angular_momentum():
    system = KeplerPolar()
    data = simulate(jax.random.key(5), system, 3, jnp.linspace(0.0, 8.0, 200), noise=0.05)
    assert data.qs.shape == data.qs_noisy.shape == data.vs.shape == (3, 200, 2)
    r, dr, dphi = data.qs[..., 0], data.vs[..., 0], data.vs[..., 1]
    energy = 0.5 * (dr**2 + r**2 * dphi**2) - system.gm / r
    momentum = r**2 * dphi
    assert float(jnp.max(jnp.abs(energy - energy[:, :1]))) <= 1e-6
    assert float(jnp.max(jnp.abs(momentum - momentum[:, :1]))) <= 1e-6
    np.testing.assert_array_equal(data.vs_noisy, data.vs)  # velocity_noise=0


def test_simulate_noise_convention():
    system = HarmonicOscillator(omega=3.0)
    data = simulate(jax.random.key(6), system, 64, noise=0.05, velocity_noise=0.02)
    for clean, noisy, level in ((data.qs, data.qs_noisy, 0.05), (data.vs, data.vs_noisy, 0.02)):
        expected = level * np.mean(np.abs(np.asarray(clean)), axis=(0, 1))
        measured = np.std(np.asarray(noisy - clean), axis=(0, 1))
        np.testing.assert_allclose(measured, expected, rtol=0.05)
    # the clean trajectories are the exact oscillator
    q_exact, _ = jax.vmap(lambda q0, v0: _oscillator_exact(jnp.array(3.0), q0, v0, data.ts))(
        data.qs[:, 0], data.vs[:, 0]
    )
    assert float(jnp.max(jnp.abs(data.qs - q_exact))) <= 1e-6
    with pytest.raises(ValueError, match="`n_traj` must be a positive integer"):
        simulate(jax.random.key(0), system, 0)
    with pytest.raises(ValueError, match="noise levels must be >= 0"):
        simulate(jax.random.key(0), system, 2, noise=-0.1)
