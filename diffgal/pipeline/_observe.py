"""Observation models and likelihoods: abundance catalogues and noisy IFU cubes."""

from __future__ import annotations

import math
import typing

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, PRNGKeyArray

from ..galaxy._mock import MockGalaxy
from ..ifu import IFUCube, PoissonNoise, add_noise
from ._model import Pipeline
from ._params import DEFAULT_PRIOR, PARAM_NAMES, GalaxyParams, log_prior


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


@typing.final
class AbundanceCatalogue(eqx.Module):
    """Stellar abundances with per-star errors, and the stars' birth times.

    **Fields:**

    - `birth_time`: (n_star,) Gyr after the start of star formation (e.g. from isochrone or
      asteroseismic ages: age_gyr - age).
    - `values`: (n_star, n_col) measured abundances in the order of `columns`.
    - `errors`: (n_star, n_col) 1-sigma Gaussian errors (> 0).
    - `columns`: names such as `"[Fe/H]"`, `"[O/Fe]"` (static, stored as a tuple); must match
      the pipeline's.
    """

    birth_time: Float[Array, " n_star"]
    values: Float[Array, "n_star n_col"]
    errors: Float[Array, "n_star n_col"]
    columns: tuple[str, ...] = eqx.field(static=True, converter=tuple)

    def __check_init__(self):
        api = "`AbundanceCatalogue`"
        n = jnp.shape(self.birth_time)
        if len(n) != 1:
            raise ValueError(f"{api}: `birth_time` must be 1-D (n_star,); got shape {n}.")
        k = len(self.columns)
        for name in ("values", "errors"):
            shape = tuple(jnp.shape(getattr(self, name)))
            if shape != (n[0], k):
                raise ValueError(
                    f"{api}: `{name}` must have shape (n_star, n_col) = ({n[0]}, {k}) to match "
                    f"`birth_time` ({n[0]} stars) and `columns` ({k}: {list(self.columns)}); got "
                    f"{shape}. Give one row per star and one column per abundance."
                )
        for name in ("birth_time", "values", "errors"):
            x = getattr(self, name)
            if _is_concrete(x) and not np.all(np.isfinite(np.asarray(x))):
                bad = int(np.sum(~np.isfinite(np.asarray(x))))
                raise ValueError(
                    f"{api}: `{name}` has {bad} non-finite entries. Drop those stars (or columns) "
                    "before building the catalogue; diffgal does not treat NaN as missing."
                )
        e = self.errors
        if _is_concrete(e) and np.any(np.asarray(e) <= 0):
            bad = int(np.sum(np.asarray(e) <= 0))
            raise ValueError(
                f"{api}: `errors` must be > 0 (Gaussian 1-sigma in dex); got {bad} entries <= 0. "
                "Use a floor such as 0.01 dex for stars with unreported errors."
            )

    @property
    def n_star(self) -> int:
        return int(jnp.shape(self.birth_time)[0])


