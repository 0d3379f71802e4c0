"""The physical parameters of one chemical-evolution run."""

from __future__ import annotations

import math
import typing

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

#: Planck-15 age of the Universe [Gyr] used by CHEMPY to build its time grid.
AGE_OF_UNIVERSE: float = 13.797617

#: CHEMPY-TNG's fixed SN Ia delay, 0.04 Gyr.
DEFAULT_LOG10_TAU_IA: float = math.log10(0.04)

#: Order of the columns of `theta` in `chempy_tng` and `ChemistryParams.from_array`.
THETA_COLUMNS: tuple[str, ...] = (
    "imf_slope", "log10_n_ia", "log10_sfe", "log10_sfr_peak", "outflow_fraction", "birth_time",
)


#: Valid (or, for unbounded parameters, typical: the original CHEMPY prior bounds) ranges,
#: quoted in error messages.
VALID_RANGES: dict[str, str] = {
    "imf_slope": "(-4, -1) (typical)",
    "log10_n_ia": "(-5, -1) (typical)",
    "log10_sfe": "(-3, 2) (typical)",
    "log10_sfr_peak": "(-1, 1) (typical)",
    "outflow_fraction": "[0, 1]",
    "birth_time": f"(0, {AGE_OF_UNIVERSE}] Gyr",
    "log10_tau_ia": "(-3, 1) (typical)",
}


@typing.final
class ChemistryParams(eqx.Module):
    """Parameters of a one-zone run (one star), all differentiable.

    **Fields:**

    - `imf_slope`: high-mass IMF slope alpha_IMF, dN/dm ∝ m^alpha (TNG prior N(-2.3, 0.3)).
    - `log10_n_ia`: log10 of the SN Ia number per Msun of SSP mass within the DTD horizon.
    - `log10_sfe`: log10 star-formation efficiency [1/Gyr].
    - `log10_sfr_peak`: log10 of the Gamma-SFH scale theta [Gyr] (peak time for shape 2).
    - `outflow_fraction`: x_out, fraction of stellar ejecta sent to the corona, in [0, 1].
    - `birth_time`: T [Gyr] after the start of the model, the last node of the time grid.
    - `log10_tau_ia`: log10 of the SN Ia minimum delay [Gyr] (fixed at log10 0.04 in sbi-chempy).
    """

    imf_slope: Float[ArrayLike, ""] = -2.3
    log10_n_ia: Float[ArrayLike, ""] = -2.89
    log10_sfe: Float[ArrayLike, ""] = -0.3
    log10_sfr_peak: Float[ArrayLike, ""] = 0.55
    outflow_fraction: Float[ArrayLike, ""] = 0.5
    birth_time: Float[ArrayLike, ""] = 12.0
    log10_tau_ia: Float[ArrayLike, ""] = DEFAULT_LOG10_TAU_IA

    @classmethod
    def from_array(
        cls, theta: Float[ArrayLike, " 6"], log10_tau_ia: Float[ArrayLike, ""] | None = None
    ) -> ChemistryParams:
        """From a `(6,)` vector in the column order of `THETA_COLUMNS` (sbi-chempy's order)."""
        theta = jnp.asarray(theta)
        if theta.shape[-1:] != (6,):
            raise ValueError(
                "`ChemistryParams.from_array`: `theta` must have a last axis of length 6 "
                f"({', '.join(THETA_COLUMNS)}); got shape {theta.shape}."
            )
        tau = DEFAULT_LOG10_TAU_IA if log10_tau_ia is None else log10_tau_ia
        return cls(*(theta[..., i] for i in range(6)), log10_tau_ia=jnp.asarray(tau))

    def to_array(self) -> Float[Array, " 7"]:
        """`(7,)` vector: the six columns of `THETA_COLUMNS` followed by `log10_tau_ia`."""
        return jnp.stack(
            [jnp.asarray(getattr(self, name)) for name in (*THETA_COLUMNS, "log10_tau_ia")], -1
        )

    def checked(self) -> ChemistryParams:
        """Return `self` with run-time checks attached: finite values and valid ranges.

        Raises (through `eqx.error_if`, so also under `jit` and `vmap`) for NaN or inf
        parameters, `outflow_fraction` outside [0, 1] and `birth_time` outside
        (0, 13.797617] Gyr.
        """
        values = {}
        for name in (*THETA_COLUMNS, "log10_tau_ia"):
            x = jnp.asarray(getattr(self, name))
            x = eqx.error_if(
                x,
                ~jnp.isfinite(x),
                f"`ChemistryParams`: `{name}` must be a finite number in {VALID_RANGES[name]}; "
                "got NaN or inf. Check the inputs of this run.",
            )
            values[name] = x
        x = values["outflow_fraction"]
        values["outflow_fraction"] = eqx.error_if(
            x,
            (x < 0) | (x > 1),
            "`ChemistryParams`: `outflow_fraction` (x_out) must lie in [0, 1]; "
            "pass a fraction, not a percentage.",
        )
        t = values["birth_time"]
        values["birth_time"] = eqx.error_if(
            t,
            (t <= 0) | (t > AGE_OF_UNIVERSE),
            f"`ChemistryParams`: `birth_time` must lie in (0, {AGE_OF_UNIVERSE}] Gyr "
            "(time after the start of the model, not an age); got a value outside it.",
        )
        return ChemistryParams(**values)
