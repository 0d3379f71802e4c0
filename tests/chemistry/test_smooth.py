"""Smooth mode: close to faithful, and differentiable in all seven parameters."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffgal.chemistry import (
    DEFAULT_LOG10_TAU_IA,
    ChemistryParams,
    GCEOptions,
    chempy_columns,
    evolve,
    load_yields,
)

# Smooth-mode switches, each applied alone to faithful mode, with the largest change seen over
# prior draws (spec section 7 / reference README) plus headroom.
SWITCH_BOUNDS = {
    ("dtd", "bins"): 0.06,
    ("imf_integration", "analytic"): 0.01,
    ("lifetime_inversion", "analytic"): 1e-6,
    ("clamps", "smooth"): 1e-3,
    ("rejection", False): 1e-12,
    ("sfh_normalisation", "analytic"): 0.04,
    ("ssp_composition_lag", False): 0.04,
    ("agb_crossing_gap", False): 0.01,
    ("yield_z_extrapolation", False): 0.002,
}


def prior_draws(n, seed=0):
    """sbi-chempy's prior (T ~ U(2, 12.8) Gyr), as in the reference README."""
    rng = np.random.default_rng(seed)
    theta = np.column_stack(
        [
            rng.normal(-2.3, 0.3, n),
            rng.normal(-2.89, 0.3, n),
            rng.normal(-0.3, 0.3, n),
            np.maximum(rng.normal(0.55, 0.1, n), 0.3),
            np.clip(rng.normal(0.5, 0.1, n), 0.05, 0.95),
            rng.uniform(2.0, 12.8, n),
        ]
    )
    return theta


def _columns_fn(yields, options):
    def one(p7):
        params = ChemistryParams.from_array(p7[:6], p7[6])
        history = evolve(params, yields=yields, options=options, throw=False)
        return chempy_columns(history.x_h()[-1], yields.elements)

    return one


@pytest.fixture(scope="module")
def tng(tng_data_dir):
    return load_yields("tng", data_dir=tng_data_dir)


@pytest.fixture(scope="module")
def draws():
    theta = prior_draws(24)
    return jnp.asarray(np.column_stack([theta, np.full(len(theta), DEFAULT_LOG10_TAU_IA)]))


@pytest.fixture(scope="module")
def faithful_draws(tng, draws):
    return np.asarray(jax.jit(jax.vmap(_columns_fn(tng, GCEOptions.faithful())))(draws))


def test_smooth_close_to_faithful(faithful_draws, tng, draws):
    faithful = faithful_draws
    smooth = jax.jit(jax.vmap(_columns_fn(tng, GCEOptions.smooth())))(draws)
    delta = np.abs(np.asarray(smooth) - np.asarray(faithful))
    assert np.isfinite(delta).all()
    assert np.median(delta) <= 0.03
    assert delta.max() <= 0.08


@pytest.mark.parametrize(("switch", "value"), list(SWITCH_BOUNDS))
def test_each_smooth_switch_alone(tng, draws, faithful_draws, switch, value):
    options = dataclasses.replace(GCEOptions.faithful(), **{switch: value, "scan_segments": 1})
    changed = jax.jit(jax.vmap(_columns_fn(tng, options)))(draws)
    delta = np.abs(np.asarray(changed) - faithful_draws)
    assert np.isfinite(np.asarray(changed)).all()
    print(f"{switch}={value!r}: max {delta.max():.2e} dex, median {np.median(delta):.2e}")
    assert delta.max() <= SWITCH_BOUNDS[(switch, value)]


def _fd_points(p, rel_step=1e-5):
    """Rows p +/- h e_k for central differences, and the steps."""
    steps = np.array([rel_step * max(1.0, abs(float(x))) for x in p])
    eye = np.eye(p.shape[0]) * steps
    return jnp.concatenate([p + eye, p - eye]), steps


def _central_differences(batched_fn, points):
    """Jacobians by central differences at each row of `points`, in one batched call."""
    rows, steps = zip(*(_fd_points(p) for p in points), strict=True)
    values = np.asarray(batched_fn(jnp.concatenate(rows)))
    n = points.shape[1]
    out = []
    for i, h in enumerate(steps):
        block = values[2 * n * i : 2 * n * (i + 1)]
        out.append(((block[:n] - block[n:]) / (2 * h[:, None])).T)
    return np.stack(out)


#: Smooth preset with one scan segment: identical results (see test_segmented_scan_is_exact),
#: half the compile time.
SMOOTH = dataclasses.replace(GCEOptions.smooth(), scan_segments=1)


@pytest.fixture(scope="module")
def smooth_fn(tng):
    return _columns_fn(tng, SMOOTH)


@pytest.fixture(scope="module")
def smooth_batched(smooth_fn):
    return jax.jit(jax.vmap(smooth_fn))


def test_gradients_match_finite_differences(smooth_fn, smooth_batched, draws):
    """All 9 outputs w.r.t. all 7 parameters, incl. log10 tau_Ia and the birth time, through
    `jit(vmap(jacrev))` and `jit(vmap(jacfwd))`."""
    points = draws[jnp.array([0, 7])]
    jac_rev = np.asarray(jax.jit(jax.vmap(jax.jacrev(smooth_fn)))(points))
    jac_fwd = np.asarray(jax.jit(jax.vmap(jax.jacfwd(smooth_fn)))(points))
    fd = _central_differences(smooth_batched, points)
    assert jac_rev.shape == (2, 9, 7)
    assert np.isfinite(jac_rev).all()
    np.testing.assert_allclose(jac_fwd, jac_rev, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(jac_rev, fd, rtol=1e-4, atol=1e-7)
    # d/d log10 tau_Ia is a real gradient in smooth mode (zero in faithful mode).
    assert np.all(np.abs(jac_rev[..., 6]) > 1e-4)


def test_segmented_scan_is_exact(tng, draws):
    one = jax.jit(jax.vmap(_columns_fn(tng, GCEOptions.smooth())))(draws[:4])
    other = jax.jit(jax.vmap(_columns_fn(tng, SMOOTH)))(draws[:4])
    np.testing.assert_allclose(np.asarray(one), np.asarray(other), rtol=0, atol=1e-12)


def test_no_recompilation_across_batches(smooth_fn, draws):
    fn = eqx.filter_jit(eqx.debug.assert_max_traces(jax.vmap(smooth_fn), max_traces=1))
    fn(draws[:4])
    fn(draws[4:8])


def test_default_yields_gradients_offline():
    """The offline `default` yield set (crimsons) is differentiable too."""
    yields = load_yields("default")
    fn = _columns_fn(yields, SMOOTH)
    p = jnp.asarray([[-2.3, -2.89, -0.3, 0.55, 0.5, 8.0, DEFAULT_LOG10_TAU_IA]])
    jac = np.asarray(jax.jit(jax.vmap(jax.jacrev(fn)))(p))
    fd = _central_differences(jax.jit(jax.vmap(fn)), p)
    np.testing.assert_allclose(jac, fd, rtol=1e-4, atol=1e-7)


def test_smooth_float32(tng, draws, smooth_batched):
    out64 = np.asarray(smooth_batched(draws[:8]))
    out32 = smooth_batched(draws[:8].astype(jnp.float32))
    assert out32.dtype == jnp.float32
    assert np.abs(np.asarray(out32) - out64).max() <= 0.01
    fn = _columns_fn(tng, SMOOTH)
    grads32 = jax.jit(jax.vmap(jax.grad(lambda p: fn(p)[1])))(draws[:4].astype(jnp.float32))
    assert grads32.dtype == jnp.float32
    assert np.isfinite(np.asarray(grads32)).all()
