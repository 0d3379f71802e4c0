"""The one-zone orchestrator: ISM + corona evolved over the time grid with `lax.scan`."""

from __future__ import annotations

import typing

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float

from ._dtd import AbstractDTD, PowerLawDTD
from ._imf import AbstractIMF, ChabrierIMF
from ._lifetimes import AbstractLifetimes, PortinariLifetimes
from ._math import safe_log10, smooth_max, smooth_min
from ._options import GCEOptions
from ._params import AGE_OF_UNIVERSE, ChemistryParams
from ._sfh import AbstractSFH, GammaSFH
from ._solar import atomic_weights, metal_mask, solar_log_eps
from ._ssp import N_EXTRA, dying_mass, make_context, mass_cdf, ssp_returns
from ._yields import Yields

#: Primordial mass fractions (X, Y) of cosmic accretion, the initial corona and the first infall.
PRIMORDIAL = {"H": 0.76, "He": 0.24}

#: CHEMPY rejects a run whose SFR at the birth time is below this fraction of the mean SFR.
SFR_REJECTION_THRESHOLD = 0.05


class RESULTS(eqx.Enumeration):
    """Outcome of a run. Failed runs are flagged, never silently NaN."""

    successful = ""
    sfr_too_low_at_birth = (
        "the SFR at the birth time is below 5% of the mean SFR over the age of the Universe "
        "(CHEMPY 'shorten_sfr'); raise `log10_sfr_peak` or lower `birth_time`."
    )
    gas_below_sfr = "the ISM gas mass fell below the mass to be formed into stars."
    negative_mass = (
        "an ISM element, the ISM gas or the corona gas became negative (CHEMPY 'element "
        "became negative'); typical for a flat IMF with low SFE. Use `GCEOptions.smooth()` "
        "to avoid the yield extrapolation that causes it."
    )


@typing.final
class Margins(eqx.Module):
    """Differentiable distances to CHEMPY's rejection rules (negative means rejected)."""

    sfr_ratio: Float[Array, ""]
    gas_minus_sfr: Float[Array, ""]
    min_element_mass: Float[Array, ""]
    min_corona_mass: Float[Array, ""]


@typing.final
class ChemicalHistory(eqx.Module):
    """Full ISM + corona history of one run, per node, in units of the mass formed by T.

    **Fields:**

    - `time`: node times [Gyr], `(n_time,)`; the last node is the birth time.
    - `ism_mass`, `corona_mass`: element masses at the end of each node, `(n_time, n_elem)`.
    - `corona_gas_mass`: the corona gas, tracked as its own scalar like CHEMPY does (equal to
      the sum of `corona_mass` up to rounding).
    - `feedback_mass`: stellar returns arriving at each node before the outflow split.
    - `sfr_mass`: mass formed into stars at each node (sums to 1); `sfr` is the rate.
    - `infall_mass`: gas moved from the corona to the ISM (node 0: the initial fill).
    - `outflow_mass`: returned gas sent to the corona (`outflow_fraction` of the returns).
    - `ism_metallicity`: Z of the ISM.
    - `stellar_mass`: mass in living stars, from the IMF and the lifetimes of every SSP born so
      far (independent of the return bookkeeping).
    - `remnant_mass`: mass locked out of the gas, cumulative: remnants, dead stars of no
      channel and ejecta of untraced species (e.g. S, Ca in the TNG tables).
    - `accreted_mass`: cumulative cosmic accretion into the corona.
    - `mass_fraction_formed`: fraction of the 13.8-Gyr star formation formed by T.
    - `result`: a `RESULTS` item; `margins`: distances to the rejection rules.
    """

    time: Float[Array, " n_time"]
    ism_mass: Float[Array, "n_time n_elem"]
    corona_mass: Float[Array, "n_time n_elem"]
    corona_gas_mass: Float[Array, " n_time"]
    feedback_mass: Float[Array, "n_time n_elem"]
    sfr_mass: Float[Array, " n_time"]
    infall_mass: Float[Array, " n_time"]
    outflow_mass: Float[Array, " n_time"]
    ism_metallicity: Float[Array, " n_time"]
    stellar_mass: Float[Array, " n_time"]
    remnant_mass: Float[Array, " n_time"]
    accreted_mass: Float[Array, " n_time"]
    mass_fraction_formed: Float[Array, ""]
    result: RESULTS
    margins: Margins
    elements: tuple[str, ...] = eqx.field(static=True)

    @property
    def failed(self) -> Bool[Array, ""]:
        return self.result != RESULTS.successful

    @property
    def failure_reason(self) -> str:
        """Message of the outcome ("" when successful); only outside `jit`."""
        return RESULTS[self.result]

    @property
    def ism_gas_mass(self) -> Float[Array, " n_time"]:
        return jnp.sum(self.ism_mass, axis=-1)

    @property
    def sfr(self) -> Float[Array, " n_time"]:
        """Star-formation rate [per Gyr, in units of the mass formed by T]."""
        widths = _node_widths(self.time)
        return self.sfr_mass / widths

    def x_h(
        self, masses: Float[ArrayLike, "*batch n_elem"] | None = None
    ) -> Float[Array, "*batch n_elem"]:
        """[X/H] of the ISM at every node (or of given element `masses`)."""
        return bracket_x_h(self.ism_mass if masses is None else masses, self.elements)

    def fe_h(self, masses=None) -> Float[Array, "*batch"]:
        """[Fe/H] at every node (or of given element `masses`)."""
        return self.x_h(masses)[..., self.elements.index("Fe")]

    def x_fe(self, masses=None) -> Float[Array, "*batch n_elem"]:
        """[X/Fe] at every node (the Fe column is [Fe/H]... minus itself, i.e. 0)."""
        xh = self.x_h(masses)
        return xh - xh[..., self.elements.index("Fe"), None]

    def ism_mass_at(self, t: Float[ArrayLike, "*batch"]) -> Float[Array, "*batch n_elem"]:
        """ISM element masses at time(s) `t` [Gyr], linear in time between nodes."""
        t = jnp.asarray(t)
        interp = jax.vmap(lambda col: jnp.interp(t, self.time, col), in_axes=1, out_axes=-1)
        return interp(self.ism_mass)

    def abundances_at(self, t: Float[ArrayLike, "*batch"]) -> Float[Array, "*batch n_elem"]:
        """[X/H] of a star born at time(s) `t` [Gyr] within this run (differentiable in `t`)."""
        return self.x_h(self.ism_mass_at(t))