@typing.final
class CubeObservation(eqx.Module):
    """An observed IFU cube: flux, its variance, and the spaxels to use.

    **Fields:**

    - `flux`, `variance`: (n_x, n_y, n_wave) in the renderer's flux unit (and its square).
    - `mask`: (n_x, n_y) `True` for spaxels in the fit. Inside it every `variance` must be
      finite and > 0.
    """

    flux: Float[Array, "n_x n_y n_wave"]
    variance: Float[Array, "n_x n_y n_wave"]
    mask: Bool[Array, "n_x n_y"]

    def __check_init__(self):
        api = "`CubeObservation`"
        shape = tuple(jnp.shape(self.flux))
        if len(shape) != 3:
            raise ValueError(f"{api}: `flux` must be (n_x, n_y, n_wave); got shape {shape}.")
        if tuple(jnp.shape(self.variance)) != shape:
            raise ValueError(
                f"{api}: `variance` must have the shape of `flux` {shape}; got "
                f"{tuple(jnp.shape(self.variance))}."
            )
        if tuple(jnp.shape(self.mask)) != shape[:2]:
            raise ValueError(
                f"{api}: `mask` must be (n_x, n_y) = {shape[:2]}; got "
                f"{tuple(jnp.shape(self.mask))}."
            )
        if jnp.result_type(self.mask) != jnp.bool_:
            raise ValueError(
                f"{api}: `mask` must be a boolean array (True = spaxel in the fit); got dtype "
                f"{jnp.result_type(self.mask)}. Pass e.g. `mask > 0`."
            )
        if _is_concrete(self.variance) and _is_concrete(self.mask):
            var = np.asarray(self.variance)
            used = np.broadcast_to(np.asarray(self.mask)[:, :, None], var.shape)
            bad = used & ~(var > 0)
            if bad.any():
                n_spax = int(np.any(bad, axis=-1).sum())
                raise ValueError(
                    f"{api}: `variance` must be finite and > 0 in every pixel of the masked "
                    f"spaxels; got {int(bad.sum())} zero, negative or NaN pixels in {n_spax} "
                    "spaxels. Exclude those spaxels from `mask` or set a variance floor."
                )
        if _is_concrete(self.flux) and not np.all(np.isfinite(np.asarray(self.flux))):
            raise ValueError(f"{api}: `flux` has non-finite pixels; mask or repair them first.")

    @classmethod
    def from_cube(cls, cube: IFUCube, *, min_snr: float = 0.0) -> CubeObservation:
        """Use a noisy [`IFUCube`][diffgal.ifu.IFUCube]; keep aperture spaxels whose mean
        S/N (mean flux / mean σ) is at least `min_snr` and whose variance is positive."""
        if cube.variance is None:
            raise ValueError(
                "`CubeObservation.from_cube`: the cube has no variance (it is noiseless). Add "
                "noise with `diffgal.ifu.add_noise`, or build a `CubeObservation` with a "
                "variance cube."
            )
        var = np.asarray(cube.variance, np.float64)
        flux = np.asarray(cube.flux, np.float64)
        positive = np.all(var > 0, axis=-1)
        snr = np.mean(flux, -1) / np.sqrt(np.maximum(np.mean(var, -1), 1e-300))
        mask = np.asarray(cube.mask) & positive & (snr >= min_snr)
        if not mask.any():
            raise ValueError(
                f"`CubeObservation.from_cube`: no spaxel has S/N >= {min_snr} and a positive "
                "variance; lower `min_snr`."
            )
        dtype = cube.flux.dtype
        return cls(jnp.asarray(flux, dtype), jnp.asarray(var, dtype), jnp.asarray(mask))


def noise_model(snr_centre: float, flux_centre: float, sky_fraction: float = 0.1) -> PoissonNoise:
    """Photon + sky noise with mean S/N ≈ `snr_centre` in a spaxel of mean flux `flux_centre`.

    σ² = (flux + sky) / gain with sky = `sky_fraction` · flux_centre, so fainter spaxels have
    lower S/N, as in a real exposure.
    """
    sky = sky_fraction * flux_centre
    gain = snr_centre**2 * (flux_centre + sky) / flux_centre**2
    return PoissonNoise(gain=float(gain), sky=float(sky))


def observe_cube(key: PRNGKeyArray, cube: IFUCube, *, snr_centre: float = 30.0,
                 min_snr: float = 3.0, sky_fraction: float = 0.1) -> CubeObservation:
    """Add photon + sky noise (see [`noise_model`][diffgal.pipeline.noise_model]) to a noiseless
    cube and select spaxels with mean S/N >= `min_snr`."""
    mean = np.asarray(jnp.mean(cube.flux, axis=-1))
    noisy = add_noise(key, cube, noise_model(snr_centre, float(mean.max()), sky_fraction))
    return CubeObservation.from_cube(noisy, min_snr=min_snr)


def observe_abundances(
    key: PRNGKeyArray,
    pipeline: Pipeline,
    params: GalaxyParams,
    birth_time: Float[ArrayLike, " n_star"],
    t_obs: float,
    errors: float | Float[ArrayLike, "n_star n_col"] = 0.05,
) -> AbundanceCatalogue:
    """Mock abundance catalogue: the model's abundances at `birth_time` plus Gaussian errors."""
    birth_time = jnp.asarray(birth_time)
    if _is_concrete(birth_time):
        bt = np.asarray(birth_time)
        if not np.all((bt > 0) & (bt <= t_obs)):
            raise ValueError(
                f"`observe_abundances`: every `birth_time` must lie in (0, t_obs = {t_obs}] Gyr "
                f"(the chemical history ends at the time of observation); got "
                f"{int(np.sum(~((bt > 0) & (bt <= t_obs))))} outside, in "
                f"[{float(bt.min())!r}, {float(bt.max())!r}]."
            )
    truth = pipeline.abundances(params, birth_time, t_obs)
    err = jnp.broadcast_to(jnp.asarray(errors, truth.dtype), truth.shape)
    values = truth + err * jax.random.normal(key, truth.shape, truth.dtype)
    return AbundanceCatalogue(birth_time, values, err, pipeline.columns)


