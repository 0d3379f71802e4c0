"""The composed model: chemistry -> star particles -> IFU cube, and -> stellar abundances."""

from __future__ import annotations

import dataclasses
import typing

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ..chemistry import (
    AbstractDTD,
    AbstractIMF,
    AbstractLifetimes,
    AbstractSFH,
    ChabrierIMF,
    ChemicalHistory,
    ChemistryParams,
    GammaSFH,
    GCEOptions,
    PortinariLifetimes,
    PowerLawDTD,
    Yields,
    bracket_x_h,
    evolve,
)
from ..chemistry._solar import atomic_weights, metal_mask, solar_log_eps
from ..galaxy._mock import MockGalaxy
from ..ifu import IFUCube, IFURenderer, StellarParticles
from ..ifu._render import _safe_log10_age
from ..spectra import bilinear_weights
from ._params import GalaxyParams

#: Smallest metal-to-hydrogen mass ratio used for [M/H] (a star born from primordial gas would
#: otherwise get -inf); [M/H] there is about -9, far below every template grid, which clamps
#: and counts such particles.
_MIN_METAL_RATIO = 1e-12


def sfh_birth_times(
    sfh: AbstractSFH, quantile: Float[ArrayLike, " n_star"], t_obs: float, n_table: int = 1024
) -> Float[Array, " n_star"]:
    """Birth times t(u) with C(t) = u C(t_obs), C the SFH's cumulative integral.

    The value comes from a table lookup refined by two Newton steps under `stop_gradient`; a
    final Newton step carries the gradient, which is then the exact implicit-function gradient
    dt/dθ = -(∂C/∂θ(t) - u ∂C/∂θ(t_obs)) / g(t) (one Newton step at a root reproduces it).
    The table nodes are quadratic in t and the lookup is linear in sqrt(C), so the start is
    already close where C rises as a power of t near t = 0 (C ∝ t² for the Gamma(2) SFH), where
    a linear lookup would leave Newton far from the root.
    """
    u = jnp.asarray(quantile)
    dtype = u.dtype
    t_tab = t_obs * jnp.linspace(0.0, 1.0, n_table, dtype=dtype) ** 2
    c_end = sfh.cumulative(jnp.asarray(t_obs, dtype))
    target = u * c_end

    def newton(t, tgt):
        g = jnp.maximum(sfh.rate(t), jnp.finfo(dtype).tiny)
        return jnp.clip(t - (sfh.cumulative(t) - tgt) / g, 0.0, t_obs)

    sg = jax.lax.stop_gradient
    c_tab = sg(sfh.cumulative(t_tab) / c_end)
    t = sg(jnp.interp(jnp.sqrt(u), jnp.sqrt(c_tab), t_tab))
    for _ in range(2):
        t = sg(newton(t, sg(target)))
    return newton(t, target)


@typing.final
class ChemistryModel(eqx.Module):
    """The one-zone chemistry part of the pipeline: yields, IMF, lifetimes, DTD, SFH, options.

    Every field is swappable (`eqx.tree_at` or build a new one). The parameters in
    [`GalaxyParams`][diffgal.pipeline.GalaxyParams] are bound into the IMF (slope), DTD
    (delay) and SFH (peak) at each call, as in [`diffgal.chemistry.evolve`][].
    """

    yields: Yields
    imf: AbstractIMF
    lifetimes: AbstractLifetimes
    dtd: AbstractDTD
    sfh: AbstractSFH
    options: GCEOptions
    n_time: int = eqx.field(static=True, default=28)

    def history(self, params: GalaxyParams, t_obs: float) -> ChemicalHistory:
        """The ISM history from t = 0 to `t_obs` [Gyr] (never rejected; see `margins`).

        Compiled once per model structure (and `t_obs`), so eager calls (plots, mock
        catalogues, `JointLikelihood.terms`) do not re-trace the time loop each time.
        """
        return _history(self, jax.tree.map(jnp.asarray, params), t_obs)

    def bound_sfh(self, params: GalaxyParams) -> AbstractSFH:
        return eqx.tree_at(lambda s: s.log10_peak, self.sfh, jnp.asarray(params.log10_sfr_peak))


