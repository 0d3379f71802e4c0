"""Simple stellar population (SSP) returns: what a population born at one node gives back.

Everything here is a pure function of arrays and parts. The kernel evaluates the returns of one
SSP at every node of the time grid (zero before and at its birth node), so it works for any
increasing grid and needs no shifting.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from ._dtd import AbstractDTD
from ._imf import AbstractIMF, grid_mass_weights
from ._lifetimes import AbstractLifetimes, grid_dying_mass
from ._options import GCEOptions
from ._yields import StellarYieldTable, Yields

#: Number of bookkeeping columns appended to the element columns of an SSP return:
#: remnant mass, untraced ejecta, mass of stars dying.
N_EXTRA = 3


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


def _channel_columns(table: StellarYieldTable) -> Float[Array, "n_z n_bin n_col"]:
    """Per table: [net yields (n_elem), unprocessed ejecta, remnant, untraced net yields]."""
    net = jnp.asarray(table.net_yields)
    f_ej = jnp.asarray(table.ejected_fraction)
    f_rem = jnp.asarray(table.remnant_fraction)
    untraced = 1.0 - f_ej - f_rem - jnp.sum(net, axis=-1)
    return jnp.concatenate([net, f_ej[..., None], f_rem[..., None], untraced[..., None]], -1)


class StarContext(eqx.Module):
    """Per-run quantities shared by every SSP of that run (built once per run)."""

    time: Float[Array, " n_time"]
    cdf_table: Float[Array, " n_grid_plus_1"] | None
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
        assert ctx.cdf_table is not None
        return ctx.cdf_table[grid_count_below(m, grid)]
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
    cdf_table = None
    if options.imf_integration == "grid":
        dm = grid_mass_weights(imf, imf_grid(options, imf))
        cdf_table = jnp.concatenate([jnp.zeros((1,), dm.dtype), jnp.cumsum(dm)])
    ctx = StarContext(time, cdf_table, (), None, imf, lifetimes, dtd, jnp.asarray(n_ia))
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
    return StarContext(time, cdf_table, edge_cdf, norm, imf, lifetimes, dtd, jnp.asarray(n_ia))


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


def ssp_returns(
    birth_node: Int[ArrayLike, ""],
    metallicity: Float[ArrayLike, ""],
    composition: Float[Array, " n_elem"],
    ctx: StarContext,
    yields: Yields,
    options: GCEOptions,
    *,
    breakdown: bool = False,
):
    """Returns of an SSP of unit mass born at node `birth_node`, at every node of the grid.

    **Arguments:**

    - `birth_node`: index j of the birth node.
    - `metallicity`: Z of the SSP (sets lifetimes and yield interpolation).
    - `composition`: element mass fractions returned with the unprocessed ejecta.
    - `ctx`, `yields`, `options`: see [`diffgal.chemistry.evolve`][].
    - `breakdown`: also return the channels separately (for validation).

    **Returns:**

    `(n_time, n_elem + 3)`: per node, the traced element masses returned to the gas, then the
    remnant mass, the untraced ejecta and the mass of the stars dying (all per unit SSP mass).
    Zero at nodes `<= birth_node`. With `breakdown=True`, a dict of the channels as well.
    """
    time = ctx.time
    n_time = time.shape[0]
    n_elem = composition.shape[0]
    nodes = jnp.arange(n_time)
    after = nodes > birth_node
    age = jnp.maximum(time - time[birth_node], 0.0)
    m_lo = dying_mass(age, metallicity, ctx, options)
    m_hi = jnp.concatenate([m_lo[:1], m_lo[:-1]])
    c_lo = mass_cdf(m_lo, ctx, options)
    c_hi = jnp.concatenate([c_lo[:1], c_lo[:-1]])
    dying = jnp.where(after, c_hi - c_lo, 0.0)

    out = jnp.zeros((n_time, n_elem + N_EXTRA), dtype=composition.dtype)
    parts = {}
    covered = jnp.zeros((n_time,), composition.dtype)
    for name, table, edge_cdf in (
        ("cc", yields.cc, ctx.edge_cdf[0]),
        ("agb", yields.agb, ctx.edge_cdf[1]),
    ):
        w = channel_weights(c_hi, c_lo, edge_cdf)
        keep = after
        if name == "agb" and options.agb_crossing_gap:
            keep = keep & (m_lo >= table.mass_range[0])
        w = jnp.where(keep[:, None], w, 0.0)
        wz = metallicity_weights(
            metallicity,
            table.metallicities,
            log_z_floor=table.log_z_floor,
            extrapolate=options.yield_z_extrapolation,
        )
        columns = jnp.tensordot(wz, _channel_columns(table).astype(composition.dtype), axes=1)
        ret = w @ columns  # (n_time, n_elem + 3)
        covered = covered + jnp.sum(w, axis=-1)
        net, f_ej = ret[:, :n_elem], ret[:, n_elem]
        out = out.at[:, :n_elem].add(net + f_ej[:, None] * composition)
        out = out.at[:, n_elem:n_elem + 2].add(ret[:, n_elem + 1 :])
        if breakdown:
            parts[f"{name}_net"] = net
            parts[f"{name}_unprocessed"] = f_ej
    # Dying stars outside both channels (below 1 Msun, or the AGB crossing gap) keep their mass.
    out = out.at[:, n_elem].add(dying - covered)
    out = out.at[:, n_elem + 2].set(dying)

    n_snia = ctx.n_ia * snia_lag_fractions(age, after, ctx, options)
    snia = yields.snia
    per_event = jnp.asarray(snia.yields_per_event, composition.dtype)
    h_index = snia.elements.index("H")
    accreted = jnp.asarray(snia.accreted_hydrogen, composition.dtype)
    ejecta = n_snia[:, None] * per_event[None, :]
    out = out.at[:, :n_elem].add(ejecta)
    out = out.at[:, h_index].add(-n_snia * accreted)
    wd_mass = snia.remnant_fraction * snia.progenitor_mass
    out = out.at[:, n_elem].add(-n_snia * wd_mass)
    untraced_ia = jnp.asarray(snia.ejecta_mass, composition.dtype) - jnp.sum(per_event)
    out = out.at[:, n_elem + 1].add(n_snia * untraced_ia)
    if breakdown:
        parts.update(
            m_die=m_lo,
            dying=dying,
            n_snia=n_snia,
            snia_ejecta=ejecta,
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