def draw_birth_times(key: PRNGKeyArray, pipeline: Pipeline, params: GalaxyParams, n_star: int,
                     t_obs: float, t_min: float = 1.0) -> Float[Array, " n_star"]:
    """Birth times of `n_star` stars drawn from the model's SFH, restricted to [t_min, t_obs]."""
    from ._model import sfh_birth_times

    sfh = pipeline.chemistry.bound_sfh(params)
    c = sfh.cumulative(jnp.asarray([t_min, t_obs]))
    lo = c[0] / c[1]
    u = jax.random.uniform(key, (n_star,), minval=lo, maxval=1.0 - 1e-6)
    return jax.lax.stop_gradient(sfh_birth_times(sfh, u, t_obs))


def abundance_loglik(predicted: Float[Array, "n_star n_col"], stars: AbundanceCatalogue) -> Array:
    """Gaussian log-likelihood Σ [-½ ((x - μ)/σ)² - ln σ - ½ ln 2π] over stars and columns."""
    r = (stars.values - predicted) / stars.errors
    return jnp.sum(-0.5 * r**2 - jnp.log(stars.errors)) - 0.5 * r.size * math.log(2 * math.pi)


NORMALISATIONS = ("fixed", "per_spaxel")


def _inverse_variance(obs: CubeObservation, dtype) -> Array:
    """1 / variance in the masked spaxels, 0 elsewhere."""
    used = obs.mask[:, :, None]
    return jnp.where(used, 1.0 / jnp.where(used, obs.variance, 1.0), 0.0).astype(dtype)


def cube_chi2(model_flux: Float[Array, "n_x n_y n_wave"], obs: CubeObservation,
              normalisation: str = "fixed") -> Array:
    """χ² = Σ_masked (d - a m)² / var.

    `normalisation="fixed"` uses a = 1. `"per_spaxel"` profiles a free amplitude per spaxel
    (a = Σ d m / var / Σ m² / var), so the fit uses the spectral shape only and is insensitive
    to the particle shot noise of each spaxel's mass (for fits with a different particle
    realisation than the data, or unknown mass-to-light).
    """
    if normalisation not in NORMALISATIONS:
        raise ValueError(
            f"`cube_chi2`: `normalisation` must be one of {NORMALISATIONS}; got {normalisation!r}."
        )
    if model_flux.shape != obs.flux.shape:
        raise ValueError(
            f"`cube_chi2`: the model cube has shape {model_flux.shape} but the observation has "
            f"{obs.flux.shape}; render with the observation's telescope."
        )
    # Accumulate in the default float (float64 under x64) even for a float32 cube: χ² sums
    # ~1e6 terms, and float32 sums made the Hessian of weakly constrained directions noise.
    dtype = jnp.result_type(model_flux, obs.flux, float)
    m = model_flux.astype(dtype)
    d = obs.flux.astype(dtype)
    w = _inverse_variance(obs, dtype)
    if normalisation == "fixed":
        return jnp.sum(w * (d - m) ** 2)
    sdd = jnp.sum(w * d * d, -1)
    sdm = jnp.sum(w * d * m, -1)
    smm = jnp.sum(w * m * m, -1)
    ok = obs.mask & (smm > 0)
    per = sdd - jnp.where(ok, sdm**2 / jnp.where(ok, smm, 1.0), 0.0)
    return jnp.sum(jnp.where(obs.mask, per, 0.0))