@eqx.filter_jit
def _history(chem: ChemistryModel, params: GalaxyParams, t_obs) -> ChemicalHistory:
    cp = ChemistryParams(
        imf_slope=params.imf_slope,
        log10_n_ia=params.log10_n_ia,
        log10_sfe=params.log10_sfe,
        log10_sfr_peak=params.log10_sfr_peak,
        outflow_fraction=params.outflow_fraction,
        birth_time=t_obs,
        log10_tau_ia=params.log10_tau_ia,
    )
    return evolve(
        cp, yields=chem.yields, imf=chem.imf, lifetimes=chem.lifetimes, dtd=chem.dtd,
        sfh=chem.sfh, options=chem.options, time_grid=np.linspace(0.0, 1.0, chem.n_time),
        throw=False,
    )


def make_chemistry(
    yields: Yields | str = "auto",
    *,
    imf: AbstractIMF | None = None,
    lifetimes: AbstractLifetimes | None = None,
    dtd: AbstractDTD | None = None,
    sfh: AbstractSFH | None = None,
    options: GCEOptions | None = None,
    n_time: int = 28,
    data_dir=None,
) -> ChemistryModel:
    """A [`ChemistryModel`][diffgal.pipeline.ChemistryModel] with the CHEMPY-TNG parts and
    `GCEOptions.smooth()` (differentiable in every parameter; one scan segment) by default.

    `yields="auto"` uses the TNG tables when they are in the data directory and the offline
    `default` set otherwise (see [`diffgal.chemistry.load_yields`][]).
    """
    from ..chemistry import available_yield_sets, load_yields

    if yields == "auto":
        yields = "tng" if available_yield_sets(data_dir)["tng"] == "available" else "default"
    if isinstance(yields, str):
        yields = load_yields(yields, data_dir=data_dir)
    if not isinstance(yields, Yields):
        raise TypeError(
            f"`make_chemistry`: `yields` must be a yield-set name or a `Yields`; got "
            f"{type(yields).__name__}."
        )
    if not (isinstance(n_time, int) and n_time >= 3):
        raise ValueError(f"`make_chemistry`: `n_time` must be an int >= 3; got {n_time!r}.")
    return ChemistryModel(
        yields=yields,
        imf=ChabrierIMF() if imf is None else imf,
        lifetimes=PortinariLifetimes() if lifetimes is None else lifetimes,
        dtd=PowerLawDTD() if dtd is None else dtd,
        sfh=GammaSFH() if sfh is None else sfh,
        # One scan segment: same numbers as the default 6, and its gradient compiles ~3.5x faster
        # (what dominates a fit of a single galaxy).
        options=(dataclasses.replace(GCEOptions.smooth(), scan_segments=1) if options is None
                 else options),
        n_time=n_time,
    )


def _solar_metal_ratio(elements: tuple[str, ...]) -> float:
    """Σ_metals m_X / m_H of the Sun over the traced metals only (Asplund+09)."""
    w = atomic_weights(elements)
    eps = solar_log_eps(elements)
    number = 10.0 ** (eps - 12.0)
    mass = number * w
    h = elements.index("H")
    return float(np.sum(mass[metal_mask(elements)]) / mass[h])


def metallicity_mh(
    ism_mass: Float[Array, "*batch n_elem"], elements: tuple[str, ...]
) -> Float[Array, "*batch"]:
    """Scaled-solar [M/H] = log10((Z/X) / (Z/X)_sun) over the traced metals (Asplund+09)."""
    mask = jnp.asarray(metal_mask(elements))
    metals = jnp.sum(jnp.where(mask, ism_mass, 0.0), axis=-1)
    hydrogen = ism_mass[..., elements.index("H")]
    ratio = jnp.maximum(metals / hydrogen, _MIN_METAL_RATIO)
    return jnp.log10(ratio / _solar_metal_ratio(elements))


