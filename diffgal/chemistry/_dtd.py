"""SN Ia delay-time distributions (DTDs).

A DTD gives the SN Ia rate per unit SSP mass as a function of age. It is normalised so that
`n_ia` events per Msun of SSP mass happen within `horizon` Gyr. `delay` (tau_Ia) is bound from
`ChemistryParams.log10_tau_ia` by `evolve`.
"""

from __future__ import annotations

import abc
import typing

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float


class AbstractDTD(eqx.Module):
    """Delay-time distribution of SN Ia."""

    delay: eqx.AbstractVar[Float[ArrayLike, ""]]
    horizon: eqx.AbstractVar[float]

    @abc.abstractmethod
    def rate(self, t: Float[ArrayLike, "*shape"]) -> Float[Array, "*shape"]:
        """Unnormalised rate at age `t` [Gyr]; zero before `delay`."""

    @abc.abstractmethod
    def cumulative(self, t: Float[ArrayLike, "*shape"]) -> Float[Array, "*shape"]:
        """Unnormalised integral of `rate` from 0 to `t` (smooth in `t` and `delay`)."""

    def bin_fractions(
        self, t_lo: Float[ArrayLike, "*shape"], t_hi: Float[ArrayLike, "*shape"]
    ) -> Float[Array, "*shape"]:
        """Fraction of all events within `horizon` that happen at ages in `(t_lo, t_hi]`."""
        total = self.cumulative(jnp.asarray(self.horizon))
        return (self.cumulative(t_hi) - self.cumulative(t_lo)) / total


@typing.final
class PowerLawDTD(AbstractDTD):
    """Maoz-type power law R(t) = (t/tau)^(-s) (s-1)/tau for t >= tau, 0 before.

    Defaults are the ChempyMulti-TNG values: `slope` s = 1.12, `delay` tau = 0.04 Gyr,
    normalisation horizon 13.8 Gyr.
    """

    delay: Float[ArrayLike, ""] = 0.04
    slope: float = eqx.field(static=True, default=1.12)
    horizon: float = eqx.field(static=True, default=13.8)

    def __check_init__(self):
        if not self.slope > 1:
            raise ValueError(f"`PowerLawDTD`: `slope` must be > 1; got {self.slope}.")

    def rate(self, t):
        t = jnp.asarray(t)
        after = t >= self.delay
        x = jnp.where(after, t, self.delay) / self.delay
        return jnp.where(after, jnp.power(x, -self.slope) * (self.slope - 1) / self.delay, 0.0)

    def cumulative(self, t):
        x = jnp.maximum(jnp.asarray(t), self.delay) / self.delay
        return 1.0 - jnp.power(x, 1.0 - self.slope)


@typing.final
class ExponentialDTD(AbstractDTD):
    """Exponential DTD R(t) = exp(-(t - tau)/timescale)/timescale for t >= tau, 0 before."""

    delay: Float[ArrayLike, ""] = 0.04
    timescale: float = eqx.field(static=True, default=1.5)
    horizon: float = eqx.field(static=True, default=13.8)

    def rate(self, t):
        t = jnp.asarray(t)
        after = t >= self.delay
        dt = jnp.where(after, t - self.delay, 0.0)
        return jnp.where(after, jnp.exp(-dt / self.timescale) / self.timescale, 0.0)

    def cumulative(self, t):
        dt = jnp.maximum(jnp.asarray(t) - self.delay, 0.0)
        return -jnp.expm1(-dt / self.timescale)
