"""Simple stellar population (SSP) returns: what a population born at one node gives back.

Everything here is a pure function of arrays and parts. The kernel evaluates the returns of one
SSP at every node of the time grid (zero before and at its birth node), so it works for any
increasing grid and needs no shifting.
"""

from __future__ import annotations

import typing

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from ._dtd import AbstractDTD
from ._imf import AbstractIMF, GridCDF
from ._lifetimes import AbstractLifetimes, grid_dying_mass
from ._options import GCEOptions
from ._yields import StellarYieldTable, Yields

#: Number of bookkeeping columns appended to the element columns of an SSP return: the mass
#: of the stars dying.
N_EXTRA = 1


def bin_edges(table: StellarYieldTable, dtype=float) -> Float[Array, " n_edge"]:
    """Descending mass-bin edges of a channel: range top, midpoints of neighbours, range bottom."""
    masses = jnp.asarray(table.masses, dtype=dtype)
    lo, hi = table.mass_range
    mids = 0.5 * (masses[:-1] + masses[1:])
    return jnp.concatenate([jnp.array([hi], dtype), mids, jnp.array([lo], dtype)])


def metallicity_weights(
    metallicity: Float[ArrayLike, ""],
    table_z: Float[ArrayLike, " n_z"],
    *,
    log_z_floor: float,
    extrapolate: bool,
) -> Float[Array, " n_z"]:
    """Weights of the tables in CHEMPY's log-linear metallicity interpolation.

    Below the first / above the last table metallicity the end table is used. Between tables the
    weights are linear in log Z, with a table Z = 0 replaced by `log_z_floor`. So for
    `0 < Z < log_z_floor` the weights extrapolate (CHEMPY) unless `extrapolate=False`, which
    clips them to [0, 1].
    """
    z = jnp.asarray(metallicity)
    table_z = jnp.asarray(table_z)
    n_z = table_z.shape[0]
    if n_z == 1:
        return jnp.ones((1,), dtype=z.dtype)
    idx = jnp.clip(jnp.searchsorted(table_z, z, side="right") - 1, 0, n_z - 2)
    z_a = table_z[idx]
    z_b = table_z[idx + 1]
    inside = (z > table_z[0]) & (z < table_z[-1])
    z_safe = jnp.where(inside, z, z_b)
    log_a = jnp.log(jnp.maximum(z_a, log_z_floor))
    log_b = jnp.log(z_b)
    w_a = (log_b - jnp.log(z_safe)) / (log_b - log_a)
    if not extrapolate:
        w_a = jnp.clip(w_a, 0.0, 1.0)
    interior = w_a * jax.nn.one_hot(idx, n_z, dtype=z.dtype) + (1 - w_a) * jax.nn.one_hot(
        idx + 1, n_z, dtype=z.dtype
    )
    first = jax.nn.one_hot(0, n_z, dtype=z.dtype)
    last = jax.nn.one_hot(n_z - 1, n_z, dtype=z.dtype)
    return jnp.where(z <= table_z[0], first, jnp.where(z >= table_z[-1], last, interior))


@typing.final
class StarContext(eqx.Module):
    """Per-run quantities shared by every SSP of that run (built once per run)."""

    time: Float[Array, " n_time"]
    grid_cdf: GridCDF | None
    edge_cdf: tuple[Float[Array, " n_edge"], ...]
    snia_node_norm: Float[Array, ""] | None
    imf: AbstractIMF
    lifetimes: AbstractLifetimes
    dtd: AbstractDTD
    n_ia: Float[Array, ""]


def imf_grid(options: GCEOptions, imf: AbstractIMF) -> np.ndarray:
    return np.linspace(imf.mass_min, imf.mass_max, options.n_imf_grid)


def grid_count_below(m: Float[ArrayLike, "*shape"], grid: np.ndarray) -> Int[Array, "*shape"]:
    """Number of points of the linear `grid` strictly below `m` (= searchsorted side='left')."""
    n = grid.shape[0]
    step = (grid[-1] - grid[0]) / (n - 1)
    grid_j = jnp.asarray(grid)
    m = jnp.asarray(m)
    c = jnp.clip(jnp.ceil((m - grid[0]) / step).astype(jnp.int32), 0, n)
    # One correction step each way absorbs the rounding of the estimate.
    c = jnp.where((c < n) & (grid_j[jnp.minimum(c, n - 1)] < m), c + 1, c)
    c = jnp.where((c > 0) & (grid_j[jnp.maximum(c - 1, 0)] >= m), c - 1, c)
    return c


