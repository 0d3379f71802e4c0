"""The prior over the six per-star chemistry parameters (sbi-chempy's setup)."""

from __future__ import annotations

import typing

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ..chemistry import THETA_COLUMNS

__all__ = ["ChemistryPrior", "GLOBAL_NAMES"]

#: The parameters shared by every star of a galaxy (the rest are per-star locals).
GLOBAL_NAMES: tuple[str, ...] = ("imf_slope", "log10_n_ia")


def _check_theta(api: str, theta, n: int) -> Array:
    theta = jnp.asarray(theta)
    if theta.ndim == 0 or theta.shape[-1] != n:
        raise ValueError(
            f"`{api}`: `theta` must have a last axis of size {n} (columns "
            f"{', '.join(THETA_COLUMNS)}); got shape {theta.shape}."
        )
    return theta


@typing.final
class ChemistryPrior(eqx.Module):
    """Independent Normals on the five physical parameters and a uniform birth time.

    The default is the prior of sbi-chempy's NPE code (chemistry spec §2): alpha_IMF ~
    N(-2.3, 0.3), log10 N_Ia ~ N(-2.89, 0.3), log10 SFE ~ N(-0.3, 0.3), log10 SFR_peak ~
    N(0.55, 0.1), x_out ~ N(0.5, 0.1) and T ~ U(2, 12.8) Gyr, in the column order of
    `diffgal.chemistry.THETA_COLUMNS`.

    `to_unconstrained` / `from_unconstrained` map the bounded birth time to the real line
    (a logit of its position in the box; the Normal columns are unchanged), so that flows and
    samplers working on R^6 never produce a draw outside the support.

    **Fields:**

    - `loc`, `scale`: `(5,)` means and standard deviations of the Normal columns.
    - `t_low`, `t_high`: the birth-time box [Gyr].
    """

    loc: Float[Array, " 5"]
    scale: Float[Array, " 5"]
    t_low: float = eqx.field(static=True, default=2.0)
    t_high: float = eqx.field(static=True, default=12.8)
    names: tuple[str, ...] = eqx.field(static=True, default=THETA_COLUMNS)

    def __init__(
        self,
        loc: Float[ArrayLike, " 5"] = (-2.3, -2.89, -0.3, 0.55, 0.5),
        scale: Float[ArrayLike, " 5"] = (0.3, 0.3, 0.3, 0.1, 0.1),
        t_low: float = 2.0,
        t_high: float = 12.8,
    ):
        loc = np.asarray(loc, dtype=float)
        scale = np.asarray(scale, dtype=float)
        if loc.shape != (5,) or scale.shape != (5,):
            raise ValueError(
                "`ChemistryPrior`: `loc` and `scale` must have shape (5,) (alpha_IMF, log10_N_Ia, "
                f"log10_SFE, log10_SFR_peak, x_out); got {loc.shape} and {scale.shape}."
            )
        if not np.all(scale > 0):
            raise ValueError(f"`ChemistryPrior`: `scale` must be > 0; got {scale.tolist()}.")
        if not 0 < t_low < t_high:
            raise ValueError(
                f"`ChemistryPrior`: need 0 < `t_low` < `t_high` [Gyr]; got {t_low}, {t_high}."
            )
        self.loc = jnp.asarray(loc)
        self.scale = jnp.asarray(scale)
        self.t_low = float(t_low)
        self.t_high = float(t_high)
        self.names = THETA_COLUMNS

    @property
    def dim(self) -> int:
        return 6

    @property
    def global_index(self) -> tuple[int, ...]:
        """Column indices of the global parameters (`GLOBAL_NAMES`)."""
        return tuple(self.names.index(n) for n in GLOBAL_NAMES)

    @property
    def local_index(self) -> tuple[int, ...]:
        """Column indices of the per-star parameters."""
        return tuple(i for i, n in enumerate(self.names) if n not in GLOBAL_NAMES)

    def sample(self, key: PRNGKeyArray, shape: tuple[int, ...] = ()) -> Float[Array, "*shape 6"]:
        """Draw `shape` parameter vectors."""
        k_n, k_t = jax.random.split(key)
        dtype = self.loc.dtype
        z = jax.random.normal(k_n, (*shape, 5), dtype)
        t = jax.random.uniform(k_t, (*shape, 1), dtype, self.t_low, self.t_high)
        return jnp.concatenate([self.loc + self.scale * z, t], axis=-1)

    def log_prob(self, theta: Float[ArrayLike, "*batch 6"]) -> Float[Array, "*batch"]:
        """Log density; `-inf` outside the birth-time box."""
        theta = _check_theta("ChemistryPrior.log_prob", theta, 6)
        z = (theta[..., :5] - self.loc) / self.scale
        normal = -0.5 * jnp.sum(z**2, -1) - jnp.sum(jnp.log(self.scale)) - 2.5 * jnp.log(2 * jnp.pi)
        t = theta[..., 5]
        inside = (t >= self.t_low) & (t <= self.t_high)
        return jnp.where(inside, normal - jnp.log(self.t_high - self.t_low), -jnp.inf)

    def in_support(self, theta: Float[ArrayLike, "*batch 6"]) -> Array:
        theta = _check_theta("ChemistryPrior.in_support", theta, 6)
        return (theta[..., 5] >= self.t_low) & (theta[..., 5] <= self.t_high)

    def to_unconstrained(self, theta: Float[ArrayLike, "*batch 6"]) -> Float[Array, "*batch 6"]:
        """Map to R^6: the birth time through a logit of its place in the box."""
        theta = _check_theta("ChemistryPrior.to_unconstrained", theta, 6)
        u = (theta[..., 5:] - self.t_low) / (self.t_high - self.t_low)
        return jnp.concatenate([theta[..., :5], jnp.log(u) - jnp.log1p(-u)], axis=-1)

    def from_unconstrained(self, z: Float[ArrayLike, "*batch 6"]) -> Float[Array, "*batch 6"]:
        """Inverse of `to_unconstrained`; every real input lands inside the support."""
        z = _check_theta("ChemistryPrior.from_unconstrained", z, 6)
        t = self.t_low + (self.t_high - self.t_low) * jax.nn.sigmoid(z[..., 5:])
        return jnp.concatenate([z[..., :5], t], axis=-1)

    def log_det_from_unconstrained(self, z: Float[ArrayLike, "*batch 6"]) -> Float[Array, "*batch"]:
        """log |d theta / d z| of `from_unconstrained`."""
        z = jnp.asarray(z)[..., 5]
        return jnp.log(self.t_high - self.t_low) + jax.nn.log_sigmoid(z) + jax.nn.log_sigmoid(-z)

    def marginal(self, index: typing.Sequence[int]):
        """The prior of the columns `index` among the Normal ones, as `(loc, scale)` arrays."""
        index = tuple(index)
        if any(i >= 5 for i in index):
            raise ValueError(
                "`ChemistryPrior.marginal`: only the Normal columns 0-4 have a Gaussian "
                f"marginal; got {index}."
            )
        return self.loc[jnp.array(index)], self.scale[jnp.array(index)]