def abundance_columns(elements: tuple[str, ...]) -> tuple[str, ...]:
    """The catalogue columns: [Fe/H] then [X/Fe] for every traced metal other than Fe."""
    return ("[Fe/H]",) + tuple(f"[{e}/Fe]" for e in elements if e not in ("H", "He", "Fe"))


def abundances_from_masses(
    masses: Float[Array, "*batch n_elem"], elements: tuple[str, ...]
) -> Float[Array, "*batch n_col"]:
    xh = bracket_x_h(masses, elements)
    fe = xh[..., elements.index("Fe")]
    cols = [fe] + [xh[..., i] - fe for i, e in enumerate(elements) if e not in ("H", "He", "Fe")]
    return jnp.stack(cols, axis=-1)


def population_renderer(renderer: IFURenderer, weights: Float[Array, " n_ssp"]) -> IFURenderer:
    """A renderer whose only template is the population spectrum Σ_s weights_s T_s.

    Its grid has 2 x 2 nodes at log10(age/Gyr) = {0, 1} and [M/H] = {0, 1}; the population sits
    at node (0, 0) (age 1 Gyr, [M/H] = 0, hit exactly, so the bilinear weight is 1) and the
    other nodes are zero. Rendering particles placed there gives
    Σ_particles m_i × (the population spectrum Doppler-shifted by v_i), with the matmul over
    4 n_k channels instead of n_ssp n_k.
    """
    n_ssp, n_k = renderer.n_ssp, renderer.n_k
    bank = renderer.bank.reshape(n_ssp, n_k, -1)
    spec = jnp.einsum("s,skw->kw", weights.astype(bank.dtype), bank,
                      precision=jax.lax.Precision.HIGHEST)
    new_bank = jnp.zeros((4,) + spec.shape, bank.dtype).at[0].set(spec).reshape(4 * n_k, -1)
    light = jnp.full((4,), jnp.dot(weights.astype(bank.dtype), renderer.light), bank.dtype)
    axis = jnp.asarray([0.0, 1.0], bank.dtype)
    surviving = None if renderer.surviving is None else jnp.ones((2, 2), bank.dtype)
    return dataclasses.replace(renderer, bank=new_bank, light=light, log_age=axis, metal=axis,
                               surviving=surviving, n_met=2)