def bracket_x_h(
    masses: Float[ArrayLike, "*batch n_elem"], elements: tuple[str, ...]
) -> Float[Array, "*batch n_elem"]:
    """[X/H] = log10((m_X/A_X)/(m_H/A_H)) + 12 - eps_X,sun (Asplund+09).

    Zero element masses give -inf with finite (zero) gradients; negative masses give NaN.
    """
    masses = jnp.asarray(masses)
    weights = jnp.asarray(atomic_weights(elements), masses.dtype)
    eps_sun = jnp.asarray(solar_log_eps(elements), masses.dtype)
    h = elements.index("H")
    number = masses / weights
    log_n = jnp.where(masses < 0, jnp.nan, safe_log10(number))
    return log_n - log_n[..., h, None] + 12.0 - eps_sun


def _node_widths(time: Float[Array, " n_time"]) -> Float[Array, " n_time"]:
    dt = jnp.diff(time)
    return jnp.concatenate([dt[:1], dt])


def default_time_grid(n_time: int = 28) -> np.ndarray:
    """CHEMPY's grid as fractions of the birth time: `n_time` uniform nodes from 0 to 1."""
    return np.arange(n_time) / (n_time - 1)


def _checked_time_grid(time_grid) -> Array:
    grid = jnp.asarray(time_grid)
    if grid.ndim != 1 or grid.shape[0] < 3:
        raise ValueError(
            "`evolve`: `time_grid` must be a 1-D array of at least 3 node fractions of the "
            f"birth time (0 first, 1 last); got shape {grid.shape}."
        )
    bad = (grid[0] != 0) | (grid[-1] != 1) | jnp.any(jnp.diff(grid) <= 0)
    return eqx.error_if(
        grid,
        bad,
        "`evolve`: `time_grid` must increase strictly from 0 to 1 (fractions of the birth "
        "time); pass e.g. `numpy.linspace(0, 1, 28)`.",
    )


