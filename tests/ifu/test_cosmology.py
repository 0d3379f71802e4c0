"""Tests of the flat ΛCDM distances: anchors, astropy, analytic limits, gradients, dtypes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffgal.ifu._cosmology import (
    C_KMS,
    angular_diameter_distance_mpc,
    comoving_distance_mpc,
    kpc_per_arcsec,
    luminosity_distance_mpc,
)

Z_GRID = np.array([1e-4, 1e-3, 0.01, 0.025, 0.05, 0.1, 0.3, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0])


def test_spec_anchors():
    # Spec §3.11 (astropy Planck15): z = 0.1 -> 475.34 Mpc, 1.9045 kpc/"; z = 0.025 -> 112.75.
    assert float(luminosity_distance_mpc(0.1)) == pytest.approx(475.34, abs=0.005)
    assert float(kpc_per_arcsec(0.1)) == pytest.approx(1.9045, abs=5e-5)
    assert float(luminosity_distance_mpc(0.025)) == pytest.approx(112.75, abs=0.005)
    assert float(kpc_per_arcsec(0.025)) == pytest.approx(0.5203, abs=5e-5)


def test_planck15_matches_astropy():
    cosmology = pytest.importorskip("astropy.cosmology")
    planck = cosmology.Planck15
    np.testing.assert_allclose(
        luminosity_distance_mpc(Z_GRID), planck.luminosity_distance(Z_GRID).value, rtol=1e-9
    )
    np.testing.assert_allclose(
        comoving_distance_mpc(Z_GRID), planck.comoving_distance(Z_GRID).value, rtol=1e-9
    )
    np.testing.assert_allclose(
        angular_diameter_distance_mpc(Z_GRID),
        planck.angular_diameter_distance(Z_GRID).value,
        rtol=1e-9,
    )
    np.testing.assert_allclose(
        kpc_per_arcsec(Z_GRID), planck.kpc_proper_per_arcmin(Z_GRID).value / 60.0, rtol=1e-9
    )


def test_without_radiation_matches_flat_lcdm():
    cosmology = pytest.importorskip("astropy.cosmology")
    flat = cosmology.FlatLambdaCDM(H0=67.74, Om0=0.3075)  # Tcmb0 = 0: no radiation
    ours = luminosity_distance_mpc(Z_GRID, t_cmb_k=0.0)
    np.testing.assert_allclose(ours, flat.luminosity_distance(Z_GRID).value, rtol=1e-9)
    # Dropping radiation shifts Planck15 distances by 1.1e-4 at z = 0.1 and 2e-3 at z = 10.
    planck = cosmology.Planck15.luminosity_distance(Z_GRID).value
    shift = np.asarray(ours) / planck - 1.0
    assert 1.0e-4 < shift[Z_GRID == 0.1][0] < 1.2e-4
    assert np.all(np.diff(shift) > 0)


def test_other_parameters_match_astropy():
    cosmology = pytest.importorskip("astropy.cosmology")
    other = cosmology.FlatLambdaCDM(H0=70.0, Om0=0.25, Tcmb0=2.7, Neff=3.2, m_nu=[0.0, 0.05, 0.1])
    ours = luminosity_distance_mpc(
        Z_GRID, h0=70.0, omega_m=0.25, t_cmb_k=2.7, n_eff=3.2, m_nu_ev=(0.0, 0.05, 0.1)
    )
    np.testing.assert_allclose(ours, other.luminosity_distance(Z_GRID).value, rtol=1e-9)


def test_einstein_de_sitter_analytic():
    # Ω_m = 1, no radiation: D_C = 2 (c/H0) (1 - 1/sqrt(1+z)), checked up to z = 1000.
    z = np.array([0.01, 0.5, 3.0, 30.0, 1000.0])
    exact = 2.0 * C_KMS / 70.0 * (1.0 - 1.0 / np.sqrt(1.0 + z))
    ours = comoving_distance_mpc(z, h0=70.0, omega_m=1.0, t_cmb_k=0.0)
    np.testing.assert_allclose(ours, exact, rtol=1e-12)


def test_low_redshift_hubble_law():
    # d_L = (c z / H0) [1 + (1 - q0) z / 2 + O(z^2)], q0 = Ω_m / 2 - Ω_Λ.
    z = 1e-4
    q0 = 0.3075 / 2 - (1 - 0.3075)
    expected = C_KMS * z / 67.74 * (1 + (1 - q0) * z / 2)
    assert float(luminosity_distance_mpc(z, t_cmb_k=0.0)) == pytest.approx(expected, rel=1e-8)
    assert float(luminosity_distance_mpc(0.0)) == 0.0


@pytest.mark.parametrize("z", [0.02, 0.1, 0.7, 3.0])
def test_gradient_matches_finite_difference(z):
    h = 1e-6 * max(z, 1.0)
    fd = (luminosity_distance_mpc(z + h) - luminosity_distance_mpc(z - h)) / (2 * h)
    np.testing.assert_allclose(jax.grad(luminosity_distance_mpc)(z), fd, rtol=1e-7)
    np.testing.assert_allclose(jax.jacfwd(luminosity_distance_mpc)(z), fd, rtol=1e-7)
    fd_scale = (kpc_per_arcsec(z + h) - kpc_per_arcsec(z - h)) / (2 * h)
    np.testing.assert_allclose(jax.grad(kpc_per_arcsec)(z), fd_scale, rtol=1e-6)
    # dD_C/dz = c / (H0 E(z)) > 0, and the gradient with respect to H0 is finite.
    assert float(jax.grad(comoving_distance_mpc)(z)) > 0
    d_h0 = jax.grad(lambda h0: luminosity_distance_mpc(z, h0=h0))(67.74)
    fd_h0 = (
        luminosity_distance_mpc(z, h0=67.74 + 1e-4) - luminosity_distance_mpc(z, h0=67.74 - 1e-4)
    ) / 2e-4
    np.testing.assert_allclose(d_h0, fd_h0, rtol=1e-6)


def test_jit_vmap_shapes_and_dtypes():
    z = jnp.linspace(0.01, 2.0, 12).reshape(3, 4)
    out = jax.jit(luminosity_distance_mpc)(z)
    assert out.shape == (3, 4)
    np.testing.assert_allclose(jax.vmap(luminosity_distance_mpc)(z.ravel()), out.ravel())
    grads = jax.vmap(jax.grad(luminosity_distance_mpc))(z.ravel())
    assert grads.shape == (12,) and np.all(np.isfinite(grads))
    single = luminosity_distance_mpc(jnp.float32(0.1))
    assert single.dtype == jnp.float32
    assert float(single) == pytest.approx(475.337, rel=1e-5)
    assert jax.grad(kpc_per_arcsec)(jnp.float32(0.1)).dtype == jnp.float32
    assert luminosity_distance_mpc(0.1).dtype == jnp.float64


def test_negative_redshift_raises():
    # The check runs inside the compiled kernel, so it surfaces when the result is ready.
    with pytest.raises(Exception, match="redshift must be >= 0"):
        luminosity_distance_mpc(-0.01).block_until_ready()
    with pytest.raises(Exception, match="redshift must be >= 0"):
        jax.jit(kpc_per_arcsec)(jnp.array([0.1, -0.2])).block_until_ready()
