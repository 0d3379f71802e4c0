"""A minimal mock disc galaxy: exponential disc, rotation curve, dispersion, age and [M/H]."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import PRNGKeyArray

from ..ifu._particles import StellarParticles


def rotation_curve(r_kpc, v_flat_kms: float = 220.0, r_turn_kpc: float = 1.0):
    """v_c(R) = v_flat (1 - exp(-R / r_turn)) in km/s: solid-body inside, flat outside."""
    return v_flat_kms * (1.0 - jnp.exp(-r_kpc / r_turn_kpc))


def exponential_disk(
    key: PRNGKeyArray,
    n_star: int,
    *,
    mass_msun: float = 1e10,
    r_d_kpc: float = 3.0,
    h_z_kpc: float = 0.3,
    v_flat_kms: float = 220.0,
    r_turn_kpc: float = 1.0,
    sigma0_kms: float = 60.0,
    age_max_gyr: float = 12.0,
    tau_sfh_gyr: float = 7.0,
    mh_centre: float = 0.2,
    mh_gradient: float = -0.05,
    mh_scatter: float = 0.1,
    dtype=None,
) -> StellarParticles:
    """Sample a rotating exponential disc of star particles (equal initial masses).

    - Positions: surface density ∝ exp(-R / r_d) (R ~ Gamma(2, r_d)), uniform azimuth,
      z ~ Laplace(h_z).
    - Velocities: circular speed [`rotation_curve`][diffgal.galaxy.rotation_curve] in the +φ
      direction (the disc rotates counter-clockwise seen from +z), plus isotropic Gaussian
      dispersion σ(R) = σ0 exp(-R / 2 r_d) in each component.
    - Ages: look-back times in [0, age_max] with SFR ∝ exp(-(age_max - age)/tau_sfh)
      (inverse-CDF sampling).
    - [M/H] = mh_centre + mh_gradient R - 0.5 (age / age_max)² + N(0, mh_scatter).

    **Arguments:** as named above; lengths in kpc, speeds in km/s, ages in Gyr.

    **Returns:**

    [`StellarParticles`][diffgal.ifu.StellarParticles] with `mass = mass_msun / n_star`.
    """
    if n_star < 1:
        raise ValueError(f"`exponential_disk`: `n_star` must be >= 1; got {n_star!r}.")
    dtype = jnp.result_type(float) if dtype is None else dtype
    k_r, k_phi, k_z, k_v, k_age, k_mh = jax.random.split(key, 6)
    r = r_d_kpc * jax.random.gamma(k_r, 2.0, (n_star,), dtype)
    phi = jax.random.uniform(k_phi, (n_star,), dtype, 0.0, 2.0 * jnp.pi)
    z = h_z_kpc * jax.random.laplace(k_z, (n_star,), dtype)
    position = jnp.stack([r * jnp.cos(phi), r * jnp.sin(phi), z], axis=1)
    vc = rotation_curve(r, v_flat_kms, r_turn_kpc)
    sigma = sigma0_kms * jnp.exp(-r / (2.0 * r_d_kpc))
    noise = jax.random.normal(k_v, (n_star, 3), dtype) * sigma[:, None]
    velocity = jnp.stack([-vc * jnp.sin(phi), vc * jnp.cos(phi), jnp.zeros_like(vc)], 1) + noise
    # SFR(t) ∝ exp(-t / tau) in cosmic time t = age_max - age; inverse CDF in t.
    u = jax.random.uniform(k_age, (n_star,), dtype)
    t = -tau_sfh_gyr * jnp.log1p(-u * (1.0 - jnp.exp(-age_max_gyr / tau_sfh_gyr)))
    age = jnp.clip(age_max_gyr - t, 1e-3, age_max_gyr)
    mh = (mh_centre + mh_gradient * r - 0.5 * (age / age_max_gyr) ** 2
          + mh_scatter * jax.random.normal(k_mh, (n_star,), dtype))
    mass = jnp.full((n_star,), mass_msun / n_star, dtype)
    return StellarParticles(position, velocity, mass, age, mh)