@typing.final
class Pipeline(eqx.Module):
    """Physical parameters -> ISM history -> star particles -> IFU cube, and -> abundances.

    **Fields:**

    - `chemistry`: a [`ChemistryModel`][diffgal.pipeline.ChemistryModel] (yields, IMF, ...).
    - `renderer`: an [`IFURenderer`][diffgal.ifu.IFURenderer] (telescope, templates, geometry).
    - `mesh`: `None` (one device) or a 1-D mesh from [`diffgal.ifu.make_mesh`][]: the render is
      then sharded over its devices (`shard_mode` `"particles"` or `"spaxels"`) (static).

    Build one with [`make_pipeline`][diffgal.pipeline.make_pipeline]. Every method is pure and
    jittable; `jax.grad` of anything computed here reaches every parameter.
    """

    chemistry: ChemistryModel
    renderer: IFURenderer
    mesh: typing.Any = eqx.field(static=True, default=None)
    shard_mode: str = eqx.field(static=True, default="particles")

    @property
    def elements(self) -> tuple[str, ...]:
        return self.chemistry.yields.elements

    @property
    def columns(self) -> tuple[str, ...]:
        return abundance_columns(self.elements)

    def history(self, params: GalaxyParams, t_obs: float) -> ChemicalHistory:
        return self.chemistry.history(params, t_obs)

    def birth_times(self, params: GalaxyParams, galaxy: MockGalaxy) -> Float[Array, " n_star"]:
        """Birth times [Gyr]: fixed, or from the SFH's inverse CDF at the birth quantiles."""
        if galaxy.birth_time is not None:
            return jnp.asarray(galaxy.birth_time)
        return sfh_birth_times(self.chemistry.bound_sfh(params), galaxy.birth_quantile,
                               galaxy.age_gyr)

    def particles(
        self, params: GalaxyParams, galaxy: MockGalaxy, history: ChemicalHistory | None = None
    ) -> StellarParticles:
        """Star particles with ages from the SFH and [M/H] of the ISM at their birth times."""
        if history is None:
            history = self.history(params, galaxy.age_gyr)
        t_birth = self.birth_times(params, galaxy)
        mh = metallicity_mh(history.ism_mass_at(t_birth), self.elements)
        age = galaxy.age_gyr - t_birth
        return galaxy.with_particles(age, mh, metal_kind="MH")

    def render(self, particles: StellarParticles, renderer: IFURenderer | None = None) -> IFUCube:
        """The noiseless cube of `particles` (sharded when `mesh` is set)."""
        renderer = self.renderer if renderer is None else renderer
        dtype = renderer.bank.dtype
        particles = jax.tree.map(lambda a: a.astype(dtype), particles)
        if self.mesh is None:
            return renderer(particles)
        from ..ifu import render_sharded

        return render_sharded(renderer, particles, mesh=self.mesh, mode=self.shard_mode)

    def population(
        self, params: GalaxyParams, t_obs: float, history: ChemicalHistory | None = None,
        n_quad: int = 4096,
    ) -> tuple[Float[Array, " n_ssp"], Float[Array, ""]]:
        """SSP weights of the galaxy's whole stellar population, and the clamped fraction.

        The population's (age, [M/H]) distribution is the SFH's: birth quantiles at the
        `n_quad` midpoints u_j = (j + ½)/n_quad, birth times from the SFH inverse CDF and [M/H]
        from the ISM history, each spread over the template grid with bilinear weights and
        averaged. Returns `(weights (n_ssp,), fraction of the quadrature mass outside the grid,
        clamped to its edge)`.
        """
        if history is None:
            history = self.history(params, t_obs)
        dtype = history.time.dtype
        u = (jnp.arange(n_quad, dtype=dtype) + 0.5) / n_quad
        t = sfh_birth_times(self.chemistry.bound_sfh(params), u, t_obs)
        mh = metallicity_mh(history.ism_mass_at(t), self.elements)
        log_age = _safe_log10_age(t_obs - t)  # the renderer's own age rule
        r = self.renderer
        idx, w, out = jax.vmap(bilinear_weights, in_axes=(0, 0, None, None))(
            log_age, mh, r.log_age, r.metal
        )
        ssp = idx[..., 0] * r.n_met + idx[..., 1]
        weights = jnp.zeros(r.n_ssp, w.dtype).at[ssp.reshape(-1)].add(w.reshape(-1) / n_quad)
        return weights, jnp.mean(out.astype(dtype))

    def cube_expected(self, params: GalaxyParams, galaxy: MockGalaxy,
                      history: ChemicalHistory | None = None, n_quad: int = 4096) -> IFUCube:
        """The cube's expectation over the particles' birth quantiles.

        Every particle of a [`MockGalaxy`][diffgal.galaxy.MockGalaxy] with birth quantiles
        draws its age from the same SFH, independently of its position and velocity, so the
        expected cube is Σ_i m_i × (the population spectrum, see
        [`population`][diffgal.pipeline.Pipeline.population], shifted by v_i). This has no
        shot noise in the ages and metallicities (whose parameter dependence biases a fit
        of a particle-rendered model, see [`cube_chi2_split`][diffgal.pipeline.cube_chi2_split]),
        and renders through a 4-template bank, so it is also faster than `cube`.
        """
        if galaxy.birth_quantile is None:
            raise ValueError(
                "`Pipeline.cube_expected`: the galaxy has fixed `birth_time`s, so its ages do not "
                "follow the SFH; use `Pipeline.cube` (per-particle ages and [M/H])."
            )
        weights, clamped = self.population(params, galaxy.age_gyr, history, n_quad)
        renderer = population_renderer(self.renderer, weights)
        n = galaxy.n_star
        dtype = renderer.bank.dtype
        particles = StellarParticles(galaxy.position, galaxy.velocity, galaxy.mass,
                                     jnp.ones(n, dtype), jnp.zeros(n, dtype), metal_kind="MH")
        cube = self.render(particles, renderer)
        # Report the population's clamped share as the expected number of clamped particles.
        n_clamped = jnp.round(jax.lax.stop_gradient(clamped) * n).astype(cube.n_clamped.dtype)
        return eqx.tree_at(lambda c: c.n_clamped, cube, n_clamped)

    def cube(self, params: GalaxyParams, galaxy: MockGalaxy,
             history: ChemicalHistory | None = None) -> IFUCube:
        return self.render(self.particles(params, galaxy, history))

    def abundances(
        self, params: GalaxyParams, birth_time: Float[ArrayLike, " n_star"], t_obs: float,
        history: ChemicalHistory | None = None,
    ) -> Float[Array, "n_star n_col"]:
        """[Fe/H] and [X/Fe] (columns `self.columns`) of stars born at `birth_time` [Gyr]."""
        if history is None:
            history = self.history(params, t_obs)
        return abundances_from_masses(history.ism_mass_at(jnp.asarray(birth_time)),
                                      self.elements)