def cube_chi2_split(model_a: Float[Array, "n_x n_y n_wave"],
                    model_b: Float[Array, "n_x n_y n_wave"], obs: CubeObservation,
                    normalisation: str = "fixed") -> Array:
    """Cross χ² = Σ_masked (d - a m_A)(d - a m_B) / var from two independent particle halves.

    With a cube rendered from particles, m = E[m] + ε, and the plain χ² has the expectation
    Σ (d - E[m])² / var + Σ Var[ε] / var. The second term depends on the parameters (a wider
    age spread makes the spectra of a few hundred particles scatter more), so minimising the
    plain χ² biases the parameters the cube constrains towards low shot noise (measured: the
    SFR peak by ~6 sigma at 2e4 particles in the `--quick` demo; the bias falls as 1/N). The
    cross form has expectation Σ (d - E[m])² / var exactly (ε_A and ε_B are independent), and
    so has its gradient, with `a` = 1 (`"fixed"`); the per-spaxel amplitude (`"per_spaxel"`)
    is a ratio of noisy sums and is not exactly unbiased. The price is variance: the gradient
    has a product-of-noise term which, measured in the same configuration, scatters 5-10 times
    more than the plain χ²'s bias, so the split form pays only with many particles per spaxel.
    """
    if normalisation not in NORMALISATIONS:
        raise ValueError(
            f"`cube_chi2_split`: `normalisation` must be one of {NORMALISATIONS}; got "
            f"{normalisation!r}."
        )
    if model_a.shape != obs.flux.shape or model_b.shape != obs.flux.shape:
        raise ValueError(
            f"`cube_chi2_split`: the model cubes have shapes {model_a.shape}, {model_b.shape} but "
            f"the observation has {obs.flux.shape}; render with the observation's telescope."
        )
    dtype = jnp.result_type(model_a, obs.flux, float)
    ma, mb = model_a.astype(dtype), model_b.astype(dtype)
    d = obs.flux.astype(dtype)
    w = _inverse_variance(obs, dtype)
    if normalisation == "fixed":
        return jnp.sum(w * (d - ma) * (d - mb))
    sdd = jnp.sum(w * d * d, -1)
    sds = jnp.sum(w * d * (ma + mb), -1)
    sab = jnp.sum(w * ma * mb, -1)
    ok = obs.mask & (sab > 0)
    per = sdd - jnp.where(ok, sds**2 / (4.0 * jnp.where(ok, sab, 1.0)), 0.0)
    return jnp.sum(jnp.where(obs.mask, per, 0.0))


ESTIMATORS = ("split", "plain")


def _prior_tuple(prior) -> tuple:
    if prior is None:
        return ()
    if prior == "default":
        prior = DEFAULT_PRIOR
    unknown = sorted(set(prior) - set(PARAM_NAMES))
    if unknown:
        raise ValueError(
            f"`JointLikelihood`: `prior` names unknown parameters {unknown}; the parameters are "
            f"{list(PARAM_NAMES)}."
        )
    out = []
    for name, (mu, sigma) in prior.items():
        if not sigma > 0:
            raise ValueError(
                f"`JointLikelihood`: prior sigma of `{name}` must be > 0; got {sigma}."
            )
        out.append((name, (float(mu), float(sigma))))
    return tuple(out)


