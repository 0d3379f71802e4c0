"""Model comparison across yield sets: evidences with an Occam penalty, not plug-in likelihoods.

For a star set X = (x_1 ... x_N) that shares the global parameters Λ = (α_IMF, log10 N_Ia), the
evidence of a model m (a yield set) is

    p(X | m) = ∫ p(Λ) Π_i p_m(x_i | Λ) dΛ,    p_m(x_i | Λ) = ∫ p(x_i | Λ, φ_i, m) p(φ_i) dφ_i.

With Bayes' theorem per star, p_m(x_i | Λ) = p_m(Λ | x_i) Z_{m,i} / p(Λ), where
Z_{m,i} = p_m(x_i) is the evidence of star i alone. So

    log p(X | m) = Σ_i log Z_{m,i} + log ∫ p(Λ)^(1-N) Π_i p_m(Λ | x_i) dΛ.

diffgal estimates both terms from what the inference layer already trains for each model:

- `star_log_evidence`: Z_{m,i} by importance sampling over all six per-star parameters, with
  the model's 6-D NPE as proposal (a defensive mixture with the prior bounds the weights) and
  the model's emulator as the explicit Gaussian likelihood; the effective sample size is
  reported per star.
- `shared_global_correction`: the 2-D integral over Λ by quadrature on a grid laid over the
  Laplace approximation of the aggregated posterior (method b), widened until the integrand
  at the grid's edge is negligible.

The integral over Λ and over each star's locals is what gives the Occam penalty that COMPASS's
plug-in likelihood at the posterior mode lacks (shared/specs/inference.md §7). `compare_models`
turns the evidences into posterior model probabilities, with a bootstrap over stars, the
probability as a function of the number of stars and a posterior predictive check of the
winner; `comparison_calibration` scores all of it on mock star sets from each model.

Candidate yield sets (`candidate_yields`): `"tng"`, `"default"`, `"mixed"` (TNG CC-SN with the
default set's AGB and SN Ia tables), or any `"CC/AGB/SNIa"` combination of yield-set names.
"""

from __future__ import annotations

import json
import os
import pathlib
import time
import typing
from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ..chemistry import CHEMPY_COLUMNS, SBI_CHEMPY_COLUMNS, THETA_COLUMNS, load_yields
from ..chemistry._yields import Yields
from ._aggregate import gaussian_fit, gaussian_product, laplace_aggregate
from ._emulator import Emulator, emulator_accuracy, fit_emulator, load_emulator, save_emulator
from ._hierarchical import check_observations
from ._npe import Posterior, load_posterior, save_posterior, train_npe
from ._prior import GLOBAL_NAMES, ChemistryPrior
from ._simulate import load_training_set, simulate_training_set
from ._training import load_cached

__all__ = [
    "CANDIDATE_SETS",
    "Candidate",
    "EvidenceResult",
    "ModelComparison",
    "build_candidate",
    "candidate_yields",
    "compare_models",
    "comparison_calibration",
    "log_evidence",
    "plot_comparison",
    "plot_ppc",
    "plot_reliability",
    "posterior_predictive",
    "posterior_predictive_check",
    "reliability_table",
    "run_compare",
    "shared_global_correction",
    "star_log_evidence",
]

#: The named candidate yield sets: name -> (CC-SN, AGB, SN Ia) source sets.
CANDIDATE_SETS: dict[str, tuple[str, str, str]] = {
    "tng": ("tng", "tng", "tng"),
    "default": ("default", "default", "default"),
    "mixed": ("tng", "default", "default"),
}

_OBS = [CHEMPY_COLUMNS.index(c) for c in SBI_CHEMPY_COLUMNS]