def make_pipeline(
    telescope="MUSE",
    templates=None,
    *,
    yields: Yields | str = "auto",
    imf: AbstractIMF | None = None,
    dtd: AbstractDTD | None = None,
    sfh: AbstractSFH | None = None,
    lifetimes: AbstractLifetimes | None = None,
    options: GCEOptions | None = None,
    chemistry: ChemistryModel | None = None,
    mesh=None,
    shard_mode: str = "particles",
    data_dir=None,
    **renderer_kwargs,
) -> Pipeline:
    """Build a [`Pipeline`][diffgal.pipeline.Pipeline]: each part is one argument.

    **Arguments:**

    - `telescope`: a preset name or a [`diffgal.ifu.Telescope`][].
    - `templates`: a [`diffgal.spectra.TemplateGrid`][]; `None` takes the best installed real
      library ([`diffgal.ifu.default_templates`][]).
    - `yields`: a yield-set name (`"auto"`: TNG when its tables are found, else `"default"`) or
      a `Yields`.
    - `imf`, `dtd`, `sfh`, `lifetimes`, `options`: chemistry parts (defaults: CHEMPY-TNG's, and
      `GCEOptions.smooth()`); see [`make_chemistry`][diffgal.pipeline.make_chemistry].
    - `chemistry`: a ready [`ChemistryModel`][diffgal.pipeline.ChemistryModel] instead of the
      five arguments above and `yields`.
    - `mesh`, `shard_mode`: render on several devices (see [`diffgal.ifu.render_sharded`][]).
    - `**renderer_kwargs`: passed to [`diffgal.ifu.make_renderer`][] (`distance_mpc`,
      `redshift`, `inclination_deg`, `velscale`, `v_max`, `dtype`, ...).
    """
    from ..ifu import default_templates, get_telescope, make_renderer
    from ..ifu._shard import SHARDING_MODES

    if shard_mode not in SHARDING_MODES:
        raise ValueError(
            f"`make_pipeline`: `shard_mode` must be one of {SHARDING_MODES}; got {shard_mode!r}."
        )
    tel = get_telescope(telescope)
    templates = default_templates() if templates is None else templates
    renderer = make_renderer(tel, templates, **renderer_kwargs)
    if chemistry is None:
        chem = make_chemistry(yields, imf=imf, dtd=dtd, sfh=sfh, lifetimes=lifetimes,
                              options=options, data_dir=data_dir)
    else:
        given = [n for n, v in dict(imf=imf, dtd=dtd, sfh=sfh, lifetimes=lifetimes,
                                    options=options).items() if v is not None]
        if given:
            raise ValueError(
                f"`make_pipeline`: pass either `chemistry` or the parts {given}, not both; "
                "build the ChemistryModel with these parts via `make_chemistry`."
            )
        chem = chemistry
    if not isinstance(chem, ChemistryModel):
        raise TypeError(
            f"`make_pipeline`: `chemistry` must be a `ChemistryModel` (see `make_chemistry`); "
            f"got {type(chem).__name__}."
        )
    return Pipeline(chem, renderer, mesh=mesh, shard_mode=shard_mode)
