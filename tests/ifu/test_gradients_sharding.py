"""Gradients (finite differences, float64), sharding on 4 fake CPU devices, and noise."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffgal.ifu import (
    StellarParticles,
    TargetSNR,
    add_noise,
    get_telescope,
    make_mesh,
    make_renderer,
    render_sharded,
    rotation_matrix,
)
from diffgal.spectra import synthetic_grid

N_DEV = 4


@pytest.fixture(scope="module")
def grid():
    return synthetic_grid()


@pytest.fixture(scope="module")
def setup(grid):
    tel = get_telescope("MUSE").replace(n_x=8, n_y=8, n_wave=300, wave_start_aa=5100.0,
                                        psf="gaussian", psf_fwhm_arcsec=0.5)
    r = make_renderer(tel, grid, distance_mpc=10.0, v_max=300.0, inclination_deg=40.0,
                      position_angle_deg=20.0, chunk_size=16)
    rng = np.random.default_rng(11)
    n = 37
    p_kpc = float(r.pixel_kpc)
    velscale = r.velscale
    # keep velocities and ages away from bin edges and grid nodes (the weights are piecewise
    # linear, so finite differences must not straddle a kink)
    v = (rng.integers(-10, 10, (n, 3)) + rng.uniform(0.2, 0.8, (n, 3))) * velscale
    age = 10 ** (np.asarray(grid.log_age_gyr)[rng.integers(0, 7, n)] + 0.1 + 0.1 * rng.random(n))
    mh = np.asarray(grid.metallicity_mh)[rng.integers(0, 3, n)] + 0.15 + 0.2 * rng.random(n)
    p = StellarParticles(
        jnp.asarray(rng.uniform(-3.3 * p_kpc, 3.3 * p_kpc, (n, 3))),
        jnp.asarray(v),
        jnp.asarray(rng.uniform(1e4, 2e4, n)),
        jnp.asarray(age),
        jnp.asarray(mh),
    )
    weights = jnp.asarray(rng.normal(size=(8, 8, 300)))
    return r, p, weights


def _loss(r, p, weights):
    return jnp.sum(weights * r(p).flux) * 1e16


@pytest.mark.parametrize("field", ["mass", "age", "metallicity", "velocity", "position"])
def test_gradients_match_central_differences(setup, field):
    r, p, weights = setup
    loss = eqx.filter_jit(lambda q: _loss(r, q, weights))
    grad = eqx.filter_jit(jax.grad(lambda q: _loss(r, q, weights)))(p)
    g = np.asarray(getattr(grad, field))
    x0 = np.asarray(getattr(p, field))
    rng = np.random.default_rng(0)
    for flat in rng.choice(x0.size, size=4, replace=False):
        idx = np.unravel_index(flat, x0.shape)
        scale = {"mass": 1e2, "age": 1e-5 * x0[idx], "metallicity": 1e-6, "velocity": 1e-3,
                 "position": 1e-6 * float(r.pixel_kpc)}[field]

        def at(delta, idx=idx):
            x = x0.copy()
            x[idx] += delta
            return float(loss(eqx.tree_at(lambda q: getattr(q, field), p, jnp.asarray(x))))

        fd = (at(scale) - at(-scale)) / (2 * scale)
        assert g[idx] == pytest.approx(fd, rel=1e-4, abs=1e-6 * np.max(np.abs(g))), (field, idx)
    assert np.any(g != 0)


def test_gradient_with_respect_to_the_viewing_angle(setup):
    r, p, weights = setup

    def loss(inc):
        return _loss(eqx.tree_at(lambda q: q.rotation, r, rotation_matrix(inc, 20.0)), p, weights)

    g = float(jax.grad(loss)(jnp.asarray(40.0)))
    fd = (float(loss(jnp.asarray(40.0 + 1e-4))) - float(loss(jnp.asarray(40.0 - 1e-4)))) / 2e-4
    assert g == pytest.approx(fd, rel=1e-4)
    assert g != 0


def test_gradient_with_respect_to_the_templates(grid):
    """The bank is linear in the template fluxes; grads flow to a template scale factor."""
    tel = get_telescope("MUSE").replace(n_x=2, n_y=2, n_wave=100)
    r = make_renderer(tel, grid, v_max=100.0)
    p = StellarParticles(jnp.zeros((1, 3)), jnp.zeros((1, 3)), jnp.ones(1) * 1e4,
                         jnp.ones(1) * 3.0, jnp.zeros(1))
    base = float(jnp.sum(r(p).flux))
    g = jax.grad(lambda s: jnp.sum(eqx.tree_at(lambda q: q.bank, r, s * r.bank)(p).flux))(1.0)
    assert float(g) == pytest.approx(base, rel=1e-12)


def test_particle_sharding_equals_single_device(setup):
    r, p, _ = setup
    assert len(jax.devices()) >= N_DEV
    single = r(p)
    sharded = render_sharded(r, p, mesh=make_mesh(N_DEV), mode="particles")
    np.testing.assert_allclose(np.asarray(sharded.flux), np.asarray(single.flux), rtol=1e-5,
                               atol=1e-5 * float(jnp.max(single.flux)))
    np.testing.assert_allclose(np.asarray(sharded.mass_map), np.asarray(single.mass_map),
                               rtol=1e-10)
    assert int(sharded.n_outside_fov) == int(single.n_outside_fov)


def test_spaxel_sharding_equals_single_device(setup):
    r, p, _ = setup
    single = r(p)
    sharded = render_sharded(r, p, mesh=make_mesh(N_DEV), mode="spaxels")
    np.testing.assert_allclose(np.asarray(sharded.flux), np.asarray(single.flux), rtol=1e-5,
                               atol=1e-5 * float(jnp.max(single.flux)))
    v1, v4 = np.asarray(single.velocity_map), np.asarray(sharded.velocity_map)
    np.testing.assert_allclose(v4[np.isfinite(v1)], v1[np.isfinite(v1)], rtol=1e-8, atol=1e-8)


def test_sharded_gradients_equal_single_device(setup):
    r, p, weights = setup
    mesh = make_mesh(N_DEV)
    g1 = jax.grad(lambda q: _loss(r, q, weights))(p)
    for mode in ("particles",):
        g4 = jax.grad(
            lambda q, mode=mode: jnp.sum(weights * render_sharded(r, q, mesh=mesh,
                                                                  mode=mode).flux) * 1e16
        )(p)
        for field in ("mass", "age", "velocity", "position"):
            a, b = np.asarray(getattr(g1, field)), np.asarray(getattr(g4, field))
            np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-9 * np.abs(a).max())


def test_unshardable_spaxel_count_raises(grid):
    tel = get_telescope("MUSE").replace(n_x=9, n_y=9, n_wave=50)
    r = make_renderer(tel, grid, v_max=100.0)
    p = StellarParticles(jnp.zeros((2, 3)), jnp.zeros((2, 3)), jnp.ones(2), jnp.ones(2),
                         jnp.zeros(2))
    with pytest.raises(ValueError, match=r"n_x.*multiple of the device count"):
        render_sharded(r, p, mesh=make_mesh(N_DEV), mode="spaxels")
    # particle sharding pads the rows instead, and agrees with one device
    np.testing.assert_allclose(np.asarray(render_sharded(r, p, mesh=make_mesh(N_DEV)).flux),
                               np.asarray(r(p).flux), rtol=1e-10)


def test_noise_is_identical_for_any_device_count(setup):
    r, p, _ = setup
    key = jax.random.key(42)
    single = add_noise(key, r(p), TargetSNR(20.0))
    for mode in ("particles", "spaxels"):
        sharded = add_noise(key, render_sharded(r, p, mesh=make_mesh(N_DEV), mode=mode),
                            TargetSNR(20.0))
        clean_diff = np.asarray(sharded.flux) - np.asarray(single.flux)
        assert np.max(np.abs(clean_diff)) <= 1e-5 * float(jnp.max(jnp.abs(single.flux)))
        np.testing.assert_allclose(np.asarray(sharded.variance), np.asarray(single.variance),
                                   rtol=1e-8)
    other = add_noise(jax.random.key(43), r(p), TargetSNR(20.0))
    assert not np.allclose(np.asarray(other.flux), np.asarray(single.flux), rtol=1e-3, atol=0)
    again = add_noise(key, r(p), TargetSNR(20.0))
    np.testing.assert_array_equal(np.asarray(again.flux), np.asarray(single.flux))


def test_noise_statistics_over_a_million_pixels(grid):
    tel = get_telescope("MUSE").replace(n_x=20, n_y=20, n_wave=2500)
    r = make_renderer(tel, grid, v_max=100.0)
    rng = np.random.default_rng(2)
    p_kpc = float(r.pixel_kpc)
    n = 4000
    p = StellarParticles(jnp.asarray(rng.uniform(-10 * p_kpc, 10 * p_kpc, (n, 3))),
                         jnp.zeros((n, 3)), jnp.ones(n) * 1e4, jnp.ones(n) * 3.0, jnp.zeros(n))
    clean = r(p)
    noisy = add_noise(jax.random.key(0), clean, TargetSNR(30.0))
    z = (np.asarray(noisy.flux) - np.asarray(clean.flux)) / np.sqrt(np.asarray(noisy.variance))
    z = z[np.isfinite(z)]
    assert z.size == 20 * 20 * 2500
    assert abs(z.mean()) < 0.01
    assert abs(z.std() - 1.0) < 0.01
    # σ is flat per spaxel at the mean flux / 30
    s = np.sqrt(np.asarray(noisy.variance))[5, 5]
    assert np.allclose(s, np.asarray(clean.flux)[5, 5].mean() / 30.0, rtol=1e-10)
