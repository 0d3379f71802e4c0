"""Multi-star aggregation against closed-form and brute-force references.

The conjugate model: Λ ~ N(μ_p, Σ_p) (two correlated globals), star i observes
x_i = Λ + e_i with e_i ~ N(0, S_i), every S_i different and correlated. Each star's posterior
is then Gaussian, N(μ_i, Σ_i) with Σ_i = (Σ_p⁻¹ + S_i⁻¹)⁻¹, and so is the joint posterior
given all N stars, N(μ, Σ) with Σ = (Σ_p⁻¹ + Σ_i S_i⁻¹)⁻¹, μ = Σ (Σ_p⁻¹ μ_p + Σ_i S_i⁻¹ x_i).
The references below are computed from the second form, the combiners from the first.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.special
import scipy.stats
from jax.scipy.special import logsumexp
from jax.scipy.stats import multivariate_normal, norm

from diffgal.inference._aggregate import (
    FactorisedLogPosterior,
    GaussianPosterior,
    aggregate_log_posteriors,
    gaussian_fit,
    gaussian_product,
    gaussian_product_compat,
    laplace_aggregate,
    nuts_aggregate,
)

PRIOR_MEAN = np.array([-2.3, -2.89])
PRIOR_SD = np.array([0.3, 0.3])
PRIOR_RHO = 0.6


def _cov(sd, rho):
    return np.array([[sd[0] ** 2, rho * sd[0] * sd[1]], [rho * sd[0] * sd[1], sd[1] ** 2]])


def _conjugate(n_star, *, seed=0, prior_scale=1.0):
    """Per-star posteriors and the exact joint posterior of the conjugate model."""
    rng = np.random.default_rng(seed)
    prior_cov = _cov(PRIOR_SD * prior_scale, PRIOR_RHO)
    truth = PRIOR_MEAN + np.array([0.25, -0.2])  # about one prior sigma away
    noise = np.stack(
        [_cov(rng.uniform(0.3, 1.0, 2), rng.uniform(-0.8, 0.8)) for _ in range(n_star)]
    )
    x = np.stack([rng.multivariate_normal(truth, s) for s in noise])
    prior_prec, noise_prec = np.linalg.inv(prior_cov), np.linalg.inv(noise)
    covs = np.linalg.inv(prior_prec + noise_prec)
    means = np.einsum(
        "nij,nj->ni", covs, prior_prec @ PRIOR_MEAN + np.einsum("nij,nj->ni", noise_prec, x)
    )
    cov = np.linalg.inv(prior_prec + noise_prec.sum(0))
    mean = cov @ (prior_prec @ PRIOR_MEAN + np.einsum("nij,nj->i", noise_prec, x))
    return means, covs, prior_cov, GaussianPosterior(mean, cov)


def _gaussian_star_log_posterior(lam, condition):
    """The exact per-star posterior: `condition` packs (μ_i, vec Σ_i)."""
    return multivariate_normal.logpdf(lam, condition[:2], condition[2:].reshape(2, 2))


def _gaussian_conditions(means, covs):
    return np.concatenate([means, covs.reshape(len(means), 4)], axis=1)


def _prior_log_prob(prior_cov):
    return lambda lam: multivariate_normal.logpdf(lam, PRIOR_MEAN, prior_cov)


# ------------------------------------------------------------------------------------------
# Gaussian product
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_star", [1, 5, 50])
def test_gaussian_product_is_exact_for_the_conjugate_model(n_star):
    means, covs, prior_cov, exact = _conjugate(n_star, seed=n_star)
    got = gaussian_product(means, covs, PRIOR_MEAN, prior_cov)
    np.testing.assert_allclose(got.mean, exact.mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got.cov, exact.cov, rtol=1e-10, atol=1e-14)
    if n_star == 1:  # one star: its own posterior, unchanged
        np.testing.assert_allclose(got.cov, covs[0], rtol=1e-12)
    # the reference is not trivially the mean of the stars
    assert np.max(np.abs(np.mean(means, 0) - exact.mean)) > 1e-3 or n_star == 1


def test_dropping_the_prior_correction_is_wrong():
    # Informative prior (as wide as the noise): the same (N - 1) prior terms matter.
    means, covs, prior_cov, exact = _conjugate(50, seed=3)
    exact_sd = np.sqrt(np.diag(exact.cov))
    stds = np.sqrt(np.diagonal(covs, axis1=1, axis2=2))
    compat = gaussian_product_compat(means, stds)
    compat_sd = np.sqrt(np.diag(compat.cov))
    # the prior counted 50 times instead of once: over-confident and pulled to the prior mean
    assert np.all(compat_sd < 0.8 * exact_sd)
    assert np.all(np.abs(compat.mean - exact.mean) > 2 * exact_sd)
    assert np.all(np.abs(compat.mean - PRIOR_MEAN) < np.abs(exact.mean - PRIOR_MEAN))
    # so is the 2-D product without its prior term: Σ⁻¹ = Σ_i Σ_i⁻¹ (no - (N - 1) Σ_p⁻¹)
    naive_prec = np.linalg.inv(covs).sum(0)
    naive_mean = np.linalg.solve(naive_prec, np.einsum("nij,nj->i", np.linalg.inv(covs), means))
    assert np.all(np.abs(naive_mean - exact.mean) > 2 * exact_sd)


def test_compat_without_covariance_under_a_flat_prior():
    # Almost flat prior: the prior term is negligible, what is left is the dropped covariance.
    # 1-D weighting by marginal variances can only lose information (the Schur complement is
    # superadditive), so its sigma is never below the truth here, and its mean is off.
    means, covs, prior_cov, exact = _conjugate(50, seed=4, prior_scale=1e3)
    exact_sd = np.sqrt(np.diag(exact.cov))
    compat = gaussian_product_compat(means, np.sqrt(np.diagonal(covs, axis1=1, axis2=2)))
    compat_sd = np.sqrt(np.diag(compat.cov))
    assert np.all(compat_sd > 1.05 * exact_sd)
    assert np.max(np.abs(compat.mean - exact.mean) / exact_sd) > 0.3
    # with the correction, the flat-prior product is still exact
    got = gaussian_product(means, covs, PRIOR_MEAN, prior_cov)
    np.testing.assert_allclose(got.mean, exact.mean, rtol=1e-9)
    np.testing.assert_allclose(got.cov, exact.cov, rtol=1e-9)


def test_compat_is_inverse_variance_weighting():
    means = np.array([[1.0, 10.0], [3.0, 20.0]])
    stds = np.array([[1.0, 2.0], [2.0, 2.0]])
    got = gaussian_product_compat(means, stds)
    np.testing.assert_allclose(got.mean, [(1 + 3 / 4) / (1 + 1 / 4), 15.0], rtol=1e-14)
    np.testing.assert_allclose(got.cov, np.diag([1 / 1.25, 2.0]), rtol=1e-14)


def test_gaussian_product_jit_vmap_float32():
    galaxies = [_conjugate(5, seed=s) for s in (10, 11, 12)]
    means = np.stack([g[0] for g in galaxies])
    covs = np.stack([g[1] for g in galaxies])
    batched = jax.jit(jax.vmap(gaussian_product, in_axes=(0, 0, None, None)))
    got = batched(means, covs, PRIOR_MEAN, galaxies[0][2])
    for i, (_, _, _, exact) in enumerate(galaxies):
        np.testing.assert_allclose(got.mean[i], exact.mean, rtol=1e-10)
        np.testing.assert_allclose(got.cov[i], exact.cov, rtol=1e-10)
    means, covs, prior_cov, exact = galaxies[0]
    f32 = gaussian_product(*(np.float32(a) for a in (means, covs, PRIOR_MEAN, prior_cov)))
    assert f32.mean.dtype == jnp.float32 and f32.cov.dtype == jnp.float32
    np.testing.assert_allclose(f32.mean, exact.mean, rtol=1e-5)
    np.testing.assert_allclose(f32.cov, exact.cov, rtol=1e-4)


def test_gaussian_fit():
    rng = np.random.default_rng(5)
    true_means = np.array([[0.0, 1.0], [-2.0, 3.0], [5.0, 5.0]])
    true_covs = np.stack([_cov([1.0, 0.5], 0.7), _cov([0.2, 0.3], -0.4), _cov([2.0, 1.0], 0.0)])
    samples = np.stack(
        [
            rng.multivariate_normal(m, c, size=20_000)
            for m, c in zip(true_means, true_covs, strict=True)
        ]
    )
    means, covs = gaussian_fit(samples)
    assert means.shape == (3, 2) and covs.shape == (3, 2, 2)
    for i in range(3):  # the implementation: numpy's sample mean and (unbiased) covariance
        np.testing.assert_allclose(means[i], samples[i].mean(0), rtol=1e-12)
        np.testing.assert_allclose(covs[i], np.cov(samples[i], rowvar=False), rtol=1e-12)
    # the estimate: within Monte Carlo error of the truth (sd of a mean = sigma / sqrt(20000))
    sd = np.sqrt(np.diagonal(true_covs, axis1=1, axis2=2))
    assert np.all(np.abs(means - true_means) < 4 * sd / np.sqrt(20_000))
    np.testing.assert_allclose(covs, true_covs, atol=0.05 * np.max(true_covs))
    # one parameter: covariances of shape (n_star, 1, 1)
    _, covs1 = gaussian_fit(samples[:, :, :1])
    np.testing.assert_allclose(covs1[:, 0, 0], samples[:, :, 0].var(1, ddof=1), rtol=1e-12)


# ------------------------------------------------------------------------------------------
# Factorised potential: Laplace and NUTS
# ------------------------------------------------------------------------------------------


def test_potential_is_vmapped_and_exact():
    means, covs, prior_cov, exact = _conjugate(50, seed=6)
    calls = []

    def log_posterior(lam, condition):
        calls.append(1)  # counts traces: one for all 50 stars if vmapped, 50 for a loop
        return _gaussian_star_log_posterior(lam, condition)

    potential = aggregate_log_posteriors(
        log_posterior, _prior_log_prob(prior_cov), _gaussian_conditions(means, covs)
    )
    assert isinstance(potential, FactorisedLogPosterior) and potential.n_star == 50
    points = exact.mean + np.array([[0.0, 0.0], [0.01, -0.02], [-0.03, 0.01]])
    values = jax.jit(jax.vmap(potential))(points)
    assert len(calls) == 1
    # differences match the exact joint posterior's log-density differences
    ref = scipy.stats.multivariate_normal(exact.mean, exact.cov).logpdf(points)
    np.testing.assert_allclose(values - values[0], ref - ref[0], rtol=1e-9, atol=1e-9)


def test_potential_with_a_flowjax_flow():
    from flowjax.distributions import Normal
    from flowjax.flows import coupling_flow

    flow = coupling_flow(
        jax.random.key(0), base_dist=Normal(jnp.zeros(2)), cond_dim=3, flow_layers=1, nn_width=4
    )
    conditions = jax.random.normal(jax.random.key(1), (7, 3))
    prior = lambda lam: jnp.sum(norm.logpdf(lam, 0.0, 2.0))
    lam = jnp.array([0.3, -0.4])

    @eqx.filter_jit
    def check(potential, lam):
        # reference: flowjax's own batching over leading axes of x and condition
        per_star = flow.log_prob(jnp.broadcast_to(lam, (7, 2)), condition=conditions)
        reference = prior(lam) + jnp.sum(per_star - prior(lam))
        value, grads = eqx.filter_value_and_grad(lambda p: p(lam))(potential)
        return value, reference, grads, jax.grad(potential)(lam)

    # the bound method `flow.log_prob` is itself a pytree holding the flow's arrays
    potential = aggregate_log_posteriors(flow.log_prob, prior, conditions)
    value, reference, grads, grad_lam = check(potential, lam)
    np.testing.assert_allclose(value, reference, rtol=1e-12)
    assert np.all(np.isfinite(grad_lam)) and np.any(grad_lam != 0)
    # the flow's parameters are traced, not baked in: gradients reach them
    leaves = jax.tree.leaves(eqx.filter(grads.log_posterior_fn, eqx.is_inexact_array))
    assert leaves and any(bool(jnp.any(g != 0)) for g in leaves)


def test_laplace_matches_exact():
    means, covs, prior_cov, exact = _conjugate(20, seed=7)
    traces = []

    def log_posterior(lam, condition):
        traces.append(1)  # counts traces of the per-star function
        return _gaussian_star_log_posterior(lam, condition)

    args = (log_posterior, _prior_log_prob(prior_cov), _gaussian_conditions(means, covs))
    result = laplace_aggregate(*args, means)  # start at the mean of the per-star means
    np.testing.assert_allclose(result.posterior.mean, exact.mean, rtol=0, atol=1e-8)
    np.testing.assert_allclose(result.posterior.cov, exact.cov, rtol=1e-6)
    assert result.grad_norm < 1e-6 and 1 <= int(result.num_steps) < 100
    assert np.isfinite(result.log_potential)
    # another start, step budget and tolerance reuse the compiled solve: no new trace
    n_traces = len(traces)
    again = laplace_aggregate(*args, means[0] + 0.1, max_steps=300, gtol=1e-9)
    assert len(traces) == n_traces
    np.testing.assert_allclose(again.posterior.mean, exact.mean, rtol=0, atol=1e-8)
    np.testing.assert_allclose(again.posterior.cov, exact.cov, rtol=1e-6)


def test_nuts_matches_exact():
    means, covs, prior_cov, exact = _conjugate(20, seed=8)
    result = nuts_aggregate(
        jax.random.key(0),
        _gaussian_star_log_posterior,
        _prior_log_prob(prior_cov),
        _gaussian_conditions(means, covs),
        means.mean(0),
        num_warmup=300,
        num_samples=600,
        num_chains=2,
        target_accept_prob=0.8,
    )
    assert result.samples.shape == (2, 600, 2)
    draws = np.asarray(result.samples).reshape(-1, 2)
    exact_sd = np.sqrt(np.diag(exact.cov))
    standard_error = exact_sd / np.sqrt(np.asarray(result.ess))
    assert np.all(np.abs(draws.mean(0) - exact.mean) < 4 * standard_error)
    np.testing.assert_allclose(draws.std(0), exact_sd, rtol=0.15)
    corr = np.corrcoef(draws, rowvar=False)[0, 1]
    exact_corr = exact.cov[0, 1] / np.prod(exact_sd)
    assert abs(corr - exact_corr) < 0.1
    assert np.all(np.asarray(result.r_hat) < 1.05)
    assert np.all(np.asarray(result.ess) > 200)
    assert result.num_divergences == 0


def _skew_log_posterior(lam, condition):
    """A skewed per-star posterior of one global (K = 1): 2 φ(z) σ(a z) / scale with
    z = (λ - loc) / scale and condition = (loc, scale, a); normalised because
    σ(a z) + σ(-a z) = 1 and φ is even."""
    loc, scale, a = condition
    z = (lam[0] - loc) / scale
    return jnp.log(2.0) + norm.logpdf(z) + jax.nn.log_sigmoid(a * z) - jnp.log(scale)


def _skew_log_posterior_numpy(x, loc, scale, a):
    z = (x - loc) / scale
    return np.log(2) + scipy.stats.norm.logpdf(z) + scipy.special.log_expit(a * z) - np.log(scale)


def test_skewed_posteriors_against_a_grid():
    # Five right-skewed per-star posteriors and a N(0, 2^2) prior. The product is skewed: its
    # mean is not its mode, so Laplace and a Gaussian product miss, while the factorised
    # potential is exact and NUTS on it recovers the brute-force grid's mean and sd.
    conditions = np.array(
        [[0.0, 1.0, 10.0], [0.3, 0.8, 8.0], [-0.2, 1.2, 12.0], [0.1, 0.9, 8.0], [-0.4, 1.1, 10.0]]
    )
    prior = lambda lam: norm.logpdf(lam[0], 0.0, 2.0)
    n_star = len(conditions)
    grid = np.linspace(-3.0, 4.0, 20_001)
    log_ref = sum(_skew_log_posterior_numpy(grid, *c) for c in conditions)
    log_ref = log_ref - (n_star - 1) * scipy.stats.norm.logpdf(grid, 0.0, 2.0)
    weights = np.exp(log_ref - log_ref.max())
    weights /= np.trapezoid(weights, grid)
    grid_mean = np.trapezoid(grid * weights, grid)
    grid_sd = np.sqrt(np.trapezoid((grid - grid_mean) ** 2 * weights, grid))
    assert weights[0] < 1e-12 and weights[-1] < 1e-12  # the grid covers the posterior

    potential = aggregate_log_posteriors(_skew_log_posterior, prior, conditions)
    values = np.asarray(jax.jit(jax.vmap(potential))(grid[::100, None]))
    np.testing.assert_allclose(values - values[0], log_ref[::100] - log_ref[0], atol=1e-9)

    laplace = laplace_aggregate(_skew_log_posterior, prior, conditions, np.array([0.5]))
    laplace_mean = float(laplace.posterior.mean[0])
    laplace_sd = float(laplace.posterior.cov[0, 0]) ** 0.5
    # the per-star posteriors' exact moments (by quadrature), multiplied as Gaussians
    star_means, star_vars = [], []
    for c in conditions:
        density = np.exp(_skew_log_posterior_numpy(grid, *c))
        star_means.append(np.trapezoid(grid * density, grid))
        star_vars.append(np.trapezoid((grid - star_means[-1]) ** 2 * density, grid))
    star_means, star_vars = np.array(star_means), np.array(star_vars)
    product = gaussian_product(star_means[:, None], star_vars[:, None, None], [0.0], [[4.0]])

    result = nuts_aggregate(
        jax.random.key(1), _skew_log_posterior, prior, conditions, np.array([0.5]),
        num_warmup=300, num_samples=800, target_accept_prob=0.8,
    )  # fmt: skip
    draws = np.asarray(result.samples).ravel()
    standard_error = grid_sd / np.sqrt(float(result.ess[0]))
    assert abs(draws.mean() - grid_mean) < 4 * standard_error
    np.testing.assert_allclose(draws.std(), grid_sd, rtol=0.15)
    # the Gaussian shortcuts miss by far more than the sampler's error: grid 0.596 +- 0.268,
    # Laplace 0.473 +- 0.219 (the mode and the curvature there)
    assert abs(laplace_mean - grid_mean) > max(0.3 * grid_sd, 4 * standard_error)
    assert laplace_sd < 0.9 * grid_sd
    assert abs(float(product.mean[0]) - grid_mean) > max(0.3 * grid_sd, 4 * standard_error)


# ------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------


def test_gaussian_product_shape_errors():
    means, covs, prior_cov, _ = _conjugate(3)
    with pytest.raises(ValueError, match=r"`gaussian_product`: `means` holds no stars"):
        gaussian_product(means[:0], covs[:0], PRIOR_MEAN, prior_cov)
    with pytest.raises(ValueError, match=r"`means` must have shape \(n_star, n_global\).*\(2,\)"):
        gaussian_product(means[0], covs, PRIOR_MEAN, prior_cov)
    with pytest.raises(ValueError, match=r"`covs` must have shape \(3, 2, 2\).*got shape \(3, 2\)"):
        gaussian_product(means, covs[:, 0], PRIOR_MEAN, prior_cov)
    with pytest.raises(ValueError, match=r"`prior_mean` must have shape \(2,\).*got shape \(3,\)"):
        gaussian_product(means, covs, np.zeros(3), prior_cov)
    with pytest.raises(ValueError, match=r"`prior_cov` must have shape \(2, 2\).*got shape \(2,\)"):
        gaussian_product(means, covs, PRIOR_MEAN, np.ones(2))
    with pytest.raises(ValueError, match=r"`gaussian_product_compat`: `stds` must have the shape"):
        gaussian_product_compat(means, np.ones((3, 3)))
    with pytest.raises(ValueError, match=r"`gaussian_product_compat`: `means` holds no stars"):
        gaussian_product_compat(means[:0], np.ones((0, 2)))
    with pytest.raises(ValueError, match=r"`gaussian_fit`: `samples` must have shape"):
        gaussian_fit(np.ones((10, 2)))
    with pytest.raises(ValueError, match=r"`gaussian_fit`: `samples` needs at least 2 draws"):
        gaussian_fit(np.ones((3, 1, 2)))


def test_gaussian_product_value_errors():
    means, covs, prior_cov, _ = _conjugate(3)
    bad = means.copy()
    bad[1, 0] = np.nan
    with pytest.raises(Exception, match=r"`gaussian_product`: `means` must be finite"):
        gaussian_product(bad, covs, PRIOR_MEAN, prior_cov)
    with pytest.raises(Exception, match=r"`gaussian_product`: every matrix in `covs`"):
        gaussian_product(means, -covs, PRIOR_MEAN, prior_cov)
    with pytest.raises(Exception, match=r"`gaussian_product_compat`: `stds` must be finite"):
        gaussian_product_compat(means, np.zeros((3, 2)))
    with pytest.raises(Exception, match=r"`gaussian_product_compat`: `means` must be finite"):
        gaussian_product_compat(bad, np.ones((3, 2)))


def test_non_positive_definite_combined_precision_raises():
    # Three stars each twice as wide as the prior: Σ⁻¹ = 3/2 Σ_p⁻¹ - 2 Σ_p⁻¹ < 0.
    prior_cov = _cov(PRIOR_SD, PRIOR_RHO)
    covs = np.broadcast_to(2 * prior_cov, (3, 2, 2))
    means = np.broadcast_to(PRIOR_MEAN, (3, 2))
    message = r"`gaussian_product`: the combined precision .* is not positive definite.*too wide"
    with pytest.raises(Exception, match=message):
        gaussian_product(means, covs, PRIOR_MEAN, prior_cov)
    with pytest.raises(Exception, match=message):
        jax.jit(gaussian_product)(means, covs, PRIOR_MEAN, prior_cov).mean.block_until_ready()
    with pytest.raises(Exception, match=r"use `aggregate_log_posteriors`"):
        eqx.filter_jit(gaussian_product)(means, covs, PRIOR_MEAN, prior_cov)
    # narrower stars are fine: the same call with Σ_i = Σ_p / 2 gives Σ = Σ_p / 4
    got = gaussian_product(means, covs / 4, PRIOR_MEAN, prior_cov)
    np.testing.assert_allclose(got.cov, prior_cov / 4, rtol=1e-12)


def test_potential_errors():
    prior = lambda lam: norm.logpdf(lam[0])
    with pytest.raises(ValueError, match=r"`aggregate_log_posteriors`: `conditions` must have"):
        aggregate_log_posteriors(_skew_log_posterior, prior, np.zeros((0, 3)))
    vector_valued = aggregate_log_posteriors(lambda lam, x: lam * x[0], prior, np.ones((4, 3)))
    with pytest.raises(ValueError, match=r"`log_posterior_fn\(lam, x_i\)` must return a scalar"):
        vector_valued(jnp.ones(2))
    vector_prior = aggregate_log_posteriors(_skew_log_posterior, lambda lam: lam, np.ones((4, 3)))
    with pytest.raises(ValueError, match=r"`log_prior_fn\(lam\)` must return a scalar"):
        vector_prior(jnp.ones(2))
    with pytest.raises(ValueError, match=r"`laplace_aggregate`: `init` must have shape"):
        laplace_aggregate(_skew_log_posterior, prior, np.ones((4, 3)), np.ones((2, 2, 1)))
    with pytest.raises(ValueError, match=r"`nuts_aggregate`: `init` must have shape"):
        nuts_aggregate(
            jax.random.key(0), _skew_log_posterior, prior, np.ones((4, 3)), np.ones((3, 1)),
            num_warmup=1, num_samples=1, num_chains=2,
        )  # fmt: skip
    with pytest.raises(ValueError, match=r"`nuts_aggregate`: `chain_method` must be one of"):
        nuts_aggregate(
            jax.random.key(0), _skew_log_posterior, prior, np.ones((4, 3)), np.ones(1),
            chain_method="threads",
        )  # fmt: skip
    log_prior_of_positive = lambda lam: jnp.where(lam[0] > 0, 0.0, -jnp.inf)
    with pytest.raises(ValueError, match=r"`nuts_aggregate`: the aggregated log-posterior is NaN"):
        nuts_aggregate(
            jax.random.key(0), _skew_log_posterior, log_prior_of_positive, np.ones((4, 3)),
            -np.ones(1), num_warmup=1, num_samples=1,
        )  # fmt: skip


def test_laplace_errors():
    # Bimodal per-star posteriors (modes at ±1.5), started exactly between the modes: the
    # gradient is zero there, but it is a minimum, so there is no Laplace approximation.
    def bimodal(lam, condition):
        return logsumexp(norm.logpdf(lam[0], condition, 0.5))

    conditions = np.array([[-1.5, 1.5]] * 3)
    prior = lambda lam: norm.logpdf(lam[0], 0.0, 3.0)
    with pytest.raises(
        Exception, match=r"`laplace_aggregate`: the Hessian .* not negative definite"
    ):
        laplace_aggregate(bimodal, prior, conditions, np.zeros(1))
    with pytest.raises(Exception, match=r"`laplace_aggregate`: the optimiser did not reach"):
        laplace_aggregate(bimodal, prior, conditions, np.array([0.3]), max_steps=1)
    with pytest.raises(ValueError, match=r"`laplace_aggregate`: `max_steps` must be an integer"):
        laplace_aggregate(bimodal, prior, conditions, np.array([0.3]), max_steps=0)
    # another optimiser converges to a mode of the bimodal posterior, where the Hessian is fine
    result = laplace_aggregate(
        bimodal, prior, conditions, np.array([0.3]), optimizer=optax.adam(0.05), max_steps=2000
    )
    assert 1.0 < float(result.posterior.mean[0]) < 2.0