def mass_cdf(
    m: Float[ArrayLike, "*shape"], ctx: StarContext, options: GCEOptions
) -> Float[Array, "*shape"]:
    """IMF mass fraction below `m`: grid sums (CHEMPY) or the closed form."""
    if options.imf_integration == "grid":
        grid = imf_grid(options, ctx.imf)
        assert ctx.grid_cdf is not None
        return ctx.grid_cdf(grid_count_below(m, grid))
    return ctx.imf.mass_cdf(m)


def dying_mass(
    age: Float[ArrayLike, "*shape"], metallicity, ctx: StarContext, options: GCEOptions
) -> Float[Array, "*shape"]:
    """Dying mass at `age` [Gyr] (clamped to the IMF range; `mass_max` at age 0)."""
    imf = ctx.imf
    if options.lifetime_inversion == "grid":
        return grid_dying_mass(ctx.lifetimes, age, metallicity, imf_grid(options, imf))
    return ctx.lifetimes.dying_mass(age, metallicity, imf.mass_min, imf.mass_max)


def make_context(
    time: Float[Array, " n_time"],
    yields: Yields,
    imf: AbstractIMF,
    lifetimes: AbstractLifetimes,
    dtd: AbstractDTD,
    n_ia: Float[Array, ""],
    options: GCEOptions,
) -> StarContext:
    """Precompute the IMF CDF table, the CDF at the bin edges and the SN Ia normalisation."""
    grid_cdf = None
    if options.imf_integration == "grid":
        grid_cdf = GridCDF(imf, imf_grid(options, imf), time.dtype)
    ctx = StarContext(time, grid_cdf, (), None, imf, lifetimes, dtd, jnp.asarray(n_ia))
    edge_cdf = tuple(
        mass_cdf(bin_edges(t, time.dtype), ctx, options)
        for t in (yields.cc, yields.agb)
    )
    norm = None
    if options.dtd == "nodes":
        # CHEMPY: node values, normalised by the sum over nodes k*dt up to the first >= horizon.
        n_time = time.shape[0]
        dt = time[-1] / (n_time - 1)
        k_last = jnp.ceil(dtd.horizon / dt)
        k_last = eqx.error_if(
            k_last,
            k_last >= options.max_extended_nodes,
            "`evolve`: `birth_time` is too small for the node-valued SN Ia DTD "
            "(more nodes than `GCEOptions.max_extended_nodes` up to the horizon); "
            "raise `max_extended_nodes` or use `dtd='bins'`.",
        )
        k = jnp.arange(options.max_extended_nodes, dtype=time.dtype)
        norm = jnp.sum(jnp.where(k <= k_last, dtd.rate(k * dt), 0.0))
    return StarContext(time, grid_cdf, edge_cdf, norm, imf, lifetimes, dtd, jnp.asarray(n_ia))


def channel_weights(
    c_hi: Float[Array, " n_time"],
    c_lo: Float[Array, " n_time"],
    edge_cdf: Float[Array, " n_edge"],
) -> Float[Array, "n_time n_bin"]:
    """IMF mass in each bin `[e_{b+1}, e_b)` intersected with the dying range of each step.

    `max(0, min(C(e_b), C(m_hi)) - max(C(e_{b+1}), C(m_lo)))`: equal to CHEMPY's
    `C(min(e_b, m_hi)) - C(max(e_{b+1}, m_lo))` if positive, since C is monotone.
    """
    upper = jnp.minimum(edge_cdf[None, :-1], c_hi[:, None])
    lower = jnp.maximum(edge_cdf[None, 1:], c_lo[:, None])
    return jnp.maximum(upper - lower, 0.0)


def _channel_columns(table: StellarYieldTable, dtype) -> Float[Array, "n_z n_bin n_col"]:
    """Per table metallicity and mass bin: [net yields (n_elem), unprocessed ejecta fraction]."""
    net = jnp.asarray(table.net_yields, dtype)
    f_ej = jnp.asarray(table.ejected_fraction, dtype)
    return jnp.concatenate([net, f_ej[..., None]], -1)


