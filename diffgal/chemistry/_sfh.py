"""Star-formation histories."""

from __future__ import annotations

import abc
import typing

import equinox as eqx
import jax.numpy as jnp
import jax.scipy.special as jss
from jaxtyping import Array, ArrayLike, Float


class AbstractSFH(eqx.Module):
    """A prescribed star-formation history shape g(t) (any normalisation)."""

    log10_peak: eqx.AbstractVar[Float[ArrayLike, ""]]

    @abc.abstractmethod
    def rate(self, t: Float[ArrayLike, "*shape"]) -> Float[Array, "*shape"]:
        """Star-formation rate shape g(t) at time `t` [Gyr] (`floor` applied at g = 0)."""

    @abc.abstractmethod
    def cumulative(self, t: Float[ArrayLike, "*shape"]) -> Float[Array, "*shape"]:
        """`integral_0^t g`, analytic (smooth in `t` and the parameters)."""


@typing.final
class GammaSFH(AbstractSFH):
    """Gamma-shaped SFH g(t) = t^(k-1) e^(-t/theta) / (Gamma(k) theta^k), theta = 10^log10_peak.

    With the CHEMPY shape k = 2 the peak is at t = theta. Where g is exactly 0 (t = 0) it is
    replaced by `floor` (CHEMPY: 1e-10).
    """

    log10_peak: Float[ArrayLike, ""] = 0.55
    shape: float = eqx.field(static=True, default=2.0)
    floor: float = eqx.field(static=True, default=1e-10)

    def __check_init__(self):
        if not self.shape >= 1:
            raise ValueError(f"`GammaSFH`: `shape` must be >= 1; got {self.shape}.")

    def rate(self, t):
        t = jnp.asarray(t)
        theta = jnp.power(10.0, self.log10_peak)
        positive = t > 0
        ts = jnp.where(positive, t, 1.0)
        g = jnp.exp(
            (self.shape - 1) * jnp.log(ts) - ts / theta
            - self.shape * jnp.log(theta) - jss.gammaln(self.shape)
        )
        at_zero = jnp.where(self.shape == 1, 1.0 / theta, 0.0)
        g = jnp.where(positive, g, at_zero)
        return jnp.where(g == 0, self.floor, g)

    def cumulative(self, t):
        theta = jnp.power(10.0, self.log10_peak)
        return jss.gammainc(self.shape, jnp.maximum(jnp.asarray(t), 0.0) / theta)
