"""Combine per-star posteriors of global parameters Λ into one posterior for a set of stars.

Stars i = 1…N are independent given the global parameters Λ (for the chemistry, Λ =
(`imf_slope`, `log10_n_ia`)), and each star has a posterior p(Λ | x_i) under the same prior
p(Λ). Bayes' theorem then gives

    p(Λ | x_1…N) ∝ p(Λ)^(1 − N) Π_i p(Λ | x_i),

so the prior, which each per-star posterior contains once, must be divided out N − 1 times.

Two families of combiners are provided:

- Gaussian: `gaussian_fit` turns per-star samples into Gaussians (μ_i, Σ_i) and
    `gaussian_product` multiplies them in closed form, exact when the per-star posteriors and the
    prior are Gaussian. `gaussian_product_compat` is sbi-chempy's headline variant (1-D,
    no prior term, no covariance), kept only to reproduce their numbers.
- Exact factorised potential: `aggregate_log_posteriors` builds log p(Λ | x_1…N) from a per-star
    marginal posterior density (e.g. a flowjax flow's `log_prob`), vectorised over stars;
    `laplace_aggregate` finds its mode and Laplace covariance and `nuts_aggregate` samples it
    with NumPyro NUTS. No Gaussian assumption.

Every i.i.d. combiner ignores what the stars of one galaxy share beyond Λ (their enrichment
history), and per-star miscalibration compounds with N: calibrate on simulated galaxies before
quoting sub-percent errors.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.tree_utils as otu
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

__all__ = [
    "FactorisedLogPosterior",
    "GaussianPosterior",
    "LaplaceResult",
    "NUTSResult",
    "aggregate_log_posteriors",
    "gaussian_fit",
    "gaussian_product",
    "gaussian_product_compat",
    "laplace_aggregate",
    "nuts_aggregate",
]


class GaussianPosterior(NamedTuple):
    """A Gaussian N(`mean`, `cov`) over the global parameters Λ.

    `gaussian_fit` returns one with a leading `n_star` axis on both fields (one Gaussian per
    star); it unpacks as `means, covs = gaussian_fit(samples)`.

    **Arguments:**

    - `mean`: the mean, shape `(n_global,)` (or `(n_star, n_global)`).
    - `cov`: the covariance, shape `(n_global, n_global)` (or `(n_star, n_global, n_global)`).
    """

    mean: Float[Array, "*batch n_global"]
    cov: Float[Array, "*batch n_global n_global"]


class LaplaceResult(NamedTuple):
    """The outcome of `laplace_aggregate`.

    **Arguments:**

    - `posterior`: the Laplace approximation: `mean` is the mode of the aggregated potential and
        `cov` the inverse of minus its Hessian there.
    - `log_potential`: the (unnormalised) aggregated log-density at the mode.
    - `grad_norm`: the norm of its gradient at the returned mode.
    - `num_steps`: optimiser steps taken.
    """

    posterior: GaussianPosterior
    log_potential: Float[Array, ""]
    grad_norm: Float[Array, ""]
    num_steps: Int[Array, ""]


class NUTSResult(NamedTuple):
    """The outcome of `nuts_aggregate`.

    **Arguments:**

    - `samples`: posterior draws of Λ, shape `(n_chain, n_sample, n_global)`.
    - `r_hat`: split Gelman-Rubin r̂ per parameter, shape `(n_global,)` (close to 1 when the
        chains have mixed; aim for ≤ 1.01).
    - `ess`: effective sample size per parameter over all chains, shape `(n_global,)`.
    - `num_divergences`: divergent transitions after warm-up (should be 0).
    """

    samples: Float[Array, "n_chain n_sample n_global"]
    r_hat: Float[Array, " n_global"]
    ess: Float[Array, " n_global"]
    num_divergences: int


# ------------------------------------------------------------------------------------------
# Input checks
# ------------------------------------------------------------------------------------------


def _float_dtype(*arrays):
    return jnp.result_type(*arrays, float)


def _check_means(api: str, name: str, means: Array) -> int:
    """Static shape checks of an `(n_star, n_global)` array; returns `n_global`."""
    if means.ndim != 2:
        raise ValueError(
            f"`{api}`: `{name}` must have shape (n_star, n_global), one row per star; got shape "
            f"{means.shape}. For a single star pass `{name}[None]`."
        )
    if means.shape[0] == 0:
        raise ValueError(
            f"`{api}`: `{name}` holds no stars (shape {means.shape}); pass at least one star."
        )
    if means.shape[1] == 0:
        raise ValueError(f"`{api}`: `{name}` has no parameters (shape {means.shape}).")
    return means.shape[1]


def _check_finite(api: str, name: str, x: Array) -> Array:
    return eqx.error_if(
        x,
        ~jnp.all(jnp.isfinite(x)),
        f"`{api}`: `{name}` must be finite; got NaN or inf. Drop or refit the stars concerned.",
    )


def _check_positive_definite(api: str, name: str, cov: Array) -> Array:
    sym = 0.5 * (cov + jnp.swapaxes(cov, -1, -2))
    min_eig = jnp.min(jnp.linalg.eigvalsh(sym))
    return eqx.error_if(
        cov,
        ~(min_eig > 0),
        f"`{api}`: every matrix in `{name}` must be a symmetric positive-definite covariance; "
        "got one with an eigenvalue <= 0 (or NaN). Check the per-star fits (too few samples, "
        "a degenerate parameter).",
    )


def _check_start(api: str, init: Array) -> Array:
    """`init` of shape `(n_global,)` or `(n_init, n_global)` → start point (mean of rows)."""
    if init.ndim == 1 and init.shape[0] > 0:
        return init
    if init.ndim == 2 and init.shape[0] > 0 and init.shape[1] > 0:
        return jnp.mean(init, axis=0)
    raise ValueError(
        f"`{api}`: `init` must have shape (n_global,) (the start point) or (n_init, n_global) "
        f"(start at the mean of the rows, e.g. the per-star means of `gaussian_fit`); got shape "
        f"{init.shape}."
    )


# ------------------------------------------------------------------------------------------
# Gaussian combiners
# ------------------------------------------------------------------------------------------


@eqx.filter_jit
def gaussian_fit(samples: Float[ArrayLike, "n_star n_sample n_global"]) -> GaussianPosterior:
    """Fit one Gaussian per star to posterior samples of Λ (sample mean and covariance).

    The covariance is the unbiased sample covariance (divisor `n_sample − 1`), as `numpy.cov`.

    **Arguments:**

    - `samples`: draws from each star's posterior of Λ, shape `(n_star, n_sample, n_global)`
        with `n_sample >= 2`.

    **Returns:**

    A `GaussianPosterior` with `mean` of shape `(n_star, n_global)` and `cov` of shape
    `(n_star, n_global, n_global)`; unpack it as `means, covs = gaussian_fit(samples)` and pass
    both to `gaussian_product`.
    """
    samples = jnp.asarray(samples)
    samples = samples.astype(_float_dtype(samples))
    if samples.ndim != 3:
        raise ValueError(
            "`gaussian_fit`: `samples` must have shape (n_star, n_sample, n_global); got shape "
            f"{samples.shape}. For a single star pass `samples[None]`."
        )
    if samples.shape[0] == 0:
        raise ValueError(
            f"`gaussian_fit`: `samples` holds no stars (shape {samples.shape}); pass at least one."
        )
    if samples.shape[1] < 2:
        raise ValueError(
            "`gaussian_fit`: `samples` needs at least 2 draws per star (axis 1) to estimate a "
            f"covariance; got shape {samples.shape}."
        )
    samples = _check_finite("gaussian_fit", "samples", samples)

    def fit_one(x):
        mean = jnp.mean(x, axis=0)
        d = x - mean
        return mean, d.T @ d / (x.shape[0] - 1)

    means, covs = jax.vmap(fit_one)(samples)
    return GaussianPosterior(means, covs)


@eqx.filter_jit
def gaussian_product(
    means: Float[ArrayLike, "n_star n_global"],
    covs: Float[ArrayLike, "n_star n_global n_global"],
    prior_mean: Float[ArrayLike, " n_global"],
    prior_cov: Float[ArrayLike, "n_global n_global"],
) -> GaussianPosterior:
    """Combine per-star Gaussian posteriors of Λ that share a Gaussian prior.

    With per-star posteriors N(μ_i, Σ_i) and prior N(μ_p, Σ_p), the posterior given all N
    stars is N(μ, Σ) with

        Σ⁻¹ = Σ_i Σ_i⁻¹ − (N − 1) Σ_p⁻¹,
        μ = Σ [Σ_i Σ_i⁻¹ μ_i − (N − 1) Σ_p⁻¹ μ_p],

    exact when the per-star posteriors are Gaussian (full covariance, not just the diagonal).
    Works under `jit` and `vmap`.

    Raises (through `eqx.error_if`, so also under `jit`) when an input is NaN/inf, a covariance
    is not positive definite, or the combined precision Σ⁻¹ is not positive definite, which
    happens when the per-star posteriors are too wide (or miscalibrated) relative to the prior:
    subtracting the prior N − 1 times then removes more information than the stars hold.

    **Arguments:**

    - `means`: per-star posterior means μ_i, shape `(n_star, n_global)`.
    - `covs`: per-star posterior covariances Σ_i, shape `(n_star, n_global, n_global)`.
    - `prior_mean`: prior mean μ_p, shape `(n_global,)`.
    - `prior_cov`: prior covariance Σ_p, shape `(n_global, n_global)`.

    **Returns:**

    The combined `GaussianPosterior(mean, cov)`.
    """
    api = "gaussian_product"
    means, covs = jnp.asarray(means), jnp.asarray(covs)
    prior_mean, prior_cov = jnp.asarray(prior_mean), jnp.asarray(prior_cov)
    dtype = _float_dtype(means, covs, prior_mean, prior_cov)
    means, covs = means.astype(dtype), covs.astype(dtype)
    prior_mean, prior_cov = prior_mean.astype(dtype), prior_cov.astype(dtype)
    k = _check_means(api, "means", means)
    n_star = means.shape[0]
    expected = {
        "covs": (covs, (n_star, k, k)),
        "prior_mean": (prior_mean, (k,)),
        "prior_cov": (prior_cov, (k, k)),
    }
    for name, (x, shape) in expected.items():
        if x.shape != shape:
            raise ValueError(
                f"`{api}`: `{name}` must have shape {shape} to match `means` of shape "
                f"{means.shape} (n_star={n_star}, n_global={k}); got shape {x.shape}. Pass "
                "one mean row and one covariance matrix per star, and a prior over the same "
                "parameters in the same order."
            )
    means = _check_finite(api, "means", means)
    covs = _check_finite(api, "covs", covs)
    prior_mean = _check_finite(api, "prior_mean", prior_mean)
    prior_cov = _check_finite(api, "prior_cov", prior_cov)
    covs = _check_positive_definite(api, "covs", covs)
    prior_cov = _check_positive_definite(api, "prior_cov", prior_cov)

    star_precisions = jnp.linalg.inv(covs)
    prior_precision = jnp.linalg.inv(prior_cov)
    precision = jnp.sum(star_precisions, axis=0) - (n_star - 1) * prior_precision
    precision = 0.5 * (precision + precision.T)
    shift = jnp.einsum("nij,nj->i", star_precisions, means)
    shift = shift - (n_star - 1) * (prior_precision @ prior_mean)
    min_eig = jnp.min(jnp.linalg.eigvalsh(precision))
    precision = eqx.error_if(
        precision,
        ~(min_eig > 0),
        f"`{api}`: the combined precision Σ_i Σ_i⁻¹ − (N − 1) Σ_p⁻¹ is not positive definite "
        "(an eigenvalue <= 0): the per-star posteriors are too wide or miscalibrated relative "
        "to the prior (subtracting the prior N − 1 times removes more information than the "
        "stars hold). Check that `prior_mean`/`prior_cov` is the prior the per-star posteriors "
        "were trained under and check their calibration, or use `aggregate_log_posteriors` "
        "(with `laplace_aggregate` or `nuts_aggregate`) instead of the Gaussian product.",
    )
    cov = jnp.linalg.inv(precision)
    cov = 0.5 * (cov + cov.T)
    mean = jnp.linalg.solve(precision, shift)
    return GaussianPosterior(mean, cov)


@eqx.filter_jit
def gaussian_product_compat(
    means: Float[ArrayLike, "n_star n_global"], stds: Float[ArrayLike, "n_star n_global"]
) -> GaussianPosterior:
    """sbi-chempy's headline combination: 1-D inverse-variance weighting per parameter.

    μ_k = Σ_i μ_ik / σ_ik² / Σ_i σ_ik⁻²,  σ_k = (Σ_i σ_ik⁻²)^(-1/2),

    with **no** (N − 1) prior correction and **no** covariance between parameters. Use it only
    to reproduce their published numbers: it counts the prior N times, so with an informative
    prior it is biased towards the prior mean and over-confident (too small σ), increasingly so
    as N grows. Dropping the covariance also loses the information that differently oriented
    per-star correlations carry. For inference use `gaussian_product`.

    **Arguments:**

    - `means`: per-star posterior means, shape `(n_star, n_global)`.
    - `stds`: per-star marginal posterior standard deviations, shape `(n_star, n_global)` (from
        covariances: `jnp.sqrt(jnp.diagonal(covs, axis1=1, axis2=2))`).

    **Returns:**

    A `GaussianPosterior` whose `cov` is diagonal, σ_k² on the diagonal.
    """
    api = "gaussian_product_compat"
    means, stds = jnp.asarray(means), jnp.asarray(stds)
    dtype = _float_dtype(means, stds)
    means, stds = means.astype(dtype), stds.astype(dtype)
    _check_means(api, "means", means)
    if stds.shape != means.shape:
        raise ValueError(
            f"`{api}`: `stds` must have the shape of `means`, {means.shape} (one standard "
            f"deviation per star and parameter); got shape {stds.shape}."
        )
    means = _check_finite(api, "means", means)
    stds = eqx.error_if(
        stds,
        ~jnp.all(jnp.isfinite(stds) & (stds > 0)),
        f"`{api}`: `stds` must be finite and > 0; got a NaN, inf or non-positive value.",
    )
    weights = stds**-2
    total = jnp.sum(weights, axis=0)
    mean = jnp.sum(weights * means, axis=0) / total
    return GaussianPosterior(mean, jnp.diag(1.0 / total))


# ------------------------------------------------------------------------------------------
# Exact factorised potential
# ------------------------------------------------------------------------------------------


@typing.final
class FactorisedLogPosterior(eqx.Module):
    """The aggregated log-posterior λ ↦ log p(λ) + Σ_i [log q(λ | x_i) − log p(λ)].

    Made by `aggregate_log_posteriors`; see there. Calling it on one `(n_global,)` point
    evaluates `log_posterior_fn` once per star, vectorised with `jax.vmap` (one batched call,
    not a Python loop), so it is cheap to differentiate and to `vmap` over many points.
    """

    log_posterior_fn: Callable[[Array, Array], Array]
    log_prior_fn: Callable[[Array], Array]
    conditions: Array = eqx.field(converter=jnp.asarray)

    def __check_init__(self):
        if self.conditions.ndim == 0 or self.conditions.shape[0] == 0:
            raise ValueError(
                "`aggregate_log_posteriors`: `conditions` must have shape (n_star, ...) with at "
                f"least one star (one row of observables per star); got shape "
                f"{self.conditions.shape}."
            )

    @property
    def n_star(self) -> int:
        """The number of stars N."""
        return self.conditions.shape[0]

    def per_star(self, lam: Float[ArrayLike, " n_global"]) -> Float[Array, " n_star"]:
        """log q(λ | x_i) for every star, shape `(n_star,)`."""
        lam = jnp.asarray(lam)
        out = jax.vmap(self.log_posterior_fn, in_axes=(None, 0))(lam, self.conditions)
        if jnp.shape(out) != (self.n_star,):
            raise ValueError(
                "`aggregate_log_posteriors`: `log_posterior_fn(lam, x_i)` must return a scalar "
                f"log-density for one point `lam` of shape {lam.shape} and one star's "
                f"condition of shape {self.conditions.shape[1:]}; over {self.n_star} stars it "
                f"returned shape {jnp.shape(out)}. For a flowjax flow use "
                "`lambda lam, x: flow.log_prob(lam, condition=x)`."
            )
        return out

    def __call__(self, lam: Float[ArrayLike, " n_global"]) -> Float[Array, ""]:
        lam = jnp.asarray(lam)
        log_prior = jnp.asarray(self.log_prior_fn(lam))
        if log_prior.shape != ():
            raise ValueError(
                "`aggregate_log_posteriors`: `log_prior_fn(lam)` must return a scalar for one "
                f"point `lam` of shape {lam.shape}; got shape {log_prior.shape}."
            )
        return log_prior + jnp.sum(self.per_star(lam) - log_prior)


def aggregate_log_posteriors(
    log_posterior_fn: Callable[[Array, Array], Array],
    log_prior_fn: Callable[[Array], Array],
    conditions: Float[ArrayLike, "n_star ..."],
) -> FactorisedLogPosterior:
    """The exact factorised log-posterior of Λ given N stars, from per-star posteriors.

        log p(Λ | x_1…N) = log p(Λ) + Σ_i [log q(Λ | x_i) − log p(Λ)] + const,

    exact (up to the error of q) for stars independent given Λ; no Gaussian assumption. q must
    be the **marginal** posterior over Λ alone (e.g. an NPE trained on Λ only, not the joint
    over Λ and the per-star locals) under the prior `log_prior_fn`.

    **Arguments:**

    - `log_posterior_fn`: `log_posterior_fn(lam, x_i) -> scalar`, the per-star log-density
        log q(λ | x_i) at one point `lam` of shape `(n_global,)` for one star's condition `x_i`,
        e.g. `lambda lam, x: flow.log_prob(lam, condition=x)` for a flowjax flow (a bound
        method of an `eqx.Module` keeps the flow's arrays traced rather than baked in).
    - `log_prior_fn`: `log_prior_fn(lam) -> scalar`, the prior log-density the per-star
        posteriors were fitted under.
    - `conditions`: the per-star observables x_i, shape `(n_star, ...)` (typically
        `(n_star, n_obs)`).

    **Returns:**

    A `FactorisedLogPosterior`: call it on `lam` of shape `(n_global,)` for the scalar
    unnormalised log-posterior; it `jit`s, `grad`s and `vmap`s, and `laplace_aggregate` and
    `nuts_aggregate` use it.
    """
    return FactorisedLogPosterior(log_posterior_fn, log_prior_fn, conditions)


# One instance, so that repeated calls with the same functions reuse the compiled solve.
_DEFAULT_OPTIMIZER = optax.lbfgs()


@eqx.filter_jit
def _laplace(log_density, start, optimizer, max_steps, gtol):
    api = "laplace_aggregate"
    loss = lambda lam: -log_density(lam)
    value, grad = jax.value_and_grad(loss)(start)
    start = eqx.error_if(
        start,
        ~(jnp.isfinite(value) & jnp.all(jnp.isfinite(grad))),
        f"`{api}`: the aggregated log-posterior or its gradient is NaN or inf at the start "
        "point; pass an `init` inside the support of every per-star posterior and the prior.",
    )

    def converged(value, grad):
        return otu.tree_norm(grad) <= gtol * (1 + jnp.abs(value))

    def cond(carry):
        _, _, step, value, grad = carry
        return (step < max_steps) & ~converged(value, grad) & jnp.isfinite(value)

    def body(carry):
        lam, state, step, value, grad = carry
        updates, state = optimizer.update(grad, state, lam, value=value, grad=grad, value_fn=loss)
        lam = optax.apply_updates(lam, updates)
        value, grad = jax.value_and_grad(loss)(lam)
        return lam, state, step + 1, value, grad

    carry = (start, optimizer.init(start), jnp.array(0), value, grad)
    mode, _, num_steps, value, grad = jax.lax.while_loop(cond, body, carry)
    mode = eqx.error_if(
        mode,
        ~converged(value, grad),
        f"`{api}`: the optimiser did not reach the mode (gradient norm above `gtol` after "
        "`max_steps` steps, or a NaN); raise `max_steps`, pass a better `init` (e.g. the mean "
        "of `gaussian_product`), or try another `optimizer`.",
    )
    hessian = jax.hessian(log_density)(mode)
    hessian = 0.5 * (hessian + hessian.T)
    max_eig = jnp.max(jnp.linalg.eigvalsh(hessian))
    hessian = eqx.error_if(
        hessian,
        ~(max_eig < 0),
        f"`{api}`: the Hessian of the aggregated log-posterior at the optimum is not negative "
        "definite (an eigenvalue >= 0, or NaN), so the point found is not a proper maximum and "
        "has no Laplace covariance (a saddle, a flat direction, or a multimodal posterior). "
        "Start from another `init` or sample with `nuts_aggregate` instead.",
    )
    cov = jnp.linalg.inv(-hessian)
    cov = 0.5 * (cov + cov.T)
    return LaplaceResult(GaussianPosterior(mode, cov), -value, otu.tree_norm(grad), num_steps)


def laplace_aggregate(
    log_posterior_fn: Callable[[Array, Array], Array],
    log_prior_fn: Callable[[Array], Array],
    conditions: Float[ArrayLike, "n_star ..."],
    init: Float[ArrayLike, "*n_init n_global"],
    *,
    optimizer: optax.GradientTransformation | None = None,
    max_steps: int = 500,
    gtol: float | None = None,
) -> LaplaceResult:
    """Laplace approximation of the aggregated posterior `aggregate_log_posteriors` builds.

    Maximises the factorised log-posterior with an optax optimiser from `init`, then takes the
    covariance as the inverse of minus its Hessian (`jax.hessian`) at the mode. Exact for
    Gaussian per-star posteriors; for skewed ones the mode is not the mean and the curvature
    misses the skew (use `nuts_aggregate`). Raises (through `eqx.error_if`) if the start point
    is outside the support, the optimiser does not converge, or the Hessian at the optimum is
    not negative definite.

    **Arguments:**

    - `log_posterior_fn`, `log_prior_fn`, `conditions`: as `aggregate_log_posteriors`.
    - `init`: the start point, shape `(n_global,)`, or `(n_init, n_global)` to start at the
        mean of the rows (e.g. the per-star means of `gaussian_fit`).
    - `optimizer`: an optax optimiser (default `optax.lbfgs()`, which needs no tuning; e.g.
        `optax.adam(1e-2)` also works with a larger `max_steps`). It is called as
        `update(grad, state, params, value=, grad=, value_fn=)` on minus the log-posterior.
    - `max_steps`: the maximum number of optimiser steps.
    - `gtol`: stop when ‖∇ log p‖ <= `gtol` (1 + |log p|); default √ε of the dtype.

    **Returns:**

    A `LaplaceResult` with `posterior` (`GaussianPosterior(mode, cov)`), `log_potential` (the
    unnormalised log-posterior at the mode), `grad_norm` and `num_steps`.
    """
    api = "laplace_aggregate"
    init = jnp.asarray(init)
    init = init.astype(_float_dtype(init))
    start = _check_start(api, init)
    if not (isinstance(max_steps, int) and max_steps >= 1):
        raise ValueError(f"`{api}`: `max_steps` must be an integer >= 1; got {max_steps!r}.")
    if gtol is None:
        gtol = float(np.sqrt(jnp.finfo(start.dtype).eps))
    if not gtol > 0:
        raise ValueError(f"`{api}`: `gtol` must be > 0; got {gtol!r}.")
    if optimizer is None:
        optimizer = _DEFAULT_OPTIMIZER
    log_density = aggregate_log_posteriors(log_posterior_fn, log_prior_fn, conditions)
    # `max_steps` and `gtol` are traced, so changing them does not recompile
    gtol = jnp.asarray(gtol, dtype=start.dtype)
    return _laplace(log_density, start, optimizer, jnp.asarray(max_steps), gtol)


_CHAIN_METHODS = ("vectorized", "parallel", "sequential")


@eqx.filter_jit
def _evaluate_points(log_density, points):
    return jax.vmap(log_density)(points)


def nuts_aggregate(
    key: PRNGKeyArray,
    log_posterior_fn: Callable[[Array, Array], Array],
    log_prior_fn: Callable[[Array], Array],
    conditions: Float[ArrayLike, "n_star ..."],
    init: Float[ArrayLike, "*n_chain n_global"],
    *,
    num_warmup: int = 1000,
    num_samples: int = 1000,
    num_chains: int = 1,
    chain_method: str = "vectorized",
    target_accept_prob: float = 0.9,
    dense_mass: bool = True,
    progress_bar: bool = False,
) -> NUTSResult:
    """Sample the aggregated posterior `aggregate_log_posteriors` builds with NumPyro NUTS.

    The potential is minus the factorised log-posterior; each gradient costs one (vmapped)
    evaluation of `log_posterior_fn` per star. No Gaussian assumption. Runs on the host
    (NumPyro's `MCMC` is not itself `jit`-able; it compiles the sampler internally).

    **Arguments:**

    - `key`: a PRNG key (`jax.random.key(seed)`).
    - `log_posterior_fn`, `log_prior_fn`, `conditions`: as `aggregate_log_posteriors`.
    - `init`: the initial point, shape `(n_global,)` for every chain or `(num_chains, n_global)`
        one per chain, e.g. the mode from `laplace_aggregate` or the mean of
        `gaussian_product`.
    - `num_warmup`, `num_samples`: warm-up (adaptation) and kept draws per chain.
    - `num_chains`: the number of chains (≥ 2 for a meaningful r̂).
    - `chain_method`: `"vectorized"` (default; all chains in one program, fast on one device),
        `"parallel"` (one device per chain) or `"sequential"`.
    - `target_accept_prob`: NUTS's target acceptance probability.
    - `dense_mass`: adapt a dense mass matrix (right for the few, correlated globals).
    - `progress_bar`: show NumPyro's progress bar.

    **Returns:**

    A `NUTSResult` with `samples` `(num_chains, num_samples, n_global)`, split `r_hat` and `ess`
    per parameter, and the number of divergent transitions.
    """
    api = "nuts_aggregate"
    try:
        import numpyro.diagnostics
        from numpyro.infer import MCMC, NUTS
    except ImportError as error:  # pragma: no cover - numpyro is installed in CI
        raise ImportError(
            f"`{api}` needs NumPyro: `pip install numpyro`; `laplace_aggregate` and "
            "`gaussian_product` work without it."
        ) from error
    for name, value in (
        ("num_warmup", num_warmup),
        ("num_samples", num_samples),
        ("num_chains", num_chains),
    ):
        minimum = 0 if name == "num_warmup" else 1
        if not (isinstance(value, int) and value >= minimum):
            raise ValueError(f"`{api}`: `{name}` must be an integer >= {minimum}; got {value!r}.")
    if chain_method not in _CHAIN_METHODS:
        raise ValueError(
            f"`{api}`: `chain_method` must be one of {_CHAIN_METHODS}; got {chain_method!r}."
        )
    init = jnp.asarray(init)
    init = init.astype(_float_dtype(init))
    if init.ndim == 1 and init.shape[0] > 0:
        init_params = jnp.broadcast_to(init, (num_chains, init.shape[0]))
    elif init.ndim == 2 and init.shape[0] == num_chains and init.shape[1] > 0:
        init_params = init
    else:
        raise ValueError(
            f"`{api}`: `init` must have shape (n_global,) (the same start for every chain) or "
            f"(num_chains, n_global) = ({num_chains}, n_global); got shape {init.shape}."
        )
    log_density = aggregate_log_posteriors(log_posterior_fn, log_prior_fn, conditions)
    start_values = np.asarray(_evaluate_points(log_density, init_params))
    if not np.all(np.isfinite(start_values)):
        raise ValueError(
            f"`{api}`: the aggregated log-posterior is NaN or inf at `init` (values "
            f"{start_values}); pass an `init` inside the support of every per-star posterior "
            "and the prior."
        )
    if num_chains == 1:
        init_params = init_params[0]
    # jitted so that NumPyro's eager initialisation compiles it once, not op by op
    kernel = NUTS(
        potential_fn=jax.jit(lambda lam: -log_density(lam)),
        target_accept_prob=target_accept_prob,
        dense_mass=dense_mass,
    )
    mcmc = MCMC(
        kernel,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method=chain_method,
        progress_bar=progress_bar,
    )
    mcmc.run(key, init_params=init_params, extra_fields=("diverging",))
    samples = np.asarray(mcmc.get_samples(group_by_chain=True))
    diverging = np.asarray(mcmc.get_extra_fields()["diverging"])
    return NUTSResult(
        samples=jnp.asarray(samples),
        r_hat=jnp.asarray(numpyro.diagnostics.split_gelman_rubin(samples)),
        ess=jnp.asarray(numpyro.diagnostics.effective_sample_size(samples)),
        num_divergences=int(diverging.sum()),
    )
