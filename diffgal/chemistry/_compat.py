"""CHEMPY / sbi-chempy compatible entry point and column orders."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float

from ._evolve import ChemicalHistory, evolve
from ._options import GCEOptions
from ._params import DEFAULT_LOG10_TAU_IA, ChemistryParams
from ._yields import Yields, load_yields

#: Elements of CHEMPY's output, in its (alphabetical) order.
CHEMPY_ELEMENTS: tuple[str, ...] = ("C", "Fe", "H", "He", "Mg", "N", "Ne", "O", "Si")

#: Column names of `chempy_tng` output: [X/Fe] for every element but Fe, and [Fe/H].
CHEMPY_COLUMNS: tuple[str, ...] = (
    "[C/Fe]", "[Fe/H]", "[H/Fe]", "[He/Fe]", "[Mg/Fe]", "[N/Fe]", "[Ne/Fe]", "[O/Fe]", "[Si/Fe]",
)

#: The 8 columns sbi-chempy observes (the [H/Fe] column dropped).
SBI_CHEMPY_COLUMNS: tuple[str, ...] = tuple(c for c in CHEMPY_COLUMNS if c != "[H/Fe]")


def chempy_columns(
    x_h: Float[ArrayLike, "*batch n_elem"], elements: tuple[str, ...]
) -> Float[Array, "*batch 9"]:
    """Reorder [X/H] into CHEMPY's output: [X/Fe] for X != Fe and [Fe/H], in `CHEMPY_COLUMNS`."""
    missing = [e for e in CHEMPY_ELEMENTS if e not in elements]
    if missing:
        raise ValueError(
            f"`chempy_columns`: the traced elements {elements} lack {missing}, which CHEMPY's "
            "output needs."
        )
    x_h = jnp.asarray(x_h)
    fe = x_h[..., elements.index("Fe")]
    cols = [
        fe if e == "Fe" else x_h[..., elements.index(e)] - fe for e in CHEMPY_ELEMENTS
    ]
    return jnp.stack(cols, axis=-1)


@eqx.filter_jit
def _chempy_batch(theta, log10_tau_ia, yields: Yields, options: GCEOptions, chunk_size):
    def one(row, tau):
        params = ChemistryParams.from_array(row, tau)
        hist = evolve(params, yields=yields, options=options, throw=False)
        cols = chempy_columns(hist.x_h()[-1], hist.elements)
        failed = hist.failed | ~jnp.all(jnp.isfinite(cols))
        return jnp.where(failed, jnp.nan, cols), failed

    if chunk_size is not None and theta.shape[0] > chunk_size:
        # A sequential map over vmapped chunks bounds memory (and keeps the working set in
        # cache) for large N.
        return jax.lax.map(lambda args: one(*args), (theta, log10_tau_ia), batch_size=chunk_size)
    return jax.vmap(one)(theta, log10_tau_ia)


def chempy_tng(
    theta: Float[ArrayLike, "n_star 6"],
    *,
    mode: str = "faithful",
    data_dir=None,
    log10_tau_ia: Float[ArrayLike, "*n_star"] | None = None,
    yields: Yields | str = "tng",
    chunk_size: int | None = 2048,
) -> tuple[Float[Array, "n_star 9"], Bool[Array, " n_star"]]:
    """sbi-chempy's simulator: abundances of stars born at `theta[:, 5]` in the TNG setup.

    **Arguments:**

    - `theta`: `(N, 6)` with columns alpha_IMF, log10_N_Ia, log10_SFE, log10_SFR_peak, x_out,
      T_birth [Gyr] (a `(6,)` vector is treated as N = 1).
    - `mode`: `"faithful"` (ChempyMulti-TNG, quirks included) or `"smooth"` (differentiable).
    - `data_dir`: directory holding `yields/tng/` (default: `DIFFGAL_DATA_DIR`).
    - `log10_tau_ia`: optional SN Ia delay, scalar or `(N,)` (default log10 0.04).
    - `yields`: another yield set (name or `Yields`) for misspecification studies.
    - `chunk_size`: above this N the runs are evaluated in vmapped chunks of this size inside a
      sequential `lax.map` (bounded memory); `None` vmaps all N at once.

    **Returns:**

    `(abundances, failed)`: `(N, 9)` in the column order of `CHEMPY_COLUMNS`
    ([C/Fe], [Fe/H], [H/Fe], [He/Fe], [Mg/Fe], [N/Fe], [Ne/Fe], [O/Fe], [Si/Fe]) and an `(N,)`
    bool mask of the runs the original code rejects (their rows are NaN, like the reference
    files; smooth mode never rejects, so there `failed` only marks undefined abundances).
    Works on any N under `jit`; differentiable in `theta` in smooth mode.
    """
    options = GCEOptions.from_mode(mode)
    if isinstance(yields, str):
        yields = load_yields(yields, data_dir=data_dir)
    theta = jnp.asarray(theta)
    if theta.ndim == 1:
        theta = theta[None]
    if theta.ndim != 2 or theta.shape[-1] != 6:
        raise ValueError(
            "`chempy_tng`: `theta` must have shape (N, 6) with columns alpha_IMF, log10_N_Ia, "
            f"log10_SFE, log10_SFR_peak, x_out, T_birth; got shape {theta.shape}."
        )
    if not jnp.issubdtype(theta.dtype, jnp.floating):
        theta = theta.astype(float)
    tau = DEFAULT_LOG10_TAU_IA if log10_tau_ia is None else log10_tau_ia
    tau = jnp.broadcast_to(jnp.asarray(tau, theta.dtype), theta.shape[:1])
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"`chempy_tng`: `chunk_size` must be >= 1 or None; got {chunk_size}.")
    return _chempy_batch(theta, tau, yields, options, chunk_size)


def chempy_history(theta_row, *, mode="faithful", data_dir=None) -> ChemicalHistory:
    """The full history of one `chempy_tng` run (a `(6,)` parameter row)."""
    params = ChemistryParams.from_array(jnp.asarray(theta_row, float))
    yields = load_yields("tng", data_dir=data_dir)
    return _evolve_jit(params, yields=yields, options=GCEOptions.from_mode(mode), throw=False)


_evolve_jit = eqx.filter_jit(evolve)