def candidate_yields(name: str, *, data_dir=None) -> Yields:
    """A candidate yield set by name.

    **Arguments:**

    - `name`: one of `CANDIDATE_SETS` (`"tng"`, `"default"`, `"mixed"` = TNG CC-SN with the
      default set's AGB (Karakas 2010 via Nomoto+13) and SN Ia (Iwamoto+99 W7) tables), or
      `"CC/AGB/SNIa"` naming the source of each channel, e.g. `"default/tng/tng"`; each part is
      a name `load_yields` accepts (a built-in set or the path of a user HDF5 file).
    - `data_dir`: the diffgal data directory (TNG tables).

    **Returns:** a `diffgal.chemistry.Yields` whose `name` is `name`.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(
            f"`candidate_yields`: `name` must be a string such as 'tng', 'default', 'mixed' or "
            f"'tng/default/default'; got {name!r}."
        )
    if name in CANDIDATE_SETS:
        parts = CANDIDATE_SETS[name]
    elif name.count("/") == 2 and all(name.split("/")):
        parts = tuple(name.split("/"))
    else:
        return load_yields(name, data_dir=data_dir)
    cc, agb, snia = (load_yields(p, data_dir=data_dir) for p in parts)
    if len({cc.elements, agb.elements, snia.elements}) != 1:
        raise ValueError(f"`candidate_yields`: the parts of {name!r} trace different elements.")
    refs = tuple(dict.fromkeys(cc.references + agb.references + snia.references))
    return Yields(cc=cc.cc, agb=agb.agb, snia=snia.snia, name=name, references=refs)


# --------------------------------------------------------------------------------------------
# The two terms of the evidence
# --------------------------------------------------------------------------------------------


def _log_normal(x, mean, sigma):
    z = (x - mean) / sigma
    return -0.5 * jnp.sum(z**2, -1) - x.shape[-1] * (jnp.log(sigma) + 0.5 * jnp.log(2 * jnp.pi))


def _is_log_mean(log_w):
    """log of the mean weight and the effective sample size, along the last axis."""
    lse = jax.scipy.special.logsumexp(log_w, -1)
    ess = jnp.exp(2 * lse - jax.scipy.special.logsumexp(2 * log_w, -1))
    return lse - jnp.log(log_w.shape[-1]), ess


class StarEvidence(typing.NamedTuple):
    """Per-star evidences: `log_z` `(n_star,)`, importance-sampling `ess` `(n_star,)`, the
    draws `theta` `(n_star, n_draw, 6)` and their self-normalised `weights`."""

    log_z: Array
    ess: Array
    theta: Array
    weights: Array


def _star_evidence_generic(
    key, x, sample_q, log_q, log_lik, sample_prior, log_prior, n_draws, defensive
):
    """Importance sampling of Z = ∫ p(x|θ) p(θ) dθ for one star with the mixture proposal
    (1 - d) q(θ|x) + d p(θ)."""
    n_def = int(round(defensive * n_draws))
    k_q, k_p = jax.random.split(key)
    theta = sample_q(k_q, n_draws - n_def, x)
    if n_def:
        theta = jnp.concatenate([theta, sample_prior(k_p, n_def)], 0)
    lp = log_prior(theta)
    lq = log_q(theta, x)
    if n_def:
        d = n_def / n_draws
        lq = jnp.logaddexp(jnp.log1p(-d) + lq, jnp.log(d) + lp)
    log_w = log_lik(theta, x) + lp - lq
    log_w = jnp.where(jnp.isfinite(log_w), log_w, -jnp.inf)
    log_z, ess = _is_log_mean(log_w)
    weights = jax.nn.softmax(log_w)
    return log_z, ess, theta, weights


def star_log_evidence(
    key: PRNGKeyArray,
    posterior: Posterior,
    emulator: Emulator,
    x_obs: Float[ArrayLike, "n_star n_obs"],
    *,
    noise: float = 0.05,
    n_draws: int = 512,
    defensive: float = 0.1,
) -> StarEvidence:
    """The evidence Z_i = ∫ N(x_i | f(θ), noise²) p(θ) dθ of each star under one model.

    **Arguments:**

    - `key`: a `jax.random.key`.
    - `posterior`: the model's 6-D NPE (all of `THETA_COLUMNS`), the importance proposal.
    - `emulator`: the model's emulator f(θ) (9 outputs in `CHEMPY_COLUMNS` order), the
      explicit likelihood; its observed columns are `posterior.x_columns`.
    - `x_obs`: `(n_star, n_obs)` observed abundances.
    - `noise`: the Gaussian observational noise [dex] of the likelihood.
    - `n_draws`: importance draws per star; `defensive`: the fraction drawn from the prior (a
      defensive mixture, so no weight exceeds 1 / `defensive` times the likelihood).

    **Returns:** a `StarEvidence` (`log_z`, `ess`, `theta`, `weights`).
    """
    api = "star_log_evidence"
    if tuple(posterior.params) != THETA_COLUMNS:
        raise ValueError(
            f"`{api}`: `posterior` must be a 6-D NPE over all per-star parameters; got one over "
            f"{posterior.params}. Train it with `train_npe(..., params=THETA_COLUMNS)`."
        )
    if not (0 <= defensive < 1):
        raise ValueError(f"`{api}`: `defensive` must be in [0, 1); got {defensive}.")
    if n_draws < 2:
        raise ValueError(f"`{api}`: `n_draws` must be >= 2; got {n_draws}.")
    if not noise > 0:
        raise ValueError(f"`{api}`: `noise` must be > 0 [dex]; got {noise}.")
    x_obs = check_observations(api, x_obs, posterior.x_columns)
    cols = jnp.array([CHEMPY_COLUMNS.index(c) for c in posterior.x_columns])
    dtype = posterior.u_mean.dtype
    prior = posterior.prior
    return _star_evidence_jit(
        key,
        posterior,
        emulator,
        prior,
        jnp.asarray(x_obs, dtype),
        cols,
        noise,
        n_draws,
        defensive,
    )


@eqx.filter_jit
def _star_evidence_jit(key, posterior, emulator, prior, x_obs, cols, noise, n_draws, defensive):
    def log_lik(theta, x):
        return _log_normal(x, emulator(theta)[..., cols], noise)

    def one(k, x):
        return _star_evidence_generic(
            k,
            x,
            lambda kk, n, xx: posterior.sample(kk, (n,), xx),
            posterior.log_prob,
            log_lik,
            lambda kk, n: prior.sample(kk, (n,)),
            prior.log_prob,
            n_draws,
            defensive,
        )

    keys = jax.random.split(key, x_obs.shape[0])
    out = jax.lax.map(lambda kx: one(*kx), (keys, x_obs), batch_size=16)
    return StarEvidence(*out)


class GlobalCorrection(typing.NamedTuple):
    """log ∫ p(Λ)^(1-N) Π_i q(Λ | x_i) dΛ on a grid.

    `log_value` the integral; `grid` `(n_grid, 2)` the Λ points, `log_cell` the log cell area,
    `per_star` `(n_star, n_grid)` the per-star log q on the grid, `log_prior` `(n_grid,)`,
    `edge` the log ratio of the integrand's largest value on the grid's edge to its peak, and
    `mode`, `cov` the Laplace approximation that laid the grid.
    """

    log_value: float
    grid: np.ndarray
    log_cell: float
    per_star: np.ndarray
    log_prior: np.ndarray
    edge: float
    mode: np.ndarray
    cov: np.ndarray


class _GlobalPrior(eqx.Module):
    """The normalised Gaussian prior density of Λ (a pytree, so jitted callers that take it
    as an argument compile once, not once per call)."""

    mu: Array
    sd: Array

    def __call__(self, lam):
        z = (lam - self.mu) / self.sd
        return jnp.sum(-0.5 * z**2 - jnp.log(self.sd) - 0.5 * jnp.log(2 * jnp.pi), -1)


def _prior_globals_normalised(prior: ChemistryPrior):
    mu, sd = (jnp.asarray(a) for a in prior.marginal((0, 1)))
    return mu, sd, _GlobalPrior(mu, sd)


@eqx.filter_jit
def _grid_log_q(log_q_fn, grid, x_obs):
    return jax.lax.map(lambda x: log_q_fn(grid, x), x_obs, batch_size=8)


def _correction_from_grid(per_star, log_prior, log_cell, weights=None):
    """log Σ_g exp(Σ_i w_i log q_i(g) + (1 - Σ w_i) log p(g)) + log cell."""
    per_star = np.asarray(per_star, np.float64)
    w = np.ones(per_star.shape[0]) if weights is None else np.asarray(weights, np.float64)
    log_f = w @ per_star + (1.0 - w.sum()) * np.asarray(log_prior, np.float64)
    peak = np.max(log_f)
    return peak + np.log(np.sum(np.exp(log_f - peak))) + log_cell, log_f


def shared_global_correction(
    log_q_fn: Callable[[Array, Array], Array],
    log_prior_fn: Callable[[Array], Array],
    x_obs: Float[ArrayLike, "n_star n_obs"],
    init: Float[ArrayLike, " 2"],
    *,
    init_cov: Float[ArrayLike, "2 2"] | None = None,
    n_grid: int = 64,
    width: float = 7.0,
    max_widen: int = 4,
) -> GlobalCorrection:
    """log ∫ p(Λ)^(1-N) Π_i q(Λ | x_i) dΛ by quadrature over the 2-D global parameters.

    The grid is `n_grid` × `n_grid` points spanning ± `width` standard deviations along the
    principal axes of the Laplace approximation of the aggregated posterior; it is widened
    (×1.6, at most `max_widen` times) until the integrand on its edge is below e^-20 of its
    peak. The per-star marginal posterior `log_q_fn(lam, x)` and the **normalised** global
    prior `log_prior_fn(lam)` must both be densities (the normalisation enters the evidence).

    **Arguments:**

    - `log_q_fn`: per-star marginal posterior log density, `(..., 2), (n_obs,) -> (...)`.
    - `log_prior_fn`: the normalised prior log density of Λ, `(..., 2) -> (...)`.
    - `x_obs`: `(n_star, n_obs)` observations.
    - `init`: a start point for the Laplace fit (e.g. the Gaussian-product mean).
    - `init_cov`: a covariance to lay the grid with, around `init`, if the Laplace fit does
      not converge (e.g. the Gaussian-product covariance); without it that is an error.
    - `n_grid`, `width`, `max_widen`: the quadrature grid.

    **Returns:** a `GlobalCorrection`.
    """
    api = "shared_global_correction"
    if n_grid < 8:
        raise ValueError(f"`{api}`: `n_grid` must be >= 8; got {n_grid}.")
    x_obs = jnp.asarray(x_obs)
    try:
        # The Laplace fit only places the grid, so a loose tolerance is enough.
        lap = laplace_aggregate(
            log_q_fn,
            log_prior_fn,
            x_obs,
            jnp.asarray(init, x_obs.dtype),
            max_steps=1000,
            gtol=1e-3,
        )
        mode = np.asarray(lap.posterior.mean, np.float64)
        cov = np.asarray(lap.posterior.cov, np.float64)
    except eqx.EquinoxRuntimeError:
        if init_cov is None:
            raise
        # No clean mode (e.g. a flat or non-concave potential for very few stars): lay the
        # grid over the Gaussian start instead; the widening below still covers the mass.
        mode = np.asarray(init, np.float64)
        cov = np.asarray(init_cov, np.float64)
    evals, evecs = np.linalg.eigh(cov)
    axes = evecs * np.sqrt(np.maximum(evals, 1e-300))
    u = np.linspace(-1.0, 1.0, n_grid)
    uu = np.stack(np.meshgrid(u, u, indexing="ij"), -1).reshape(-1, 2)
    edge_mask = (np.abs(uu) == 1.0).any(1)
    w = width
    for attempt in range(max_widen + 1):
        grid = mode + (w * uu) @ axes.T
        log_cell = float(np.log((2 * w / (n_grid - 1)) ** 2 * abs(np.linalg.det(axes))))
        per_star = np.asarray(_grid_log_q(log_q_fn, jnp.asarray(grid, x_obs.dtype), x_obs))
        log_prior = np.asarray(log_prior_fn(jnp.asarray(grid, x_obs.dtype)))
        value, log_f = _correction_from_grid(per_star, log_prior, log_cell)
        edge = float(np.max(log_f[edge_mask]) - np.max(log_f))
        if not np.isfinite(value):
            raise ValueError(
                f"`{api}`: the integrand is not finite on the grid (a per-star density returned "
                "NaN or -inf everywhere); check the observations and the posterior."
            )
        if edge < -20.0 or attempt == max_widen:
            break
        w *= 1.6
    return GlobalCorrection(value, grid, log_cell, per_star, log_prior, edge, mode, cov)


class EvidenceResult(typing.NamedTuple):
    """`log_z` = `sum(star.log_z)` + `correction.log_value` for one model and star set."""

    log_z: float
    star: StarEvidence
    correction: GlobalCorrection


def log_evidence(
    key: PRNGKeyArray,
    candidate: Candidate,
    x_obs: Float[ArrayLike, "n_star n_obs"],
    *,
    noise: float = 0.05,
    n_draws: int = 512,
    n_grid: int = 64,
) -> EvidenceResult:
    """log p(X | m) of a star set under one candidate model (see the module docstring)."""
    posterior, marginal = candidate.posterior, candidate.marginal
    x_obs = check_observations("log_evidence", x_obs, posterior.x_columns)
    dtype = posterior.u_mean.dtype
    cond = jnp.asarray(x_obs, dtype)
    k_star, k_init = jax.random.split(key)
    star = star_log_evidence(
        k_star, posterior, candidate.emulator, cond, noise=noise, n_draws=n_draws
    )
    prior = marginal.prior
    mu, sd, log_prior = _prior_globals_normalised(prior)
    # Start the Laplace fit at the Gaussian product of the per-star marginals.
    draws = marginal.sample_per_star(k_init, 200, cond)
    means, covs = gaussian_fit(draws)
    g = gaussian_product(means, covs, mu.astype(dtype), jnp.diag(sd**2).astype(dtype))
    corr = shared_global_correction(
        marginal.log_prob, log_prior, cond, g.mean, init_cov=g.cov, n_grid=n_grid
    )
    total = float(np.sum(np.asarray(star.log_z, np.float64)) + corr.log_value)
    return EvidenceResult(total, star, corr)


# --------------------------------------------------------------------------------------------
# Posterior predictive check
# --------------------------------------------------------------------------------------------


def posterior_predictive_check(
    star: StarEvidence,
    emulator: Emulator,
    x_obs: Float[ArrayLike, "n_star n_obs"],
    *,
    x_columns: Sequence[str] = SBI_CHEMPY_COLUMNS,
    noise: float = 0.05,
) -> dict:
    """Posterior predictive p-values of the χ² discrepancy for each star.

    T(x, θ) = Σ_j ((x_j - f_j(θ)) / noise)²; under the model x_rep | θ gives T ~ χ²(n_obs), so
    the predictive p-value P(T(x_rep, θ) >= T(x_obs, θ) | x_obs) is the posterior average of
    the χ² survival function, with the self-normalised importance weights of `star` (i.e. under
    the exact posterior, not the NPE). Posterior predictive p-values pile up near 0.5 for a
    good model; a misspecified one gives many small values.

    **Returns:** a dict with the per-star `p_values`, `fraction_below_0.05`, the median, and
    the posterior-mean χ² per degree of freedom.
    """
    x_obs = jnp.asarray(check_observations("posterior_predictive_check", x_obs, x_columns))
    cols = jnp.array([CHEMPY_COLUMNS.index(c) for c in x_columns])
    pred = emulator(star.theta)[..., cols]
    chi2 = jnp.sum(((x_obs[:, None, :].astype(pred.dtype) - pred) / noise) ** 2, -1)
    k = len(x_columns)
    sf = jax.scipy.special.gammaincc(k / 2.0, chi2 / 2.0)
    p = np.asarray(jnp.sum(star.weights * sf, -1))
    mean_chi2 = float(np.mean(np.asarray(jnp.sum(star.weights * chi2, -1))) / k)
    return {
        "p_values": p.tolist(),
        "fraction_below_0.05": float(np.mean(p < 0.05)),
        "median_p": float(np.median(p)),
        "mean_chi2_per_dof": mean_chi2,
    }


# --------------------------------------------------------------------------------------------
# Candidates: the emulator and the two NPEs of one yield set
# --------------------------------------------------------------------------------------------


class Candidate(typing.NamedTuple):
    """What one model contributes to the comparison: its `name`, the 6-D NPE `posterior`
    (importance proposal), the marginal NPE `marginal` of Λ and the `emulator` (likelihood)."""

    name: str
    posterior: Posterior
    marginal: Posterior
    emulator: Emulator
    info: dict


def build_candidate(
    name: str,
    cache: str | os.PathLike,
    *,
    seed: int = 0,
    n_train: int = 100_000,
    n_test: int = 2000,
    shard_size: int = 20_000,
    emulator_epochs: int = 150,
    npe_epochs: int = 150,
    marginal_epochs: int = 80,
    data_dir=None,
    show_progress: bool = True,
) -> Candidate:
    """Simulate, train (or load from `cache/<name>/`) the three networks of one yield set.

    **Arguments:**

    - `name`: a candidate yield set (see `candidate_yields`).
    - `cache`: the folder for simulations and networks; `cache/<name>/` per candidate.
    - `seed`: the training seed; `n_train` training runs, `n_test` held-out runs (the
      emulator's accuracy on them is in `info`); `shard_size` runs per HDF5 shard (equal
      shard sizes let the model compile once).
    - `emulator_epochs`, `npe_epochs`, `marginal_epochs`: maximum epochs of the emulator, the
      6-D NPE and the marginal NPE of Λ (early stopping applies).
    - `data_dir`: the diffgal data directory; `show_progress`: progress bars.

    Every stage is resumable: finished simulation shards, trained networks and per-epoch
    checkpoints are kept, and a rerun with the same arguments continues where it stopped.

    **Returns:** a `Candidate`; `info` holds the stage timings and the emulator accuracy.
    """
    root = pathlib.Path(cache) / name.replace("/", "+")
    root.mkdir(parents=True, exist_ok=True)
    table = candidate_yields(name, data_dir=data_dir)
    prior = ChemistryPrior()
    k_sim, k_test, k_emu, k_npe, k_marg = jax.random.split(jax.random.key(seed), 5)
    info: dict[str, typing.Any] = {"yields": name, "n_train": n_train}
    # Networks already in the cache are loaded first, so that a corrupted, foreign or
    # mismatched file fails before any simulation.
    expected = {
        "emulator": (load_emulator, dict(x_columns=CHEMPY_COLUMNS, theta_columns=THETA_COLUMNS)),
        "npe": (load_posterior, dict(params=THETA_COLUMNS, x_columns=SBI_CHEMPY_COLUMNS)),
        "npe_globals": (load_posterior, dict(params=GLOBAL_NAMES, x_columns=SBI_CHEMPY_COLUMNS)),
    }
    loaded = {}
    for what, (load, attrs) in expected.items():
        path = root / f"{what}_{n_train}.eqx"
        if path.is_file():
            t0 = time.perf_counter()
            loaded[what] = load_cached("build_candidate", path, load, **attrs)
            info[f"{what}_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    sims = load_training_set(
        simulate_training_set(
            k_sim,
            root / f"sims_{n_train}",
            n_train,
            prior=prior,
            yields=table,
            shard_size=shard_size,
            show_progress=show_progress,
        )
    )
    test = load_training_set(
        simulate_training_set(
            k_test,
            root / f"test_{n_test}",
            n_test,
            prior=prior,
            yields=table,
            shard_size=shard_size,
            show_progress=show_progress,
        )
    )
    info["simulate_s"] = time.perf_counter() - t0

    def cached(path, train, save, what):
        if what in loaded:
            return loaded[what]
        t0 = time.perf_counter()
        ckpt = path.with_name(path.name + ".ckpt")
        model = train(ckpt)
        save(path, model)
        info[f"{what}_s"] = time.perf_counter() - t0
        return model

    emulator = cached(
        root / f"emulator_{n_train}.eqx",
        lambda ckpt: (
            fit_emulator(
                k_emu,
                sims.theta,
                sims.x,
                max_epochs=emulator_epochs,
                info={"mode": "faithful", "yields": name, "n_train": n_train},
                checkpoint=ckpt,
                resume=ckpt.is_file(),
                show_progress=show_progress,
            ).emulator
        ),
        save_emulator,
        "emulator",
    )
    info["emulator_accuracy"] = emulator_accuracy(emulator, test.theta, test.x).as_dict()
    npe_kwargs = dict(prior=prior, checkpoint=None, show_progress=show_progress)
    posterior = cached(
        root / f"npe_{n_train}.eqx",
        lambda ckpt: (
            train_npe(
                k_npe,
                sims.theta,
                sims.x[:, _OBS],
                max_epochs=npe_epochs,
                **{**npe_kwargs, "checkpoint": ckpt},
                resume=ckpt.is_file(),
            ).posterior
        ),
        save_posterior,
        "npe",
    )
    marginal = cached(
        root / f"npe_globals_{n_train}.eqx",
        lambda ckpt: (
            train_npe(
                k_marg,
                sims.theta,
                sims.x[:, _OBS],
                params=GLOBAL_NAMES,
                max_epochs=marginal_epochs,
                **{**npe_kwargs, "checkpoint": ckpt},
                resume=ckpt.is_file(),
            ).posterior
        ),
        save_posterior,
        "npe_globals",
    )
    return Candidate(name, posterior, marginal, emulator, info)


# --------------------------------------------------------------------------------------------
# Posterior model probabilities
# --------------------------------------------------------------------------------------------


class ModelComparison(typing.NamedTuple):
    """`names`, `log_z` per model, `probabilities` (posterior model probabilities), and the
    diagnostics dict `report` (bootstrap, probability vs N, ESS, grid edge, PPC)."""

    names: tuple[str, ...]
    log_z: np.ndarray
    probabilities: np.ndarray
    report: dict


def _softmax(log_p):
    log_p = np.asarray(log_p, np.float64)
    p = np.exp(log_p - np.max(log_p, -1, keepdims=True))
    return p / p.sum(-1, keepdims=True)


def compare_models(
    key: PRNGKeyArray,
    candidates: Sequence[Candidate],
    x_obs: Float[ArrayLike, "n_star n_obs"],
    *,
    prior_probs: Sequence[float] | None = None,
    noise: float = 0.05,
    n_draws: int = 512,
    n_grid: int = 64,
    n_bootstrap: int = 200,
    n_stars_curve: Sequence[int] = (),
    ppc: bool = True,
) -> ModelComparison:
    """Posterior probabilities of the candidate models for one star set.

    **Arguments:**

    - `key`: a `jax.random.key`.
    - `candidates`: `Candidate`s from `build_candidate` (at least two, distinct names).
    - `x_obs`: `(n_star, 8)` observed abundances in `SBI_CHEMPY_COLUMNS` order.
    - `prior_probs`: prior model probabilities (default uniform).
    - `noise`, `n_draws`, `n_grid`: see `star_log_evidence` and `shared_global_correction`.
    - `n_bootstrap`: bootstrap resamples of the stars (0 skips it); the grid of the full set is
      reused, which is accurate while the resampled posterior stays inside it.
    - `n_stars_curve`: star counts n at which the probabilities of the first n stars are also
      computed (each a full evidence computation).
    - `ppc`: a posterior predictive check of the most probable model.

    **Returns:** a `ModelComparison`.
    """
    api = "compare_models"
    candidates = list(candidates)
    names = tuple(c.name for c in candidates)
    if len(candidates) < 2 or len(set(names)) != len(names):
        raise ValueError(
            f"`{api}`: `candidates` must hold at least two models with distinct names; got "
            f"{list(names)}."
        )
    x_obs = check_observations(api, x_obs)
    n = x_obs.shape[0]
    if prior_probs is None:
        log_prior_m = np.full(len(names), -np.log(len(names)))
    else:
        pp = np.asarray(prior_probs, float)
        if pp.shape != (len(names),) or np.any(pp <= 0) or not np.isclose(pp.sum(), 1.0):
            raise ValueError(
                f"`{api}`: `prior_probs` must be {len(names)} positive numbers summing to 1; "
                f"got {prior_probs!r}."
            )
        log_prior_m = np.log(pp)
    t0 = time.perf_counter()
    keys = jax.random.split(key, len(candidates))
    results = [
        log_evidence(k, c, x_obs, noise=noise, n_draws=n_draws, n_grid=n_grid)
        for k, c in zip(keys, candidates, strict=True)
    ]
    log_z = np.array([r.log_z for r in results])
    probs = _softmax(log_z + log_prior_m)
    report: dict[str, typing.Any] = {
        "n_stars": n,
        "models": list(names),
        "log_evidence": dict(zip(names, log_z.tolist(), strict=True)),
        "probability": dict(zip(names, probs.tolist(), strict=True)),
        "log_bayes_factor_vs_best": dict(zip(names, (log_z - log_z.max()).tolist(), strict=True)),
        "importance_ess": {
            c: {"min": float(np.min(r.star.ess)), "median": float(np.median(r.star.ess))}
            for c, r in zip(names, results, strict=True)
        },
        "grid_edge_log_ratio": {c: r.correction.edge for c, r in zip(names, results, strict=True)},
        "n_draws": n_draws,
        "n_grid": n_grid,
    }
    if n_bootstrap > 0:
        rng = np.random.default_rng(int(jax.random.randint(key, (), 0, 2**31 - 1)))
        counts = np.stack(
            [np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(n_bootstrap)]
        ).astype(np.float64)
        boot = np.empty((n_bootstrap, len(names)))
        for j, r in enumerate(results):
            star_lz = np.asarray(r.star.log_z, np.float64)
            for b in range(n_bootstrap):
                corr, _ = _correction_from_grid(
                    r.correction.per_star,
                    r.correction.log_prior,
                    r.correction.log_cell,
                    counts[b],
                )
                boot[b, j] = counts[b] @ star_lz + corr
        bp = _softmax(boot + log_prior_m)
        report["bootstrap"] = {
            "n": n_bootstrap,
            "probability_mean": dict(zip(names, bp.mean(0).tolist(), strict=True)),
            "probability_16_84": {
                c: np.percentile(bp[:, j], [16, 84]).tolist() for j, c in enumerate(names)
            },
            "fraction_best": dict(
                zip(
                    names,
                    np.bincount(bp.argmax(1), minlength=len(names))
                    .astype(float)
                    .__truediv__(n_bootstrap)
                    .tolist(),
                    strict=True,
                )
            ),
        }
    curve = []
    for m in sorted({int(s) for s in n_stars_curve if 0 < int(s) < n}):
        sub = [
            log_evidence(k, c, x_obs[:m], noise=noise, n_draws=n_draws, n_grid=n_grid).log_z
            for k, c in zip(keys, candidates, strict=True)
        ]
        curve.append({"n_stars": m, "probability": _softmax(np.array(sub) + log_prior_m).tolist()})
    if curve:
        curve.append({"n_stars": n, "probability": probs.tolist()})
    report["probability_vs_n_stars"] = curve
    best = int(np.argmax(probs))
    report["winner"] = names[best]
    if ppc:
        report["ppc_winner"] = posterior_predictive_check(
            results[best].star,
            candidates[best].emulator,
            x_obs,
            x_columns=candidates[best].posterior.x_columns,
            noise=noise,
        )
    report["wall_s"] = time.perf_counter() - t0
    return ModelComparison(names, log_z, probs, report)


def reliability_table(
    probabilities: Float[ArrayLike, "n_set n_model"],
    truth: typing.Sequence[int],
    *,
    bins: Sequence[float] = (0.0, 0.1, 0.3, 0.7, 0.9, 1.0),
) -> list[dict]:
    """Bin every (set, model) probability and compare it with how often that model was true.

    **Returns:** one dict per non-empty bin: `bin`, `count`, `mean_probability`,
    `observed_frequency`, `difference` and the binomial standard error of the frequency.
    """
    p = np.asarray(probabilities, float)
    truth = np.asarray(truth, int)
    if p.ndim != 2 or truth.shape != (p.shape[0],):
        raise ValueError(
            "`reliability_table`: `probabilities` must be (n_set, n_model) and `truth` "
            f"(n_set,); got {p.shape} and {truth.shape}."
        )
    hit = np.zeros_like(p)
    hit[np.arange(p.shape[0]), truth] = 1.0
    edges = np.asarray(bins, float)
    idx = np.clip(np.searchsorted(edges, p.ravel(), side="right") - 1, 0, len(edges) - 2)
    rows = []
    for b in range(len(edges) - 1):
        sel = idx == b
        if not sel.any():
            continue
        mp, freq = float(p.ravel()[sel].mean()), float(hit.ravel()[sel].mean())
        rows.append(
            {
                "bin": [float(edges[b]), float(edges[b + 1])],
                "count": int(sel.sum()),
                "mean_probability": mp,
                "observed_frequency": freq,
                "difference": freq - mp,
                "standard_error": float(np.sqrt(max(mp * (1 - mp), 1e-12) / sel.sum())),
            }
        )
    return rows


def comparison_calibration(
    key: PRNGKeyArray,
    candidates: Sequence[Candidate],
    *,
    n_sets: int = 30,
    n_stars: int = 100,
    noise: float = 0.05,
    n_draws: int = 512,
    n_grid: int = 64,
    data_dir=None,
    show_progress: bool = True,
    out: str | os.PathLike | None = None,
) -> dict:
    """Score the comparison on mock star sets drawn from each candidate in turn.

    Set j is drawn from model j mod M with Λ from the prior (the evidence's own assumption),
    locals from the prior, the **faithful** chemistry model (not the emulator) and `noise` dex
    of Gaussian noise. Reports the fraction of sets whose most probable model is the true one,
    the confusion matrix, the mean probability of the true model and the reliability table.
    If `out` is given, per-set results are appended to `out/calibration_sets.jsonl` and reused
    when the same call is repeated (an interrupted run resumes).
    """
    from ._headline import mock_stars

    candidates = list(candidates)
    names = [c.name for c in candidates]
    prior = ChemistryPrior()
    tables = {c.name: candidate_yields(c.name, data_dir=data_dir) for c in candidates}
    done: dict[int, dict] = {}
    log_path = None
    if out is not None:
        log_path = pathlib.Path(out) / "calibration_sets.jsonl"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        if log_path.is_file():
            for line in log_path.read_text().splitlines():
                row = json.loads(line)
                if row.get("models") == names and row.get("n_stars") == n_stars:
                    done[row["set"]] = row
    iterator = range(n_sets)
    if show_progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="compare sets", unit="set")
    rows = []
    for j in iterator:
        if j in done:
            rows.append(done[j])
            continue
        kj = jax.random.fold_in(key, j)
        true = j % len(names)
        lam = np.asarray(prior.sample(jax.random.fold_in(kj, 0), ()))[:2]
        x, _ = mock_stars(
            jax.random.fold_in(kj, 1),
            n_stars,
            truth=lam.tolist(),
            prior=prior,
            noise=noise,
            yields=tables[names[true]],
        )
        res = compare_models(
            jax.random.fold_in(kj, 2),
            candidates,
            x,
            noise=noise,
            n_draws=n_draws,
            n_grid=n_grid,
            n_bootstrap=0,
            ppc=False,
        )
        row = {
            "set": j,
            "models": names,
            "n_stars": n_stars,
            "true": true,
            "lambda": lam.tolist(),
            "log_z": res.log_z.tolist(),
            "probability": res.probabilities.tolist(),
            "min_ess": {m: v["min"] for m, v in res.report["importance_ess"].items()},
            "max_grid_edge": max(res.report["grid_edge_log_ratio"].values()),
            "wall_s": res.report["wall_s"],
        }
        rows.append(row)
        if log_path is not None:
            with log_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
    p = np.array([r["probability"] for r in rows])
    truth = np.array([r["true"] for r in rows])
    pick = p.argmax(1)
    confusion = np.zeros((len(names), len(names)), int)
    for t, q in zip(truth, pick, strict=True):
        confusion[t, q] += 1
    table = reliability_table(p, truth)
    return {
        "models": names,
        "n_sets": n_sets,
        "n_stars": n_stars,
        "fraction_correct": float(np.mean(pick == truth)),
        "confusion": {"rows_true_columns_picked": confusion.tolist()},
        "mean_probability_of_truth": float(np.mean(p[np.arange(len(p)), truth])),
        "reliability": table,
        "max_reliability_difference": max(abs(r["difference"]) for r in table),
        # The smallest per-star importance ESS under the true model, and under any model.
        "min_importance_ess_true_model": float(min(r["min_ess"][names[r["true"]]] for r in rows)),
        "min_importance_ess": float(min(min(r["min_ess"].values()) for r in rows)),
        "max_grid_edge_log_ratio": float(max(r["max_grid_edge"] for r in rows)),
        "mean_wall_s_per_set": float(np.mean([r["wall_s"] for r in rows])),
        "sets": rows,
    }


def plot_comparison(report: dict, path: str | os.PathLike) -> pathlib.Path:
    """Bar chart of the model probabilities (with the bootstrap 16-84 % range) and, if
    computed, the probability of each model against the number of stars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = report["models"]
    curve = report.get("probability_vs_n_stars") or []
    fig, axes = plt.subplots(1, 2 if curve else 1, figsize=(9 if curve else 4.5, 3.4))
    axes = np.atleast_1d(axes)
    probs = [report["probability"][m] for m in names]
    ax = axes[0]
    ax.bar(names, probs, color="C0")
    if "bootstrap" in report:
        lo_hi = np.array([report["bootstrap"]["probability_16_84"][m] for m in names]).T
        ax.errorbar(
            names,
            probs,
            yerr=np.abs(lo_hi - np.array(probs)),
            fmt="none",
            color="k",
            capsize=4,
            label="bootstrap 16-84 %",
        )
        ax.legend(loc="upper right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("posterior model probability")
    ax.set_title(f"{report['n_stars']} stars")
    if curve:
        ax = axes[1]
        ns = [c["n_stars"] for c in curve]
        for j, m in enumerate(names):
            ax.plot(ns, [c["probability"][j] for c in curve], "o-", label=m)
        ax.set_xscale("log")
        ax.set_xlabel("number of stars")
        ax.set_ylabel("probability")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = pathlib.Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_reliability(calibration: dict, path: str | os.PathLike) -> pathlib.Path:
    """Reliability diagram of `comparison_calibration`'s table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = calibration["reliability"]
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.fill_between([0, 1], [-0.1, 0.9], [0.1, 1.1], color="0.9", label="± 0.1")
    ax.errorbar(
        [r["mean_probability"] for r in rows],
        [r["observed_frequency"] for r in rows],
        yerr=[r["standard_error"] for r in rows],
        fmt="o",
        color="C3",
    )
    for r in rows:
        ax.annotate(
            str(r["count"]),
            (r["mean_probability"], r["observed_frequency"]),
            textcoords="offset points",
            xytext=(5, -10),
            fontsize=7,
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("predicted model probability")
    ax.set_ylabel("frequency the model is true")
    ax.set_title(
        f"{calibration['n_sets']} sets of {calibration['n_stars']} stars: "
        f"{100 * calibration['fraction_correct']:.0f} % correct",
        fontsize=9,
    )
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path = pathlib.Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def load_candidates(names: Sequence[str], cache: str | os.PathLike, **kwargs) -> list[Candidate]:
    """`build_candidate` for each name (training what the cache lacks)."""
    return [build_candidate(n, cache, **kwargs) for n in names]


def run_compare(
    out: str | os.PathLike,
    *,
    sets: Sequence[str] = ("tng", "default", "mixed"),
    x_obs: np.ndarray | None = None,
    mock: str | None = "tng",
    stars: int = 100,
    seed: int = 0,
    train_seed: int = 0,
    n_train: int = 100_000,
    n_test: int = 2000,
    epochs: int | None = None,
    cache: str | os.PathLike | None = None,
    n_draws: int = 512,
    n_grid: int = 64,
    n_bootstrap: int = 200,
    curve: Sequence[int] = (1, 3, 10, 30),
    calibration_sets: int = 0,
    calibration_stars: int = 100,
    data_dir=None,
    show_progress: bool = True,
) -> dict:
    """Compare yield sets on a star table (`x_obs`) or a mock galaxy from the model `mock`.

    Trains (or loads from `cache`, default `out/cache`) the candidates with `build_candidate`,
    computes the posterior model probabilities with `compare_models` and writes
    `out/summary.json` and `out/compare.png`. With `calibration_sets > 0` it also runs
    `comparison_calibration` (resumable, `out/calibration_sets.jsonl`) and writes
    `out/calibration.json` and `out/reliability.png`. `epochs` caps every training stage
    (default: each stage's own default).

    **Returns:** the summary dictionary.
    """
    api = "run_compare"
    sets = list(dict.fromkeys(sets))
    if len(sets) < 2:
        raise ValueError(f"`{api}`: `sets` must name at least two yield sets; got {sets}.")
    if x_obs is None and mock is None:
        raise ValueError(f"`{api}`: pass a star table `x_obs` or a `mock` yield set.")
    if x_obs is None and stars < 1:
        raise ValueError(f"`{api}`: `stars` must be >= 1; got {stars}.")
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cache = out / "cache" if cache is None else pathlib.Path(cache)
    kwargs: dict[str, typing.Any] = {}
    if epochs is not None:
        kwargs = dict(emulator_epochs=epochs, npe_epochs=epochs, marginal_epochs=epochs)
    t0 = time.perf_counter()
    candidates = [
        build_candidate(
            name,
            cache,
            seed=train_seed,
            n_train=n_train,
            n_test=n_test,
            data_dir=data_dir,
            show_progress=show_progress,
            **kwargs,
        )
        for name in sets
    ]
    build_s = time.perf_counter() - t0
    truth = None
    if x_obs is None:
        from ._headline import mock_stars

        k_lam, k_mock = jax.random.split(jax.random.key(seed))
        lam = np.asarray(ChemistryPrior().sample(k_lam, ()))[:2]
        x_obs, _ = mock_stars(
            k_mock, stars, truth=lam.tolist(), yields=candidate_yields(mock, data_dir=data_dir)
        )
        truth = {"yields": mock, **dict(zip(GLOBAL_NAMES, lam.tolist(), strict=True))}
        np.savez(out / "mock.npz", x_obs=x_obs)
    x_obs = check_observations(api, x_obs)
    res = compare_models(
        jax.random.key(seed + 1),
        candidates,
        x_obs,
        n_draws=n_draws,
        n_grid=n_grid,
        n_bootstrap=n_bootstrap,
        n_stars_curve=curve,
    )
    summary = {
        **res.report,
        "truth": truth,
        "train": {c.name: c.info for c in candidates},
        "build_s": build_s,
        "device": jax.devices()[0].platform,
        "dtype": str(jnp.asarray(0.0).dtype),
    }
    plot_comparison(summary, out / "compare.png")
    if "ppc_winner" in summary:
        plot_ppc(
            summary["ppc_winner"],
            out / "ppc.png",
            title=f"PPC of the winner ({summary['winner']}), {len(x_obs)} stars",
        )
    if calibration_sets > 0:
        cal = comparison_calibration(
            jax.random.key(seed + 2),
            candidates,
            n_sets=calibration_sets,
            n_stars=calibration_stars,
            n_draws=n_draws,
            n_grid=n_grid,
            data_dir=data_dir,
            show_progress=show_progress,
            out=out,
        )
        (out / "calibration.json").write_text(json.dumps(cal, indent=1))
        plot_reliability(cal, out / "reliability.png")
        summary["calibration"] = {k: v for k, v in cal.items() if k != "sets"}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def posterior_predictive(
    key: PRNGKeyArray,
    posterior: Posterior,
    emulator: Emulator,
    x_obs: Float[ArrayLike, "n_star n_obs"],
    *,
    n_draws: int = 200,
    noise: float = 0.05,
) -> dict:
    """Posterior predictive check of a 6-D NPE with draws from the NPE itself.

    Like `posterior_predictive_check`, but the draws come straight from q(θ | x_i) with equal
    weights, so no likelihood evaluation is needed for the draws; a miscalibrated NPE or a
    misspecified model both show up as an excess of small p-values.

    **Returns:** the dict of `posterior_predictive_check` (with the per-star `p_values`).
    """
    api = "posterior_predictive"
    if tuple(posterior.params) != THETA_COLUMNS:
        raise ValueError(
            f"`{api}`: `posterior` must be a 6-D NPE over all per-star parameters (the "
            f"emulator needs all six); got one over {posterior.params}."
        )
    if n_draws < 2:
        raise ValueError(f"`{api}`: `n_draws` must be >= 2; got {n_draws}.")
    x_obs = check_observations(api, x_obs, posterior.x_columns)
    cond = jnp.asarray(x_obs, posterior.u_mean.dtype)
    theta = posterior.sample_per_star(key, n_draws, cond)
    weights = jnp.full(theta.shape[:2], 1.0 / n_draws, theta.dtype)
    star = StarEvidence(jnp.zeros(len(x_obs)), jnp.full(len(x_obs), n_draws), theta, weights)
    return posterior_predictive_check(
        star, emulator, x_obs, x_columns=posterior.x_columns, noise=noise
    )


def plot_ppc(report: dict, path: str | os.PathLike, *, title: str = "") -> pathlib.Path:
    """Histogram of the per-star posterior predictive p-values of a PPC report."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = np.asarray(report["p_values"])
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.hist(p, bins=np.linspace(0, 1, 21), color="C0")
    ax.axvline(0.05, color="C3", ls="--", lw=1, label="p = 0.05")
    ax.set_xlabel("posterior predictive p-value (χ² of the 8 abundances)")
    ax.set_ylabel("stars")
    frac = 100 * report["fraction_below_0.05"]
    ax.set_title(title or f"{len(p)} stars, {frac:.1f} % below 0.05", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = pathlib.Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
