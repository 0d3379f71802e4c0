"""Type aliases and the one vocabulary of array dimension names used across diffgal.

Annotate arrays with jaxtyping and these names, e.g. `Float[Array, "n_time n_elem"]`. A
one-dimensional shape string starts with a space (`Float[Array, " n_elem"]`) so that linters do
not read it as a forward reference.
"""

from typing import TypeAlias

import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int, PRNGKeyArray, Real

__all__ = [
    "DIMENSIONS",
    "Array",
    "ArrayLike",
    "BoolScalar",
    "BoolScalarLike",
    "FloatScalar",
    "IntScalar",
    "IntScalarLike",
    "Key",
    "RealScalar",
    "RealScalarLike",
]

#: A Python or NumPy number, or a JAX scalar array, accepted wherever a real scalar is expected.
RealScalarLike: TypeAlias = bool | int | float | Array | np.bool_ | np.integer | np.floating
#: An integer scalar accepted as input.
IntScalarLike: TypeAlias = bool | int | Array | np.bool_ | np.integer
#: A boolean scalar accepted as input.
BoolScalarLike: TypeAlias = bool | Array | np.bool_

FloatScalar: TypeAlias = Float[Array, ""]
RealScalar: TypeAlias = Real[Array, ""]
IntScalar: TypeAlias = Int[Array, ""]
BoolScalar: TypeAlias = Bool[Array, ""]

#: A typed PRNG key, as made by `jax.random.key(seed)`.
Key: TypeAlias = PRNGKeyArray

#: Dimension names used in shape annotations, and what each one counts.
DIMENSIONS: dict[str, str] = {
    "n_star": "stars (or star particles / one-zone runs in a batch)",
    "n_time": "time nodes of an evolution grid (28 in the CHEMPY-faithful chemistry grid)",
    "n_elem": "traced chemical elements, in atomic-number order (H, He, C, N, O, Ne, Mg, Si, Fe)",
    "n_wave": "wavelength pixels of a spectrum or cube",
    "n_x": "spatial pixels along x of an image or cube",
    "n_y": "spatial pixels along y of an image or cube",
    "n_z": "metallicities of a yield table",
    "n_age": "ages of an SSP template grid",
    "n_met": "metallicities ([M/H]) of an SSP template grid",
    "n_mass": "stellar masses of a yield table or IMF grid",
    "n_bin": "mass bins of an SSP (one per yield-table mass inside a channel)",
    "n_param": "inferred parameters of a posterior",
    "n_global": "global parameters shared by all stars (alpha_IMF, log10 N_Ia)",
    "n_obs": "observed abundance columns of a star (8 in sbi-chempy's setup)",
    "n_pair": "held-out (theta, x) pairs of a calibration test",
    "n_draw": "posterior draws per observation",
    "n_level": "credibility levels of a coverage test",
}
