"""Small numerically safe helpers shared by the chemistry kernels."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike


def safe_log10(x: ArrayLike, fill: ArrayLike = -jnp.inf) -> Array:
    """`log10(x)` where `x > 0`, else `fill`, with finite gradients everywhere (double `where`)."""
    x = jnp.asarray(x)
    positive = x > 0
    safe = jnp.where(positive, x, 1.0)
    return jnp.where(positive, jnp.log10(safe), fill)


def power_integral(lo: ArrayLike, hi: ArrayLike, p: ArrayLike) -> Array:
    """`integral_lo^hi x**p dx` for `lo, hi > 0`, continuous and differentiable through `p = -1`."""
    dtype = jnp.result_type(lo, hi, p, float)
    lo, hi = jnp.asarray(lo, dtype), jnp.asarray(hi, dtype)
    q = jnp.asarray(p, dtype) + 1.0
    near = jnp.abs(q) < 1e-6
    q_safe = jnp.where(near, 1.0, q)
    log_ratio = jnp.log(hi) - jnp.log(lo)
    generic = (jnp.power(hi, q_safe) - jnp.power(lo, q_safe)) / q_safe
    # Second-order expansion around q = 0.
    lo_q = jnp.log(lo)
    hi_q = jnp.log(hi)
    series = log_ratio + 0.5 * q * (hi_q**2 - lo_q**2)
    return jnp.where(near, series, generic)


def smooth_max(a: ArrayLike, b: ArrayLike, eps: ArrayLike) -> Array:
    """`max(a, b) + O(eps)`: `a + eps * softplus((b - a) / eps)`, smooth in both arguments."""
    return a + eps * jax.nn.softplus((jnp.asarray(b) - a) / eps)


def smooth_min(a: ArrayLike, b: ArrayLike, eps: ArrayLike) -> Array:
    """`min(a, b) - O(eps)`: `a - eps * softplus((a - b) / eps)`, smooth in both arguments."""
    return a - eps * jax.nn.softplus((jnp.asarray(a) - b) / eps)