@typing.final
class JointLikelihood(eqx.Module):
    """log p(params | cube, abundances) up to a constant: cube + abundances + prior.

    **Fields:**

    - `pipeline`: the [`Pipeline`][diffgal.pipeline.Pipeline].
    - `galaxy`: the [`MockGalaxy`][diffgal.galaxy.MockGalaxy] (particles) the fit renders.
    - `cube`: a [`CubeObservation`][diffgal.pipeline.CubeObservation] or `None`.
    - `stars`: an [`AbundanceCatalogue`][diffgal.pipeline.AbundanceCatalogue] or `None`.
    - `prior`: `(name, (mean, sigma))` pairs of a Gaussian prior (static; `()` for none).
    - `normalisation`: the cube χ² amplitude treatment (see [`cube_chi2`][]) (static).
    - `cube_model`: `"expected"`: the cube's expectation over the birth quantiles
      ([`Pipeline.cube_expected`][diffgal.pipeline.Pipeline.cube_expected]; no age shot noise,
      unbiased); `"particles"`: per-particle ages and [M/H] ([`Pipeline.cube`][]) (static).
    - `estimator`: for `cube_model="particles"`: `"plain"` (default): one render and
      [`cube_chi2`][]; `"split"`: the
      particles are split into two halves (masses doubled) rendered separately, and the cube
      term is the cross χ² of [`cube_chi2_split`][] (static). See the docs page for the
      particle shot-noise bias that motivates `"split"` and why `"plain"` is the default.

    Use [`make_likelihood`][diffgal.pipeline.make_likelihood] to build one with checks.
    """

    pipeline: Pipeline
    galaxy: MockGalaxy
    cube: CubeObservation | None
    stars: AbundanceCatalogue | None
    prior: tuple = eqx.field(static=True, default=())
    normalisation: str = eqx.field(static=True, default="per_spaxel")
    estimator: str = eqx.field(static=True, default="plain")
    cube_model: str = eqx.field(static=True, default="expected")

    def terms(self, params: GalaxyParams) -> dict[str, Array]:
        """`{"cube": -½χ², "abundances": log L, "prior": log prior}` (absent parts are 0)."""
        t_obs = self.galaxy.age_gyr
        history = self.pipeline.history(params, t_obs)
        out = {"cube": jnp.zeros(()), "abundances": jnp.zeros(()),
               "prior": log_prior(params, dict(self.prior))}
        if self.cube is not None and self.cube_model == "expected":
            model = self.pipeline.cube_expected(params, self.galaxy, history)
            out["cube"] = -0.5 * cube_chi2(model.flux, self.cube, self.normalisation)
        elif self.cube is not None:
            particles = self.pipeline.particles(params, self.galaxy, history)
            if self.estimator == "plain":
                model = self.pipeline.render(particles)
                out["cube"] = -0.5 * cube_chi2(model.flux, self.cube, self.normalisation)
            else:
                half_a, half_b = split_particles(particles)
                m_a = self.pipeline.render(half_a).flux
                m_b = self.pipeline.render(half_b).flux
                out["cube"] = -0.5 * cube_chi2_split(m_a, m_b, self.cube, self.normalisation)
        if self.stars is not None:
            pred = self.pipeline.abundances(params, self.stars.birth_time, t_obs, history)
            out["abundances"] = abundance_loglik(pred, self.stars)
        return out

    def __call__(self, params: GalaxyParams) -> Array:
        """The log posterior (up to a constant)."""
        t = self.terms(params)
        return t["cube"] + t["abundances"] + t["prior"]


def split_particles(particles):
    """The first and second halves of a particle set, masses scaled so each has the full mass.

    Contiguous halves (not even/odd indices) so that each half of a low-discrepancy (QMC)
    sequence is itself well spread.
    """
    n = particles.mass.shape[0]
    k = n // 2

    def part(lo, hi):
        p = jax.tree.map(lambda a: a[lo:hi], particles)
        return eqx.tree_at(lambda q: q.mass, p, p.mass * (n / (hi - lo)))

    return part(0, k), part(k, n)