def _sfh_masses(sfh: AbstractSFH, time, options: GCEOptions):
    """Mass formed per node (sums to 1), fraction formed by T, and the SFR-at-birth ratio."""
    widths = _node_widths(time)
    g = sfh.rate(time)
    weighted = g * widths
    total = jnp.sum(weighted)
    s = weighted / total
    birth = time[-1]
    if options.sfh_normalisation == "nodes":
        n = time.shape[0]
        dt = birth / (n - 1)
        # CHEMPY: the same dt grid extended to the last node <= age of the Universe.
        k_last = jnp.floor((n - 1) * AGE_OF_UNIVERSE / birth)
        k_last = eqx.error_if(
            k_last,
            k_last >= options.max_extended_nodes,
            "`evolve`: `birth_time` is too small for CHEMPY's node-summed SFH normalisation; "
            "raise `GCEOptions.max_extended_nodes` or use `sfh_normalisation='analytic'`.",
        )
        k = jnp.arange(options.max_extended_nodes, dtype=time.dtype)
        g_ext = jnp.where(k <= k_last, sfh.rate(k * dt), 0.0)
        g_sum = jnp.sum(g_ext)
        frac = jnp.sum(g) / g_sum
        ratio = g[-1] * k_last / g_sum
    else:
        frac = sfh.cumulative(birth) / sfh.cumulative(AGE_OF_UNIVERSE)
        ratio = g[-1] * AGE_OF_UNIVERSE / sfh.cumulative(AGE_OF_UNIVERSE)
    return s, frac, ratio


def _check_cc_window(token, metallicity, yields: Yields, ctx, options: GCEOptions):
    """Raise if CC-SN progenitors of some SSP outlive the `n_cc_lags` window."""
    time = ctx.time
    n_time = time.shape[0]
    births = jnp.arange(n_time - 1)
    ends = jnp.minimum(births + options.n_cc_lags, n_time - 1)
    m_end = dying_mass(time[ends] - time[births], metallicity[:-1], ctx, options)
    outlived = (ends < n_time - 1) & (m_end > yields.cc.mass_range[0])
    return eqx.error_if(
        token,
        jnp.any(outlived),
        "`evolve`: the time steps are too short for `GCEOptions.n_cc_lags` (CC-SN progenitors "
        "outlive the window); raise `n_cc_lags` or set it to None.",
    )


def _living_stars(s, metallicity, ctx, options: GCEOptions):
    """Mass in living stars at each node: sum_j S_j (1 - C(m_die(0)) + C(m_die(t_n - t_j)))."""
    time = ctx.time

    def per_ssp(j, z):
        age = jnp.maximum(time - time[j], 0.0)
        c = mass_cdf(dying_mass(age, z, ctx, options), ctx, options)
        alive = 1.0 - c[j] + c
        return jnp.where(jnp.arange(time.shape[0]) >= j, alive, 0.0)

    alive = jax.vmap(per_ssp)(jnp.arange(time.shape[0]), metallicity)  # (ssp, node)
    return jnp.sum(s[:, None] * alive, axis=0)


