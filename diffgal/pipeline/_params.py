"""The physical parameters of the end-to-end model, their support and the default prior."""

from __future__ import annotations

import math
import typing

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ..chemistry import DEFAULT_LOG10_TAU_IA

#: The fitted parameters, in the order of `GalaxyParams.to_array`.
PARAM_NAMES: tuple[str, ...] = (
    "imf_slope", "log10_n_ia", "log10_tau_ia", "log10_sfe", "log10_sfr_peak", "outflow_fraction",
)

#: Global (stellar physics) and local (this galaxy's ISM) parameters.
GLOBAL_PARAMS = ("imf_slope", "log10_n_ia", "log10_tau_ia")
LOCAL_PARAMS = ("log10_sfe", "log10_sfr_peak", "outflow_fraction")

#: Open support (lower, upper) of each parameter. The fit works in a logit of this box, so a
#: start outside it is an error.
SUPPORT: dict[str, tuple[float, float]] = {
    "imf_slope": (-4.0, -1.0),
    "log10_n_ia": (-5.0, -1.0),
    "log10_tau_ia": (-3.0, 0.5),
    "log10_sfe": (-3.0, 2.0),
    "log10_sfr_peak": (-1.0, 1.2),
    "outflow_fraction": (0.0, 1.0),
}

#: Default Gaussian prior (mean, sigma): the CHEMPY/sbi-chempy priors for the five TNG
#: parameters and a broad one for the SN Ia delay.
DEFAULT_PRIOR: dict[str, tuple[float, float]] = {
    "imf_slope": (-2.3, 0.3),
    "log10_n_ia": (-2.89, 0.3),
    "log10_tau_ia": (-1.2, 0.4),
    "log10_sfe": (-0.3, 0.3),
    "log10_sfr_peak": (0.55, 0.1),
    "outflow_fraction": (0.5, 0.1),
}


def _as_array(x):
    """Python numbers become JAX arrays (so `eqx.filter_jit` traces them instead of
    recompiling for every value); arrays and tracers pass through."""
    return jnp.asarray(x) if isinstance(x, (int, float, np.number)) else x


@typing.final
class GalaxyParams(eqx.Module):
    """The physical parameters of one galaxy model (all differentiable).

    **Fields:**

    - `imf_slope`: high-mass IMF slope alpha_IMF (dN/dm ∝ m^alpha).
    - `log10_n_ia`: log10 SN Ia per M_sun formed.
    - `log10_tau_ia`: log10 of the SN Ia minimum delay [Gyr].
    - `log10_sfe`: log10 star-formation efficiency [1/Gyr].
    - `log10_sfr_peak`: log10 peak time of the Gamma(2) star-formation history [Gyr].
    - `outflow_fraction`: x_out, share of stellar returns lost to the corona.

    Python numbers are stored as JAX arrays (default float precision), so every field is a
    differentiable leaf.
    """

    imf_slope: Float[Array, ""] = eqx.field(default=-2.3, converter=_as_array)
    log10_n_ia: Float[Array, ""] = eqx.field(default=-2.89, converter=_as_array)
    log10_tau_ia: Float[Array, ""] = eqx.field(default=DEFAULT_LOG10_TAU_IA, converter=_as_array)
    log10_sfe: Float[Array, ""] = eqx.field(default=-0.3, converter=_as_array)
    log10_sfr_peak: Float[Array, ""] = eqx.field(default=0.55, converter=_as_array)
    outflow_fraction: Float[Array, ""] = eqx.field(default=0.5, converter=_as_array)

    def to_array(self) -> Float[Array, " 6"]:
        """`(6,)` vector in the order of `PARAM_NAMES`."""
        return jnp.stack([jnp.asarray(getattr(self, n)) for n in PARAM_NAMES])

    @classmethod
    def from_array(cls, x: Float[ArrayLike, " 6"]) -> GalaxyParams:
        x = jnp.asarray(x)
        if x.shape[-1:] != (len(PARAM_NAMES),):
            raise ValueError(
                f"`GalaxyParams.from_array`: expected a last axis of length {len(PARAM_NAMES)} "
                f"({', '.join(PARAM_NAMES)}); got shape {x.shape}."
            )
        return cls(*(x[..., i] for i in range(len(PARAM_NAMES))))

    def as_dict(self) -> dict[str, float]:
        return {n: float(getattr(self, n)) for n in PARAM_NAMES}

    def replace(self, **changes) -> GalaxyParams:
        unknown = sorted(set(changes) - set(PARAM_NAMES))
        if unknown:
            raise ValueError(
                f"`GalaxyParams.replace`: unknown parameter(s) {unknown}; the parameters are "
                f"{list(PARAM_NAMES)}."
            )
        return GalaxyParams(**{**{n: getattr(self, n) for n in PARAM_NAMES}, **changes})


def check_support(params: GalaxyParams, api: str, argument: str = "params") -> None:
    """Raise `ValueError` (host side) if a concrete parameter lies outside `SUPPORT`."""
    for name in PARAM_NAMES:
        value = getattr(params, name)
        if isinstance(value, jax.core.Tracer):
            continue
        v = np.asarray(value, np.float64)
        lo, hi = SUPPORT[name]
        if v.shape != ():
            raise ValueError(f"`{api}`: `{argument}.{name}` must be a scalar; got shape {v.shape}.")
        if not (np.isfinite(v) and lo < v < hi):
            raise ValueError(
                f"`{api}`: `{argument}.{name}` = {float(v)!r} is outside its support ({lo}, {hi}). "
                f"Start inside it, e.g. at the prior mean {DEFAULT_PRIOR[name][0]}."
            )


def to_unconstrained(params: GalaxyParams) -> Float[Array, " 6"]:
    """Scaled logit of each parameter inside its `SUPPORT` box."""
    x = params.to_array()
    lo = jnp.asarray([SUPPORT[n][0] for n in PARAM_NAMES], x.dtype)
    hi = jnp.asarray([SUPPORT[n][1] for n in PARAM_NAMES], x.dtype)
    s = (x - lo) / (hi - lo)
    return jnp.log(s) - jnp.log1p(-s)


def from_unconstrained(z: Float[ArrayLike, " 6"]) -> GalaxyParams:
    """Inverse of [`to_unconstrained`][diffgal.pipeline.to_unconstrained]."""
    z = jnp.asarray(z)
    lo = jnp.asarray([SUPPORT[n][0] for n in PARAM_NAMES], z.dtype)
    hi = jnp.asarray([SUPPORT[n][1] for n in PARAM_NAMES], z.dtype)
    return GalaxyParams.from_array(lo + (hi - lo) * jax.nn.sigmoid(z))


def log_prior(params: GalaxyParams, prior: dict[str, tuple[float, float]] | None) -> Array:
    """Gaussian log prior density (normalised) over the parameters named in `prior`."""
    if not prior:
        return jnp.zeros(())
    total = 0.0
    for name, (mu, sigma) in prior.items():
        x = jnp.asarray(getattr(params, name))
        total = total - 0.5 * ((x - mu) / sigma) ** 2 - math.log(sigma * math.sqrt(2 * math.pi))
    return total