def make_likelihood(
    pipeline: Pipeline,
    galaxy: MockGalaxy | None = None,
    *,
    cube: CubeObservation | None = None,
    stars: AbundanceCatalogue | None = None,
    prior="default",
    normalisation: str = "per_spaxel",
    estimator: str = "plain",
    cube_model: str = "auto",
    use: tuple[str, ...] = ("cube", "abundances"),
) -> JointLikelihood:
    """Check the pieces against each other and build a [`JointLikelihood`][].

    **Arguments:**

    - `pipeline`, `galaxy`: the model and the particles it renders (the galaxy's `age_gyr` is
      the time of observation for the abundances too).
    - `cube`, `stars`: the observations; `use` picks which enter (`("cube",)` or
      `("abundances",)` fit one observable alone).
    - `prior`: `"default"` ([`DEFAULT_PRIOR`][diffgal.pipeline.DEFAULT_PRIOR]), `None`, or a
      dict `{name: (mean, sigma)}`.
    - `normalisation`: `"per_spaxel"` (default) or `"fixed"`; see [`cube_chi2`][].
    - `cube_model`: `"auto"` (`"expected"` for a galaxy with birth quantiles, else
      `"particles"`), `"expected"` or `"particles"`; see [`JointLikelihood`][].
    - `estimator`: `"plain"` (default) or `"split"` (see [`cube_chi2_split`][]); particles only.

    **Raises:** `ValueError` naming the argument for a missing observation, a cube that does not
    match the telescope, a catalogue whose columns are not the pipeline's, or stars born after
    the galaxy's time of observation.
    """
    api = "make_likelihood"
    valid = ("cube", "abundances")
    if not use or any(u not in valid for u in use):
        raise ValueError(f"`{api}`: `use` must be a non-empty subset of {valid}; got {use!r}.")
    if not isinstance(pipeline, Pipeline):
        raise TypeError(f"`{api}`: `pipeline` must be a `Pipeline`; got {type(pipeline).__name__}.")
    if "cube" in use and cube is None:
        raise ValueError(
            f"`{api}`: `use` includes 'cube' but no `cube` observation was given. Pass "
            "`cube=CubeObservation(...)` (e.g. `observe_cube(key, cube)`) or drop 'cube' from "
            "`use`."
        )
    if "abundances" in use and stars is None:
        raise ValueError(
            f"`{api}`: `use` includes 'abundances' but no `stars` catalogue was given. Pass "
            "`stars=AbundanceCatalogue(...)` or drop 'abundances' from `use`."
        )
    if galaxy is None:
        raise ValueError(
            f"`{api}`: `galaxy` is missing: the time of observation (and, for the cube, the "
            "particles) come from a `MockGalaxy` (see `diffgal.galaxy.make_mock_galaxy` or "
            "`load_mock_galaxy`)."
        )
    if not isinstance(galaxy, MockGalaxy):
        raise TypeError(f"`{api}`: `galaxy` must be a `MockGalaxy`; got {type(galaxy).__name__}.")
    if normalisation not in NORMALISATIONS:
        raise ValueError(
            f"`{api}`: `normalisation` must be one of {NORMALISATIONS}; got {normalisation!r}."
        )
    if estimator not in ESTIMATORS:
        raise ValueError(f"`{api}`: `estimator` must be one of {ESTIMATORS}; got {estimator!r}.")
    if cube_model == "auto":
        cube_model = "expected" if galaxy.birth_quantile is not None else "particles"
    if cube_model not in ("expected", "particles"):
        raise ValueError(
            f"`{api}`: `cube_model` must be 'auto', 'expected' or 'particles'; got {cube_model!r}."
        )
    if cube_model == "expected" and galaxy.birth_quantile is None:
        raise ValueError(
            f"`{api}`: cube_model='expected' needs a galaxy with birth quantiles (ages from the "
            "SFH); this `galaxy` has fixed birth times. Use cube_model='particles'."
        )
    if "cube" in use and estimator == "split" and galaxy.n_star < 2:
        raise ValueError(f"`{api}`: the split estimator needs a galaxy of >= 2 particles.")
    if "cube" in use:
        tel = pipeline.renderer.telescope
        if tuple(cube.flux.shape) != tel.shape:
            raise ValueError(
                f"`{api}`: `cube` has shape {tuple(cube.flux.shape)} but the pipeline's telescope "
                f"{tel.name!r} renders {tel.shape}; use the telescope that took the data."
            )
        if not np.any(np.asarray(cube.mask)):
            raise ValueError(
                f"`{api}`: the mask of `cube` selects no spaxel, so the cube would not enter the "
                "fit; set `cube.mask` True where the data are usable, or drop 'cube' from `use`."
            )
    if "abundances" in use:
        if stars.columns != pipeline.columns:
            raise ValueError(
                f"`{api}`: the catalogue `stars` has columns {list(stars.columns)} but the "
                f"pipeline's yield set {pipeline.chemistry.yields.name!r} predicts "
                f"{list(pipeline.columns)}. Reorder or subset the catalogue to these columns."
            )
        bt = np.asarray(stars.birth_time)
        late = bt > galaxy.age_gyr
        if np.any(late) or np.any(bt <= 0):
            raise ValueError(
                f"`{api}`: the catalogue `stars` and the particle catalogue `galaxy` disagree: "
                f"{int(late.sum())} stars are born after the galaxy's time of observation "
                f"age_gyr = {galaxy.age_gyr} Gyr and {int((bt <= 0).sum())} at or before t = 0. "
                "Birth times count from the start of star formation (birth_time = age_gyr - "
                "stellar age)."
            )
    return JointLikelihood(
        pipeline=pipeline,
        galaxy=galaxy,
        cube=cube if "cube" in use else None,
        stars=stars if "abundances" in use else None,
        prior=_prior_tuple(prior),
        normalisation=normalisation,
        estimator=estimator,
        cube_model=cube_model,
    )
