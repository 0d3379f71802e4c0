"""Stellar lifetimes and their inverse, the dying mass.

Both laws are quadratic in `lm = log10(m / Msun)` at fixed metallicity,
`log10(tau / Gyr) = q0(Z) + q1(Z) lm + q2(Z) lm^2`, so the dying mass has a closed form on the
decreasing branch.
"""

from __future__ import annotations

import abc
import math
import typing

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from ._math import safe_log10


class AbstractLifetimes(eqx.Module):
    """A lifetime law `tau(m, Z)` [Gyr] that is quadratic in log10 mass."""

    @abc.abstractmethod
    def coefficients(
        self, metallicity: Float[ArrayLike, "*shape"]
    ) -> tuple[Float[Array, "*shape"], Float[Array, "*shape"], Float[Array, "*shape"]]:
        """`(q0, q1, q2)` with `log10(tau/Gyr) = q0 + q1 lm + q2 lm^2` at metallicity Z."""

    def lifetime(self, mass: Float[ArrayLike, "*shape"], metallicity: Float[ArrayLike, "*shape"]):
        """Main-sequence lifetime [Gyr] of a star of initial `mass` [Msun] and metallicity Z."""
        q0, q1, q2 = self.coefficients(metallicity)
        lm = jnp.log10(mass)
        return jnp.power(10.0, q0 + q1 * lm + q2 * lm**2)

    def log10_dying_mass(
        self, age: Float[ArrayLike, "*shape"], metallicity: Float[ArrayLike, "*shape"]
    ) -> Float[Array, "*shape"]:
        """Analytic inverse: log10 of the mass whose lifetime equals `age` [Gyr] (unclamped).

        Uses the root on the decreasing branch in the cancellation-free form
        `lm = 2c / (sqrt(q1^2 - 4 q2 c) - q1)`, `c = q0 - log10(age)`, valid through `q2 = 0`.
        Ages `<= 0` map to `+inf` (every star is still alive); ages beyond the longest lifetime
        reachable on the branch map to `-inf`.
        """
        q0, q1, q2 = self.coefficients(metallicity)
        log_age = safe_log10(age, fill=-jnp.inf)
        finite = jnp.isfinite(log_age)
        c = q0 - jnp.where(finite, log_age, 0.0)
        disc = q1**2 - 4 * q2 * c
        ok = finite & (disc >= 0)
        root_den = jnp.sqrt(jnp.where(ok, disc, 1.0)) - q1
        den_ok = ok & (root_den > 0)
        lm = 2 * c / jnp.where(den_ok, root_den, 1.0)
        return jnp.where(den_ok, lm, jnp.where(finite, -jnp.inf, jnp.inf))

    def dying_mass(
        self,
        age: Float[ArrayLike, "*shape"],
        metallicity: Float[ArrayLike, "*shape"],
        mass_min: float = 0.1,
        mass_max: float = 100.0,
    ) -> Float[Array, "*shape"]:
        """Mass [Msun] of the stars that die at `age` [Gyr], clamped to `[mass_min, mass_max]`."""
        lm = self.log10_dying_mass(age, metallicity)
        mass = jnp.power(10.0, jnp.clip(lm, math.log10(mass_min), math.log10(mass_max)))
        # Outside the lifetimes of the mass range the root may not exist (e.g. an age of 1e-16
        # from rounding).
        return self.clamp_to_mass_range(mass, age, metallicity, mass_min, mass_max)

    def clamp_to_mass_range(self, mass, age, metallicity, mass_min: float, mass_max: float):
        """Dying mass `mass_max` for ages below the heaviest star's lifetime (nothing has died),
        `mass_min` above the lightest's, `mass` clipped to the range otherwise."""
        age = jnp.asarray(age)
        mass = jnp.where(age < self.lifetime(mass_max, metallicity), mass_max, mass)
        mass = jnp.where(age > self.lifetime(mass_min, metallicity), mass_min, mass)
        return jnp.clip(mass, mass_min, mass_max)


@typing.final
class PortinariLifetimes(AbstractLifetimes):
    """Portinari, Chiosi & Bressan (1998) lifetimes, as fitted in CHEMPY.

    log10(tau/yr) = c0 + c1 lm + c2 lm^2 + c3 lZ + c4 lm lZ + c5 lm^2 lZ + c6 lZ^2 + c7 lZ^2 lm,
    `lZ = log10 Z`, with `lZ = -5` for `Z <= 0` (no other floor).
    """

    c: tuple[float, ...] = eqx.field(
        static=True,
        default=(
            10.0153615, -3.91089893, 0.99947209, -0.03601771,
            -0.31139679, 0.09109059, -0.03218365, -0.01323112,
        ),
    )
    zero_metallicity_log10: float = eqx.field(static=True, default=-5.0)

    def coefficients(self, metallicity):
        c0, c1, c2, c3, c4, c5, c6, c7 = self.c
        lz = safe_log10(metallicity, fill=self.zero_metallicity_log10)
        q0 = c0 + c3 * lz + c6 * lz**2 - 9.0
        q1 = c1 + c4 * lz + c7 * lz**2
        q2 = c2 + c5 * lz
        return q0, q1, q2


@typing.final
class ArgastLifetimes(AbstractLifetimes):
    """Argast et al. (2000) lifetimes (original CHEMPY default):
    log10(tau/Myr) = a0 + a1 lm + a2 lm^2, a0 = 3.79 + 0.24 Z', a1 = -3.10 - 0.35 Z',
    a2 = 0.74 + 0.11 Z', Z' = Z / 0.015.
    """

    z_scale: float = eqx.field(static=True, default=0.015)

    def coefficients(self, metallicity):
        zp = jnp.asarray(metallicity) / self.z_scale
        return 3.79 + 0.24 * zp - 3.0, -3.10 - 0.35 * zp, 0.74 + 0.11 * zp


def grid_dying_mass(
    lifetimes: AbstractLifetimes,
    age: Float[ArrayLike, "*shape"],
    metallicity: Float[ArrayLike, ""],
    grid: Float[ArrayLike, " n_grid"],
) -> Float[Array, "*shape"]:
    """CHEMPY's dying mass: linear interpolation of `(tau(x_i, Z), x_i)` over a linear mass grid.

    Equivalent to interpolating over all grid points sorted by lifetime, but it only evaluates
    the two grid lifetimes around the analytic root. Valid where the lifetime is monotone on the
    grid (Z <~ 0.05 for the Portinari fit).
    """
    grid = jnp.asarray(grid)
    n = grid.shape[0]
    lo, hi = grid[0], grid[-1]
    step = (hi - lo) / (n - 1)
    age = jnp.asarray(age)
    lm = lifetimes.log10_dying_mass(age, metallicity)
    m_star = jnp.power(10.0, jnp.clip(lm, -3.0, 5.0))
    i = jnp.clip(jnp.floor((m_star - lo) / step).astype(jnp.int32), 0, n - 2)
    x_i, x_j = grid[i], grid[i + 1]
    t_i = lifetimes.lifetime(x_i, metallicity)
    t_j = lifetimes.lifetime(x_j, metallicity)
    # np.interp with ascending lifetimes: x_j (heavier, shorter-lived) is the left node.
    m = x_j + (age - t_j) * (x_i - x_j) / (t_i - t_j)
    # CHEMPY calls np.interp(age, tau(grid[::-1]), grid[::-1]): ages below the lifetime of the
    # heaviest grid star give the heaviest mass, ages above that of the lightest the lightest,
    # even where the fit is not monotone (Z >~ 0.055 near 100 Msun).
    return lifetimes.clamp_to_mass_range(m, age, metallicity, lo, hi)