def evolve(
    params: ChemistryParams,
    *,
    yields: Yields | str = "tng",
    imf: AbstractIMF | None = None,
    lifetimes: AbstractLifetimes | None = None,
    dtd: AbstractDTD | None = None,
    sfh: AbstractSFH | None = None,
    options: GCEOptions | None = None,
    time_grid: Float[ArrayLike, " n_time"] | None = None,
    data_dir=None,
    throw: bool = True,
) -> ChemicalHistory:
    """Evolve a one-zone ISM + corona from t = 0 to the birth time of one star.

    **Arguments:**

    - `params`: a [`diffgal.chemistry.ChemistryParams`][]. Its `imf_slope`, `log10_tau_ia` and
      `log10_sfr_peak` are bound into `imf`, `dtd` and `sfh`.
    - `yields`: a `Yields` set or the name of one (`"tng"`, `"default"`, a user file).
    - `imf`, `lifetimes`, `dtd`, `sfh`: the parts; defaults are ChempyMulti-TNG's
      (`ChabrierIMF`, `PortinariLifetimes`, `PowerLawDTD(slope=1.12)`, `GammaSFH(shape=2)`).
    - `options`: a [`diffgal.chemistry.GCEOptions`][]; default `GCEOptions.faithful()`.
    - `time_grid`: node times as fractions of the birth time, strictly increasing from 0 to 1;
      default 28 uniform nodes (CHEMPY).
    - `data_dir`: where to find yield tables when `yields` is a name.
    - `throw`: raise if the run is rejected (use `False` under `vmap`; check `result`).

    **Returns:**

    A [`diffgal.chemistry.ChemicalHistory`][].
    """
    if isinstance(yields, str):
        from ._yields import load_yields

        yields = load_yields(yields, data_dir=data_dir)
    imf = ChabrierIMF() if imf is None else imf
    lifetimes = PortinariLifetimes() if lifetimes is None else lifetimes
    dtd = PowerLawDTD() if dtd is None else dtd
    sfh = GammaSFH() if sfh is None else sfh
    options = GCEOptions.faithful() if options is None else options
    elements = yields.elements

    params = params.checked()
    dtype = jnp.result_type(float, *jax.tree_util.tree_leaves(params))
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), params)
    # Run in the parameters' precision: cast the (float64 numpy) tables once.
    yields = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), yields)
    imf = eqx.tree_at(lambda i: i.high_mass_slope, imf, params.imf_slope)
    dtd = eqx.tree_at(lambda d: d.delay, dtd, jnp.power(10.0, params.log10_tau_ia))
    sfh = eqx.tree_at(lambda s: s.log10_peak, sfh, params.log10_sfr_peak)

    grid = default_time_grid() if time_grid is None else time_grid
    grid = _checked_time_grid(jnp.asarray(grid, dtype))
    time = grid * params.birth_time
    n_time = time.shape[0]
    n_elem = len(elements)
    widths = _node_widths(time)

    s, frac, sfr_ratio = _sfh_masses(sfh, time, options)
    ctx = make_context(
        time, yields, imf, lifetimes, dtd, jnp.power(10.0, params.log10_n_ia), options
    )
    primordial = jnp.asarray([PRIMORDIAL.get(e, 0.0) for e in elements], dtype)
    metals = jnp.asarray(metal_mask(elements))
    x_out = params.outflow_fraction
    sfe = jnp.power(10.0, params.log10_sfe)
    smooth = options.clamps == "smooth"
    f_res = 1.0  # corona factor
    f_acc = 1.0  # cosmic accretion factor

    # Node 0: initial infall, then star formation.
    eff0 = sfe * widths[0]
    need0 = s[0] / eff0
    floor0 = 1.0000001 * s[0]
    infall0 = smooth_max(floor0, need0, options.smooth_clamp_width * s[0]) if smooth else (
        jnp.maximum(floor0, need0)
    )
    ism0 = primordial * (infall0 - s[0])
    corona0 = primordial * (f_acc * s[0] + f_res / frac - infall0)
    z0 = jnp.zeros((), dtype)

    def make_step(first: int):
        ssp = jax.checkpoint(
            lambda j, z, comp: ssp_returns(j, z, comp, ctx, yields, options, first_node=first),
            prevent_cse=False,
        )

        def step(carry, n):
            ism, corona, reservoir, prev_ism, z, queue = carry
            j = n - 1
            # CHEMPY issue #13: node j-1's composition (prev_ism is ism0 itself at j = 0).
            comp_source = prev_ism if options.ssp_composition_lag else ism
            composition = comp_source / jnp.sum(comp_source)
            queue = queue.at[first:].add(s[j] * ssp(j, z, composition))
            returned = queue[n]
            feedback = returned[:n_elem]
            ism_new = ism + (1 - x_out) * feedback
            corona_new = corona + x_out * feedback + f_acc * s[n] * primordial
            # CHEMPY tracks the corona gas as its own scalar (not the sum of its elements).
            reservoir = reservoir + f_acc * s[n] + x_out * jnp.sum(feedback)
            # Kennicutt-Schmidt infall from the corona.
            need = s[n] / (sfe * widths[n])
            gas = jnp.sum(ism_new)
            if smooth:
                eps = options.smooth_clamp_width * s[n]
                infall = smooth_max(0.0, (need - gas) * (1 + 1e-8), eps)
                infall = smooth_max(infall, 1.01 * (s[n] - gas), eps)
                infall = smooth_min(infall, reservoir, eps)
            else:
                infall = jnp.maximum(0.0, (need - gas) * (1 + 1e-8))
                infall = jnp.where(infall + gas <= s[n], 1.01 * (s[n] - gas), infall)
                infall = jnp.where(infall > reservoir, reservoir, infall)
            moved = infall * corona_new / reservoir
            ism_new = ism_new + moved
            corona_new = corona_new - moved
            reservoir = reservoir - infall
            gas = jnp.sum(ism_new)
            gas_minus_sfr = gas - s[n]
            ism_new = ism_new * (1 - s[n] / gas)
            z_new = jnp.sum(jnp.where(metals, ism_new, 0.0)) / jnp.sum(ism_new)
            out = (ism_new, corona_new, reservoir, feedback, infall, x_out * jnp.sum(feedback),
                   z_new, returned[n_elem:], gas_minus_sfr)
            return (ism_new, corona_new, reservoir, ism, z_new, queue), out

        return step

    queue0 = jnp.zeros((n_time, n_elem + N_EXTRA), dtype)
    reservoir0 = jnp.sum(corona0)
    carry = (ism0, corona0, reservoir0, ism0, z0, queue0)
    # Later SSPs only need later nodes: scan in segments whose SSP kernels skip the past.
    n_seg = max(1, min(options.scan_segments, n_time - 1))
    bounds = sorted({1 + round(k * (n_time - 1) / n_seg) for k in range(n_seg + 1)})
    segment_outs = []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        carry, outs = jax.lax.scan(make_step(lo - 1), carry, jnp.arange(lo, hi))
        segment_outs.append(outs)
    outs = jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs, axis=0), *segment_outs)
    ism_s, corona_s, reservoir_s, feedback_s, infall_s, outflow_s, z_s, extra_s, gas_margin_s = (
        outs
    )

    def with_first(first, rest):
        return jnp.concatenate([jnp.asarray(first, dtype)[None], rest], axis=0)

    ism = with_first(ism0, ism_s)
    corona = with_first(corona0, corona_s)
    corona_gas = with_first(reservoir0, reservoir_s)
    feedback = with_first(jnp.zeros(n_elem, dtype), feedback_s)
    infall = with_first(infall0, infall_s)
    outflow = with_first(0.0, outflow_s)
    metallicity = with_first(z0, z_s)
    if options.n_cc_lags is not None and options.n_cc_lags < n_time - 1:
        ism = _check_cc_window(ism, metallicity, yields, ctx, options)
    dying = with_first(jnp.zeros(N_EXTRA, dtype), extra_s)[:, 0]
    remnant = jnp.cumsum(dying - jnp.sum(feedback, axis=-1))
    stellar = _living_stars(s, metallicity, ctx, options)
    accreted = jnp.cumsum(f_acc * s)

    # CHEMPY tests node i after filling node i+1: the last node is never tested.
    checked_ism = ism[:-1]
    min_element = jnp.min(checked_ism)
    min_gas = jnp.min(jnp.sum(checked_ism, -1))
    min_corona = jnp.min(corona_gas[:-1])
    margins = Margins(
        sfr_ratio=sfr_ratio - SFR_REJECTION_THRESHOLD,
        gas_minus_sfr=jnp.min(gas_margin_s),
        min_element_mass=jnp.minimum(min_element, min_gas),
        min_corona_mass=min_corona,
    )
    result = RESULTS.successful
    if options.rejection:
        # First failure in time wins, as in CHEMPY.
        neg_node = jnp.any(checked_ism < 0, -1) | (corona_gas[:-1] < 0)
        gas_node = gas_margin_s < 0
        first_neg = jnp.argmax(jnp.concatenate([neg_node, jnp.zeros(1, bool)]))
        first_neg = jnp.where(jnp.any(neg_node), first_neg + 1, n_time + 1)  # seen one node late
        first_gas = jnp.where(jnp.any(gas_node), jnp.argmax(gas_node) + 1, n_time + 1)
        result = RESULTS.where(
            jnp.any(neg_node) & (first_neg < first_gas), RESULTS.negative_mass, result
        )
        result = RESULTS.where(
            jnp.any(gas_node) & (first_gas <= first_neg), RESULTS.gas_below_sfr, result
        )
        result = RESULTS.where(
            sfr_ratio < SFR_REJECTION_THRESHOLD, RESULTS.sfr_too_low_at_birth, result
        )
        if throw:
            ism = result.error_if(ism, result != RESULTS.successful)
    return ChemicalHistory(
        time=time,
        ism_mass=ism,
        corona_mass=corona,
        corona_gas_mass=corona_gas,
        feedback_mass=feedback,
        sfr_mass=s,
        infall_mass=infall,
        outflow_mass=outflow,
        ism_metallicity=metallicity,
        stellar_mass=stellar,
        remnant_mass=remnant,
        accreted_mass=accreted,
        mass_fraction_formed=frac,
        result=result,
        margins=margins,
        elements=elements,
    )
