"""Initial mass functions.

Every IMF is normalised by stellar **mass** on `[mass_min, mass_max]` (CHEMPY: 0.1 to 100 Msun).
The high-mass slope `high_mass_slope` uses the convention `dN/dm ∝ m**high_mass_slope`
(Salpeter: -2.35) and is bound from `ChemistryParams.imf_slope` by `evolve`.
"""

from __future__ import annotations

import abc
import math
import typing

import equinox as eqx
import jax.numpy as jnp
import jax.scipy.special as jss
from jaxtyping import Array, ArrayLike, Float

from ._math import power_integral

_LN10 = math.log(10.0)


class AbstractIMF(eqx.Module):
    """An initial mass function dN/dm on `[mass_min, mass_max]`, normalised by mass."""

    high_mass_slope: eqx.AbstractVar[Float[ArrayLike, ""]]
    mass_min: eqx.AbstractVar[float]
    mass_max: eqx.AbstractVar[float]

    @abc.abstractmethod
    def number_density(self, m: Float[ArrayLike, "*shape"]) -> Float[Array, "*shape"]:
        """Unnormalised dN/dm at mass `m` [Msun]."""

    @abc.abstractmethod
    def mass_integral(self, m: Float[ArrayLike, "*shape"]) -> Float[Array, "*shape"]:
        """Unnormalised `integral_{mass_min}^{m} x dN/dx dx`, analytic, for `m` in range."""

    def mass_cdf(self, m: Float[ArrayLike, "*shape"]) -> Float[Array, "*shape"]:
        """Fraction of the stellar mass in stars below `m` (clamped to the IMF range).

        Closed form, so it is smooth in `m` and in `high_mass_slope`.
        """
        m = jnp.clip(jnp.asarray(m), self.mass_min, self.mass_max)
        return self.mass_integral(m) / self.mass_integral(jnp.asarray(self.mass_max))


def _lognormal_mass_integral(m, amplitude, m_c, sigma_dex):
    """`integral^m A exp(-(log10(x/m_c))**2 / (2 sigma**2)) dx` (antiderivative, no constant)."""
    s = sigma_dex * _LN10
    z = (jnp.log(m) - math.log(m_c) - s**2) / s
    return amplitude * math.sqrt(2 * math.pi) * s * m_c * math.exp(s**2 / 2) * jss.ndtr(z)


@typing.final
class ChabrierIMF(AbstractIMF):
    """Chabrier (2003) IMF with a free high-mass slope, in the IllustrisTNG constants of CHEMPY.

    dN/dm = (A/m) exp(-(log10(m/m_c))^2 / (2 sigma^2)) below 1 Msun and B m^alpha above,
    with A = 0.852464, B = 0.237912, sigma = 0.69, m_c = 0.079 (continuous at 1 Msun for any alpha).
    """

    high_mass_slope: Float[ArrayLike, ""] = -2.3
    mass_min: float = eqx.field(static=True, default=0.1)
    mass_max: float = eqx.field(static=True, default=100.0)
    amplitude_low: float = eqx.field(static=True, default=0.852464)
    amplitude_high: float = eqx.field(static=True, default=0.237912)
    sigma: float = eqx.field(static=True, default=0.69)
    m_c: float = eqx.field(static=True, default=0.079)

    def number_density(self, m):
        m = jnp.asarray(m)
        low = self.amplitude_low / m * jnp.exp(-(jnp.log10(m / self.m_c) ** 2) / (2 * self.sigma**2))
        high = self.amplitude_high * jnp.power(m, self.high_mass_slope)
        return jnp.where(m < 1.0, low, high)

    def mass_integral(self, m):
        m = jnp.asarray(m)
        args = (self.amplitude_low, self.m_c, self.sigma)
        base = _lognormal_mass_integral(self.mass_min, *args)
        below = _lognormal_mass_integral(jnp.minimum(m, 1.0), *args) - base
        above = self.amplitude_high * power_integral(
            1.0, jnp.maximum(m, 1.0), self.high_mass_slope + 1.0
        )
        return below + above


def _broken_power_mass_integral(m, breaks, slopes, mass_min):
    """Mass integral of a continuous broken power law dN/dm with `slopes` between `breaks`."""
    total = jnp.zeros_like(m)
    norm = 1.0  # continuity factor of each segment, relative to the first
    edges = (mass_min, *breaks, jnp.inf)
    for i, slope in enumerate(slopes):
        lo, hi = edges[i], edges[i + 1]
        if i > 0:
            norm = norm * jnp.power(lo, slopes[i - 1] - slope)
        upper = jnp.clip(m, lo, hi) if hi != jnp.inf else jnp.maximum(m, lo)
        total = total + norm * power_integral(lo, upper, slope + 1.0)
    return total


@typing.final
class SalpeterIMF(AbstractIMF):
    """Salpeter (1955) power law dN/dm ∝ m^alpha on the whole mass range (alpha = -2.35)."""

    high_mass_slope: Float[ArrayLike, ""] = -2.35
    mass_min: float = eqx.field(static=True, default=0.1)
    mass_max: float = eqx.field(static=True, default=100.0)

    def number_density(self, m):
        return jnp.power(jnp.asarray(m), self.high_mass_slope)

    def mass_integral(self, m):
        return power_integral(self.mass_min, jnp.asarray(m), self.high_mass_slope + 1.0)


@typing.final
class KroupaIMF(AbstractIMF):
    """Kroupa (2001) broken power law: slopes -0.3 (< 0.08), -1.3 (0.08-0.5), alpha (> 0.5)."""

    high_mass_slope: Float[ArrayLike, ""] = -2.3
    mass_min: float = eqx.field(static=True, default=0.1)
    mass_max: float = eqx.field(static=True, default=100.0)
    low_slopes: tuple[float, float] = eqx.field(static=True, default=(-0.3, -1.3))
    breaks: tuple[float, float] = eqx.field(static=True, default=(0.08, 0.5))

    def _slopes(self):
        return (*self.low_slopes, self.high_mass_slope)

    def number_density(self, m):
        m = jnp.asarray(m)
        s0, s1, s2 = self._slopes()
        b0, b1 = self.breaks
        seg0 = jnp.power(m, s0)
        seg1 = b0 ** (s0 - s1) * jnp.power(m, s1)
        seg2 = b0 ** (s0 - s1) * jnp.power(b1, s1 - s2) * jnp.power(m, s2)
        return jnp.where(m < b0, seg0, jnp.where(m < b1, seg1, seg2))

    def mass_integral(self, m):
        m = jnp.asarray(m)
        breaks = tuple(b for b in self.breaks if b > self.mass_min)
        slopes = self._slopes()[len(self._slopes()) - len(breaks) - 1 :]
        return _broken_power_mass_integral(m, breaks, slopes, self.mass_min)


def grid_mass_weights(imf: AbstractIMF, grid: Float[ArrayLike, " n_grid"]) -> Float[Array, " n_grid"]:
    """CHEMPY's discrete IMF: mass weight `dm_i ∝ x_i dN/dm(x_i)` of each grid point, summing to 1."""
    grid = jnp.asarray(grid)
    dm = grid * imf.number_density(grid)
    return dm / jnp.sum(dm)