def ssp_returns(
    birth_node: Int[ArrayLike, ""],
    metallicity: Float[ArrayLike, ""],
    composition: Float[Array, " n_elem"],
    ctx: StarContext,
    yields: Yields,
    options: GCEOptions,
    *,
    first_node: int = 0,
    breakdown: bool = False,
):
    """Returns of an SSP of unit mass born at node `birth_node`, at every node of the grid.

    **Arguments:**

    - `birth_node`: index j of the birth node.
    - `metallicity`: Z of the SSP (sets lifetimes and yield interpolation).
    - `composition`: element mass fractions returned with the unprocessed ejecta.
    - `ctx`, `yields`, `options`: see [`diffgal.chemistry.evolve`][].
    - `first_node`: evaluate nodes `first_node, ..., n_time - 1` only (static; must be
      `<= birth_node`). `evolve` uses it to skip nodes that are already in the past.
    - `breakdown`: also return the channels separately (for validation).

    **Returns:**

    `(n_time - first_node, n_elem + 1)`: per node, the traced element masses returned to the
    gas, then the mass of the stars dying (both per unit SSP mass). Zero at nodes
    `<= birth_node`. With `breakdown=True`, a dict of the channels as well.
    """
    time = ctx.time[first_node:]
    dtype = composition.dtype
    n_time = time.shape[0]
    n_elem = composition.shape[0]
    after = jnp.arange(first_node, first_node + n_time) > birth_node
    age = jnp.maximum(time - ctx.time[birth_node], 0.0)
    m_lo = dying_mass(age, metallicity, ctx, options)
    c_lo = mass_cdf(m_lo, ctx, options)
    c_hi = jnp.concatenate([c_lo[:1], c_lo[:-1]])
    dying = jnp.where(after, c_hi - c_lo, 0.0)

    returned = jnp.zeros((n_time, n_elem + 1), dtype)
    parts = {}
    n_cc = n_time if options.n_cc_lags is None else min(options.n_cc_lags, n_time)
    # CC-SN progenitors (> 8 Msun) live < ~45 Myr, so only the first few steps after birth can
    # hold CC-SNe: evaluate that window only (exact while the window outlasts them).
    cc_start = jnp.clip(birth_node + 1 - first_node, 0, n_time - n_cc)
    for name, table, edge_cdf in (
        ("cc", yields.cc, ctx.edge_cdf[0]),
        ("agb", yields.agb, ctx.edge_cdf[1]),
    ):
        keep, hi, lo = after, c_hi, c_lo
        if name == "agb" and options.agb_crossing_gap:
            keep = keep & (m_lo >= table.mass_range[0])
        if name == "cc" and n_cc < n_time:
            keep, hi, lo = (
                jax.lax.dynamic_slice_in_dim(x, cc_start, n_cc) for x in (after, c_hi, c_lo)
            )
        w = jnp.where(keep[:, None], channel_weights(hi, lo, edge_cdf), 0.0)
        wz = metallicity_weights(
            metallicity,
            table.metallicities,
            log_z_floor=table.log_z_floor,
            extrapolate=options.yield_z_extrapolation,
        )
        columns = jnp.tensordot(wz, _channel_columns(table, dtype), axes=1)  # (n_bin, n_col)
        # A broadcast multiply-and-sum fuses with the weights; a batched matmul does not.
        ret = jnp.sum(w[:, :, None] * columns[None], axis=1)  # (n_window, n_elem + 1)
        if name == "cc" and n_cc < n_time:
            ret = jax.lax.dynamic_update_slice_in_dim(jnp.zeros_like(returned), ret, cc_start, 0)
        returned = returned + ret
        if breakdown:
            parts[f"{name}_net"] = ret[:, :n_elem]
            parts[f"{name}_unprocessed"] = ret[:, n_elem]

    n_snia = ctx.n_ia * snia_lag_fractions(age, after, ctx, options)
    snia = yields.snia
    per_event = jnp.asarray(snia.yields_per_event, dtype)
    is_h = jnp.asarray([e == "H" for e in snia.elements])
    accreted = jnp.asarray(snia.accreted_hydrogen, dtype)
    snia_net = per_event - jnp.where(is_h, accreted, 0.0)
    gas = (
        returned[:, :n_elem]
        + returned[:, n_elem, None] * composition
        + n_snia[:, None] * snia_net
    )
    out = jnp.concatenate([gas, dying[:, None]], axis=-1)
    if breakdown:
        parts.update(
            m_die=m_lo,
            dying=dying,
            n_snia=n_snia,
            snia_ejecta=n_snia[:, None] * per_event,
            h_accreted=n_snia * accreted,
            unprocessed=parts["cc_unprocessed"] + parts["agb_unprocessed"],
        )
        return out, parts
    return out


def snia_lag_fractions(
    age: Float[Array, " n_time"],
    after: Bool[Array, " n_time"],
    ctx: StarContext,
    options: GCEOptions,
) -> Float[Array, " n_time"]:
    """Fraction of an SSP's SN Ia (within the horizon) that explode in each node's step."""
    dtd = ctx.dtd
    if options.dtd == "nodes":
        assert ctx.snia_node_norm is not None
        frac = dtd.rate(age) / ctx.snia_node_norm
    else:
        age_prev = jnp.concatenate([age[:1], age[:-1]])
        frac = dtd.bin_fractions(age_prev, age)
    return jnp.where(after, frac, 0.0)
