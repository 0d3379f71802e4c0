"""Calibration diagnostics for simulation-based inference: SBC, expected coverage and TARP.

Every diagnostic takes M held-out pairs (θ*_j, x*_j) drawn from the prior predictive, and L
posterior draws θ^ℓ ~ q(θ | x*_j) for each pair, and is vectorised over the pairs j:

- **SBC** (Talts et al. 2018): the rank r_jd = #{ℓ : θ^ℓ_jd < θ*_jd} ∈ {0, …, L} is uniform for a
    calibrated posterior ([`sbc_ranks`][diffgal.inference.sbc_ranks],
    [`check_sbc`][diffgal.inference.check_sbc],
    [`plot_sbc_ranks`][diffgal.inference.plot_sbc_ranks]).
- **Expected coverage**: the credibility α_j of the smallest highest-posterior-density region that
    holds the truth, and coverage(c) = (1/M) Σ_j 1[α_j ≤ c], on the diagonal if calibrated, below it
    if over-confident and above it if conservative
    ([`expected_coverage`][diffgal.inference.expected_coverage]). The 1-D equal-tailed intervals of
    each parameter give [`central_interval_coverage`][diffgal.inference.central_interval_coverage].
- **TARP** (Lemos et al. 2023): the expected coverage of random reference balls, which needs samples
    only ([`run_tarp`][diffgal.inference.run_tarp], [`check_tarp`][diffgal.inference.check_tarp],
    [`plot_tarp`][diffgal.inference.plot_tarp]).

The shapes use `n_pair` (M held-out pairs), `n_draw` (L posterior draws per pair) and `n_param`
(D parameters). Shapes and option values are checked at trace time; NaN inputs raise a
`ValueError` on concrete arrays and an `eqx.error_if` runtime error under `jax.jit`. Fewer than 100
pairs give a `UserWarning`, since the tests then have little power. The plot helpers need
matplotlib (`pip install "diffgal[plot]"`), imported only when a plot is made.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

__all__ = [
    "CoverageResult",
    "SBCResult",
    "TARPCheck",
    "TARPResult",
    "c2st",
    "central_interval_coverage",
    "check_sbc",
    "check_tarp",
    "expected_coverage",
    "plot_corner",
    "plot_coverage",
    "plot_sbc_ranks",
    "plot_tarp",
    "run_tarp",
    "sbc_ranks",
]

#: Below this many held-out pairs the diagnostics warn that their tests have little power.
MIN_PAIRS = 100
_DEFAULT_LEVELS = (0.5, 0.68, 0.95)


# ---------------------------------------------------------------------------------------------
# Input checks: static facts raise at trace time, NaN raises eagerly or through eqx.error_if.
# ---------------------------------------------------------------------------------------------


def _check_finite(fn: str, name: str, x: Array) -> Array:
    """Reject NaN in `x` (±inf is allowed: a log-density may be -inf outside the support)."""
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        return x
    fix = "drop or re-simulate the failed pairs (and re-draw NaN samples) before the diagnostics"
    if isinstance(x, jax.core.Tracer):
        return eqx.error_if(x, jnp.any(jnp.isnan(x)), f"`{fn}`: `{name}` contains NaN; {fix}.")
    nan = np.isnan(np.asarray(x))
    if nan.any():
        first = tuple(int(i) for i in np.argwhere(nan)[0])
        raise ValueError(
            f"`{fn}`: `{name}` must not contain NaN; got {int(nan.sum())} NaN value(s), the first "
            f"at index {first}. Fix: {fix}."
        )
    return x


def _warn_few_pairs(fn: str, n_pair: int, stacklevel: int = 3) -> None:
    """Warn below `MIN_PAIRS` pairs; the default `stacklevel` suits a public function's call."""
    if n_pair < MIN_PAIRS:
        warnings.warn(
            f"`{fn}`: only {n_pair} held-out pairs; calibration tests have little power with so "
            f"few. Use >= {MIN_PAIRS} pairs (1000 is the recommended default).",
            UserWarning,
            stacklevel=stacklevel,
        )


def _fraction(mask: Array, axis: int, dtype) -> Array:
    """The mean of a boolean mask along `axis`, in `dtype` (`jnp.mean` of bools is float32).

    A true division of the count, so k/L is correctly rounded and equals a level written as the
    same fraction (0.3 == 3/10, where a product with 1/L may not be).
    """
    return jnp.sum(mask, axis=axis).astype(dtype) / mask.shape[axis]


def _check_samples_truths(fn: str, samples: ArrayLike, truths: ArrayLike) -> tuple[Array, Array]:
    samples = jnp.asarray(samples)
    truths = jnp.asarray(truths)
    if samples.ndim != 3:
        raise ValueError(
            f"`{fn}`: `samples` must have shape (n_pair, n_draw, n_param), L posterior draws for "
            f"each of the M held-out pairs; got shape {samples.shape}. For one parameter add a "
            "trailing axis: `samples[..., None]`."
        )
    if truths.ndim != 2:
        raise ValueError(
            f"`{fn}`: `truths` must have shape (n_pair, n_param), the true parameters of the M "
            f"held-out pairs; got shape {truths.shape}. For one parameter add a trailing axis: "
            "`truths[:, None]`."
        )
    if samples.shape[0] != truths.shape[0] or samples.shape[2] != truths.shape[1]:
        raise ValueError(
            f"`{fn}`: `samples` (n_pair, n_draw, n_param) and `truths` (n_pair, n_param) must "
            f"agree in n_pair and n_param; got samples {samples.shape} and truths "
            f"{truths.shape}. Pass one row of draws per held-out pair, with the parameters in the "
            "same order."
        )
    if samples.shape[1] < 2:
        raise ValueError(
            f"`{fn}`: `samples` needs at least 2 posterior draws per pair (axis 1, n_draw); got "
            f"shape {samples.shape}. Draw more samples per pair (1000 is the recommended default)."
        )
    _warn_few_pairs(fn, samples.shape[0], stacklevel=4)
    samples = _check_finite(fn, "samples", samples)
    truths = _check_finite(fn, "truths", truths)
    return samples, truths


def _check_levels(fn: str, levels: ArrayLike) -> Array:
    levels = jnp.asarray(levels, dtype=float)
    if levels.ndim != 1 or levels.shape[0] == 0:
        raise ValueError(
            f"`{fn}`: `levels` must be a non-empty 1-D sequence of credibility levels; got shape "
            f"{levels.shape}. Pass e.g. `levels=(0.5, 0.68, 0.95)`."
        )
    if not isinstance(levels, jax.core.Tracer):
        values = np.asarray(levels)
        if not np.all((values >= 0) & (values <= 1)):
            raise ValueError(
                f"`{fn}`: `levels` must lie in [0, 1]; got {values.tolist()}. Pass credibility "
                "levels as fractions, e.g. 0.68 rather than 68."
            )
    return levels


# ---------------------------------------------------------------------------------------------
# SBC
# ---------------------------------------------------------------------------------------------


def sbc_ranks(
    samples: Float[ArrayLike, "n_pair n_draw n_param"], truths: Float[ArrayLike, "n_pair n_param"]
) -> Int[Array, "n_pair n_param"]:
    """The simulation-based-calibration ranks r_jd = #{ℓ : θ^ℓ_jd < θ*_jd}.

    For a calibrated posterior each column is uniform on {0, …, L} (a necessary condition for
    calibration; Talts et al. 2018). Ties count as "not below", which is immaterial for draws from
    a continuous distribution. Works under `jax.jit` and `jax.vmap`.

    **Arguments:**

    - `samples`: (n_pair, n_draw, n_param) posterior draws θ^ℓ ~ q(θ | x*_j), L >= 2 per pair.
    - `truths`: (n_pair, n_param) the true parameters θ*_j that simulated x*_j.

    **Returns:**

    The integer ranks, shape (n_pair, n_param), each in 0 … n_draw.
    """
    samples, truths = _check_samples_truths("sbc_ranks", samples, truths)
    return _ranks(samples, truths)


@jax.jit
def _ranks(samples, truths):
    return jnp.sum(samples < truths[:, None, :], axis=1)


def _rank_bins(n_draws: int, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Bin index of each rank 0…L, and how many rank values fall in each bin."""
    bin_of_rank = (np.arange(n_draws + 1) * n_bins) // (n_draws + 1)
    return bin_of_rank, np.bincount(bin_of_rank, minlength=n_bins)


def _jittered_ks_pvalues(counts: np.ndarray, n_draws: int, uniforms: np.ndarray) -> np.ndarray:
    """KS p-values (per column) of (k + U) / (L + 1), exactly U(0, 1) when k ~ U{0, …, L}."""
    from scipy import stats

    u = (counts + uniforms) / (n_draws + 1)
    return np.atleast_1d(stats.kstest(u, "uniform", axis=0).pvalue).astype(float)


class SBCResult(NamedTuple):
    """The outcome of [`check_sbc`][diffgal.inference.check_sbc].

    **Fields:**

    - `ks_pvalues`: (n_param,) Kolmogorov-Smirnov p-values of the ranks against the discrete
        uniform on 0 … L.
    - `chi2_pvalues`: (n_param,) chi-square p-values of the rank histogram.
    - `histogram`: (n_bins, n_param) rank counts per bin.
    - `expected`: (n_bins,) the expected count per bin for uniform ranks.
    - `n_draws`: L, the number of posterior draws per pair.
    """

    ks_pvalues: np.ndarray
    chi2_pvalues: np.ndarray
    histogram: np.ndarray
    expected: np.ndarray
    n_draws: int

    def passed(self, threshold: float = 0.01) -> bool:
        """Whether every KS and chi-square p-value is at least `threshold`.

        There is no multiple-testing correction: with D parameters a calibrated posterior fails
        with probability up to about 2·D·`threshold`.

        **Arguments:**

        - `threshold`: the significance level.

        **Returns:**

        `True` if no test rejects uniform ranks.
        """
        return bool(np.all(self.ks_pvalues >= threshold) and np.all(self.chi2_pvalues >= threshold))


def check_sbc(
    ranks: Int[ArrayLike, "n_pair n_param"], n_draws: int, *, n_bins: int = 20, seed: int = 0
) -> SBCResult:
    """Test SBC ranks for uniformity, per parameter.

    The KS test is a randomised test that is exact for discrete ranks: each rank k becomes (k + U) /
    (L + 1) with U ~ U(0, 1) from a NumPy generator seeded by `seed`, which is exactly U(0, 1) when
    k is uniform on {0, …, L}, and is compared with `scipy.stats.kstest`. The chi-square test bins
    the ranks into `n_bins` bins of (L + 1) / `n_bins` rank values (the counts per bin differ by at
    most one when `n_bins` does not divide L + 1, and the expected counts follow) with `n_bins - 1`
    degrees of freedom. Runs on the host (SciPy); not jittable.

    **Arguments:**

    - `ranks`: (n_pair, n_param) integer ranks from [`sbc_ranks`][diffgal.inference.sbc_ranks].
    - `n_draws`: L, the number of posterior draws per pair the ranks were computed with.
    - `n_bins`: histogram bins for the chi-square test (at most L + 1 are used).
    - `seed`: seed of the jitter of the KS test.

    **Returns:**

    An [`SBCResult`][diffgal.inference.SBCResult] with `ks_pvalues`, `chi2_pvalues` and
    `passed(threshold=0.01)`.
    """
    from scipy import stats

    fn = "check_sbc"
    if isinstance(n_draws, bool) or not isinstance(n_draws, int | np.integer) or n_draws < 2:
        raise ValueError(
            f"`{fn}`: `n_draws` must be an integer >= 2, the L posterior draws per pair that the "
            f"ranks were computed with; got {n_draws!r}."
        )
    if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or n_bins < 2:
        raise ValueError(f"`{fn}`: `n_bins` must be an integer >= 2; got {n_bins!r}.")
    ranks = np.asarray(ranks)
    if ranks.ndim != 2:
        raise ValueError(
            f"`{fn}`: `ranks` must have shape (n_pair, n_param); got shape {ranks.shape}. For one "
            "parameter add a trailing axis: `ranks[:, None]`."
        )
    if np.issubdtype(ranks.dtype, np.floating):
        _check_finite(fn, "ranks", jnp.asarray(ranks))
    if not np.issubdtype(ranks.dtype, np.number) or np.any(ranks != np.round(ranks)):
        raise ValueError(
            f"`{fn}`: `ranks` must be integers (as returned by `sbc_ranks`); got dtype "
            f"{ranks.dtype} with non-integer values."
        )
    ranks = ranks.astype(np.int64)
    if ranks.min() < 0 or ranks.max() > n_draws:
        raise ValueError(
            f"`{fn}`: `ranks` must lie in 0 … n_draws = {n_draws}; got values in "
            f"{ranks.min()} … {ranks.max()}. Pass `n_draws = samples.shape[1]`, the L of the ranks."
        )
    n_pair, n_param = ranks.shape
    _warn_few_pairs(fn, n_pair)

    uniforms = np.random.default_rng(seed).uniform(size=ranks.shape)
    ks = _jittered_ks_pvalues(ranks, n_draws, uniforms)

    n_bins = min(int(n_bins), n_draws + 1)
    bin_of_rank, width = _rank_bins(n_draws, n_bins)
    bins = bin_of_rank[ranks]
    histogram = np.stack([np.bincount(bins[:, d], minlength=n_bins) for d in range(n_param)], 1)
    expected = n_pair * width / (n_draws + 1)
    statistic = np.sum((histogram - expected[:, None]) ** 2 / expected[:, None], axis=0)
    chi2 = stats.chi2.sf(statistic, n_bins - 1)
    return SBCResult(
        ks_pvalues=ks,
        chi2_pvalues=np.asarray(chi2, dtype=float),
        histogram=histogram,
        expected=expected,
        n_draws=int(n_draws),
    )


# ---------------------------------------------------------------------------------------------
# Expected coverage
# ---------------------------------------------------------------------------------------------


@jax.jit
def _coverage_of(credibility: Array, n_draws, levels: Array) -> Array:
    """(1/M) Σ_j 1[α_j ≤ c], compared as counts, L α_j ≤ L c, so that α_j = k/L equals a level
    written as the same fraction despite rounding (XLA divides by L as a product with 1/L)."""
    counts = jnp.round(credibility * n_draws)
    bounds = levels.astype(credibility.dtype) * n_draws + 1e-3
    return _fraction(counts[:, None] <= bounds[None, :], 0, credibility.dtype)


class CoverageResult(NamedTuple):
    """The outcome of [`expected_coverage`][diffgal.inference.expected_coverage]: a pytree, so it
    can leave `jax.jit`.

    **Fields:**

    - `levels`: (n_level,) the credibility levels c.
    - `coverage`: (n_level,) the fraction of pairs whose truth lies in the c-HPD region.
    - `credibility`: (n_pair,) α_j, the credibility of the smallest HPD region holding θ*_j;
        uniform on [0, 1] for a calibrated posterior.
    - `n_draws`: L, the number of posterior draws per pair (α_j is a multiple of 1/L).
    """

    levels: Array
    coverage: Array
    credibility: Array
    n_draws: int

    def curve(self, n_levels: int = 101) -> tuple[Array, Array]:
        """The full coverage curve on an even grid of levels in [0, 1], for plotting.

        **Arguments:**

        - `n_levels`: the number of grid points.

        **Returns:**

        `(levels, coverage)`, each of shape (n_levels,); plot with
        [`plot_coverage`][diffgal.inference.plot_coverage].
        """
        grid = jnp.asarray(np.linspace(0.0, 1.0, n_levels), self.credibility.dtype)
        return grid, _coverage_of(self.credibility, self.n_draws, grid)


def expected_coverage(
    log_prob_samples: Float[ArrayLike, "n_pair n_draw"],
    log_prob_truth: Float[ArrayLike, " n_pair"],
    levels: Sequence[float] | Float[ArrayLike, " n_level"] = _DEFAULT_LEVELS,
) -> CoverageResult:
    """Expected coverage of the highest-posterior-density (HPD) regions.

    α_j = (1/L) Σ_ℓ 1[log q(θ^ℓ | x*_j) > log q(θ*_j | x*_j)] is the credibility of the smallest
    HPD region that contains the truth, and coverage(c) = (1/M) Σ_j 1[α_j ≤ c]. A calibrated
    posterior lies on the diagonal, an over-confident one below it and a conservative one above.
    Any normalisation constant of log q cancels. -inf log-densities are allowed; NaN is not.
    Works under `jax.jit`.

    **Arguments:**

    - `log_prob_samples`: (n_pair, n_draw) log q(θ^ℓ | x*_j) of the L draws of each pair.
    - `log_prob_truth`: (n_pair,) log q(θ*_j | x*_j) of the true parameters.
    - `levels`: credibility levels c in [0, 1].

    **Returns:**

    A [`CoverageResult`][diffgal.inference.CoverageResult] with `levels`, `coverage` (per level),
    `credibility` (α_j) and `curve()`, the whole curve.
    """
    fn = "expected_coverage"
    log_prob_samples = jnp.asarray(log_prob_samples)
    log_prob_truth = jnp.asarray(log_prob_truth)
    if log_prob_samples.ndim != 2:
        raise ValueError(
            f"`{fn}`: `log_prob_samples` must have shape (n_pair, n_draw), the posterior "
            f"log-density of the L draws of each pair; got shape {log_prob_samples.shape}. "
            "Evaluate `posterior.log_prob` at every draw."
        )
    if log_prob_truth.ndim != 1:
        raise ValueError(
            f"`{fn}`: `log_prob_truth` must have shape (n_pair,), the posterior log-density at "
            f"each true parameter; got shape {log_prob_truth.shape}."
        )
    if log_prob_samples.shape[0] != log_prob_truth.shape[0]:
        raise ValueError(
            f"`{fn}`: `log_prob_samples` (n_pair, n_draw) and `log_prob_truth` (n_pair,) must "
            f"share n_pair; got {log_prob_samples.shape} and {log_prob_truth.shape}. Pass one "
            "row per held-out pair."
        )
    if log_prob_samples.shape[1] < 2:
        raise ValueError(
            f"`{fn}`: `log_prob_samples` needs at least 2 draws per pair (axis 1, n_draw); got "
            f"shape {log_prob_samples.shape}. Draw more samples per pair."
        )
    levels = _check_levels(fn, levels)
    _warn_few_pairs(fn, log_prob_samples.shape[0])
    log_prob_samples = _check_finite(fn, "log_prob_samples", log_prob_samples)
    log_prob_truth = _check_finite(fn, "log_prob_truth", log_prob_truth)
    credibility, coverage = _hpd_coverage(log_prob_samples, log_prob_truth, levels)
    return CoverageResult(levels, coverage, credibility, log_prob_samples.shape[1])


@jax.jit
def _hpd_coverage(log_prob_samples, log_prob_truth, levels):
    dtype = jnp.result_type(log_prob_samples.dtype, log_prob_truth.dtype, float)
    credibility = _fraction(log_prob_samples > log_prob_truth[:, None], 1, dtype)
    return credibility, _coverage_of(credibility, log_prob_samples.shape[1], levels)


def central_interval_coverage(
    samples: Float[ArrayLike, "n_pair n_draw n_param"],
    truths: Float[ArrayLike, "n_pair n_param"],
    levels: Sequence[float] | Float[ArrayLike, " n_level"] = _DEFAULT_LEVELS,
) -> Float[Array, "n_level n_param"]:
    """Coverage of the 1-D equal-tailed (central) credible intervals, per parameter.

    The c-interval of parameter d for pair j runs from the (1 − c)/2 to the (1 + c)/2 quantile of
    its L draws (linear interpolation); the coverage is the fraction of pairs whose θ*_jd lies in
    it. Works under `jax.jit`.

    **Arguments:**

    - `samples`: (n_pair, n_draw, n_param) posterior draws, L >= 2 per pair.
    - `truths`: (n_pair, n_param) the true parameters.
    - `levels`: credibility levels c in [0, 1].

    **Returns:**

    The coverage, shape (n_level, n_param).
    """
    fn = "central_interval_coverage"
    samples, truths = _check_samples_truths(fn, samples, truths)
    levels = _check_levels(fn, levels)
    return _central_coverage(samples, truths, levels)


@jax.jit
def _central_coverage(samples, truths, levels):
    low = jnp.quantile(samples, (1 - levels) / 2, axis=1)
    high = jnp.quantile(samples, (1 + levels) / 2, axis=1)
    inside = (truths[None] >= low) & (truths[None] <= high)
    return _fraction(inside, 1, jnp.result_type(samples.dtype, truths.dtype, float))


# ---------------------------------------------------------------------------------------------
# TARP
# ---------------------------------------------------------------------------------------------


class TARPResult(NamedTuple):
    """The outcome of [`run_tarp`][diffgal.inference.run_tarp].

    **Fields:**

    - `alphas`: (n_alpha,) the credibility grid α, evenly spaced in [0, 1].
    - `ecp`: (n_alpha,) the expected coverage probability ECP(α) = (1/M) Σ_j 1[f_j < α].
    - `ecp_low`, `ecp_high`: (n_alpha,) the bootstrap band of the ECP (percentiles over
        resampled pairs).
    - `atc`: the area to the curve Σ_{α > 0.5} (ECP(α) − α) Δα: > 0 over-dispersed
        (conservative), < 0 under-dispersed (over-confident).
    - `atc_low`, `atc_high`: the bootstrap interval of the ATC, at the same level as the band.
    - `ks_pvalue`: KS p-value of the f_j against uniform (exact for the discrete f_j, as in
        [`check_sbc`][diffgal.inference.check_sbc]).
    - `credibility`: (n_pair,) f_j, the fraction of draws closer to the reference than the truth.
    """

    alphas: Array
    ecp: Array
    ecp_low: Array
    ecp_high: Array
    atc: float
    atc_low: float
    atc_high: float
    ks_pvalue: float
    credibility: Array


@functools.partial(jax.jit, static_argnames=("n_bootstrap", "n_alphas", "band_level"))
def _tarp_core(
    key, samples, truths, references, prior_bounds, *, n_bootstrap, n_alphas, band_level
):
    n_pair, n_draw, n_param = samples.shape
    dtype = jnp.result_type(samples.dtype, truths.dtype, float)
    samples, truths = samples.astype(dtype), truths.astype(dtype)
    key_references, key_boot, key_jitter = jax.random.split(key, 3)
    if prior_bounds is None:
        shift, scale = jnp.mean(truths, axis=0), jnp.std(truths, axis=0)
    else:
        low, high = (bound.astype(dtype) for bound in prior_bounds)
        shift, scale = (low + high) / 2, (high - low) / math.sqrt(12.0)
    samples_z = (samples - shift) / scale
    truths_z = (truths - shift) / scale
    if references is None:
        if prior_bounds is None:
            box_low, box_high = jnp.min(truths_z, axis=0), jnp.max(truths_z, axis=0)
        else:
            box_low, box_high = (low - shift) / scale, (high - shift) / scale
        references_z = jax.random.uniform(
            key_references, (n_pair, n_param), dtype, minval=box_low, maxval=box_high
        )
    else:
        references_z = (references.astype(dtype) - shift) / scale
    d_samples = jnp.linalg.norm(samples_z - references_z[:, None, :], axis=-1)
    d_truth = jnp.linalg.norm(truths_z - references_z, axis=-1)
    closer = jnp.sum(d_samples < d_truth[:, None], axis=1)
    f = (closer / n_draw).astype(samples_z.dtype)
    grid = jnp.arange(n_alphas)
    alphas = grid.astype(f.dtype) / (n_alphas - 1)
    upper_half = 2 * grid > n_alphas - 1  # alpha > 0.5
    d_alpha = 1.0 / (n_alphas - 1)
    # f_j < alpha_i  <=>  closer_j (n_alphas - 1) < i L, compared exactly in integers
    steps = grid * n_draw

    def ecp_atc(closer):
        ecp = _fraction(closer[:, None] * (n_alphas - 1) < steps[None, :], 0, f.dtype)
        return ecp, jnp.sum(jnp.where(upper_half, ecp - alphas, 0.0)) * d_alpha

    ecp, atc = ecp_atc(closer)
    index = jax.random.randint(key_boot, (n_bootstrap, n_pair), 0, n_pair)
    ecp_boot, atc_boot = jax.vmap(ecp_atc)(closer[index])
    q = 100 * jnp.array([(1 - band_level) / 2, (1 + band_level) / 2])
    ecp_band = jnp.percentile(ecp_boot, q, axis=0)
    atc_band = jnp.percentile(atc_boot, q)
    uniforms = jax.random.uniform(key_jitter, (n_pair,), dtype=f.dtype)
    return alphas, ecp, ecp_band, atc, atc_band, closer, f, uniforms


def run_tarp(
    key: PRNGKeyArray,
    samples: Float[ArrayLike, "n_pair n_draw n_param"],
    truths: Float[ArrayLike, "n_pair n_param"],
    *,
    references: Float[ArrayLike, "n_pair n_param"] | None = None,
    prior_bounds: tuple[Float[ArrayLike, " n_param"], Float[ArrayLike, " n_param"]] | None = None,
    n_bootstrap: int = 100,
    n_alphas: int = 101,
    band_level: float = 0.95,
) -> TARPResult:
    """Tests of Accuracy with Random Points (TARP; Lemos et al. 2023), from samples alone.

    The parameters are z-scored, by the mean and standard deviation of `truths`, or, given
    `prior_bounds`, by the mean and standard deviation of a uniform prior on that box. One reference
    point θ_r,j per pair is drawn uniformly in the z-scored box (the range of the z-scored truths,
    or the z-scored `prior_bounds`) unless `references` are given. Then

    - f_j = (1/L) Σ_ℓ 1[‖θ^ℓ − θ_r,j‖ < ‖θ*_j − θ_r,j‖] (L2 norm on z-scored θ),
    - ECP(α) = (1/M) Σ_j 1[f_j < α] on `n_alphas` even steps of α in [0, 1],
    - ATC = Σ_{α > 0.5} (ECP(α) − α) Δα.

    The f_j are uniform for a calibrated posterior, up to the discreteness of
    f_j ∈ {0, 1/L, …, 1}, which biases the ECP by at most 1/(L + 1); the KS p-value removes it by
    the same jitter as [`check_sbc`][diffgal.inference.check_sbc]. The band resamples the M pairs
    `n_bootstrap` times. The ECP compares L f_j with L α in integers, so ties are exact.
    The arrays are computed in one jitted kernel; the KS test runs on the host.

    **Arguments:**

    - `key`: a PRNG key (`jax.random.key(seed)`), split into the references, the bootstrap and
        the KS jitter.
    - `samples`: (n_pair, n_draw, n_param) posterior draws, L >= 2 per pair.
    - `truths`: (n_pair, n_param) the true parameters.
    - `references`: (n_pair, n_param) reference points in the units of `truths`, one per pair;
        `None` draws them.
    - `prior_bounds`: `(low, high)`, each (n_param,), the box of a uniform prior, used for the
        z-scoring and the reference box; `None` uses `truths`.
    - `n_bootstrap`: the number of bootstrap resamplings of the pairs.
    - `n_alphas`: the number of α grid points (>= 3).
    - `band_level`: the central probability of the bootstrap band, e.g. 0.95.

    **Returns:**

    A [`TARPResult`][diffgal.inference.TARPResult] with `alphas`, `ecp`, the band
    `ecp_low`/`ecp_high`, `atc` with its bootstrap interval `atc_low`/`atc_high`, `ks_pvalue` and
    the `credibility` f_j.
    """
    fn = "run_tarp"
    samples, truths = _check_samples_truths(fn, samples, truths)
    n_pair, n_draw, n_param = samples.shape
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, int) or n_bootstrap < 1:
        raise ValueError(f"`{fn}`: `n_bootstrap` must be an integer >= 1; got {n_bootstrap!r}.")
    if isinstance(n_alphas, bool) or not isinstance(n_alphas, int) or n_alphas < 3:
        raise ValueError(f"`{fn}`: `n_alphas` must be an integer >= 3; got {n_alphas!r}.")
    if not 0 < band_level < 1:
        raise ValueError(f"`{fn}`: `band_level` must lie in (0, 1), e.g. 0.95; got {band_level!r}.")
    if prior_bounds is None:
        spread = np.std(np.asarray(truths), axis=0)
        if np.any(spread <= 0):
            raise ValueError(
                f"`{fn}`: every parameter of `truths` must vary to be z-scored; got standard "
                f"deviations {spread.tolist()}. Pass `prior_bounds=(low, high)`."
            )
    else:
        try:
            low, high = (np.broadcast_to(np.asarray(b, float), (n_param,)) for b in prior_bounds)
        except ValueError:
            raise ValueError(
                f"`{fn}`: `prior_bounds` must be a pair `(low, high)` of scalars or (n_param,) = "
                f"({n_param},) arrays; got {prior_bounds!r}."
            ) from None
        if not np.all(high > low):
            raise ValueError(
                f"`{fn}`: `prior_bounds` must have high > low in every parameter; got low "
                f"{low.tolist()} and high {high.tolist()}."
            )
        prior_bounds = (jnp.asarray(low), jnp.asarray(high))
    if references is not None:
        references = jnp.asarray(references)
        if references.shape != (n_pair, n_param):
            raise ValueError(
                f"`{fn}`: `references` must have shape (n_pair, n_param) = {(n_pair, n_param)}, "
                f"one point per held-out pair in the units of `truths`; got shape "
                f"{references.shape}. Pass `references=None` to draw them."
            )
        references = _check_finite(fn, "references", references)

    alphas, ecp, ecp_band, atc, atc_band, closer, f, uniforms = _tarp_core(
        key,
        samples,
        truths,
        references,
        prior_bounds,
        n_bootstrap=n_bootstrap,
        n_alphas=n_alphas,
        band_level=float(band_level),
    )
    ks = _jittered_ks_pvalues(np.asarray(closer), n_draw, np.asarray(uniforms))[0]
    return TARPResult(
        alphas=alphas,
        ecp=ecp,
        ecp_low=ecp_band[0],
        ecp_high=ecp_band[1],
        atc=float(atc),
        atc_low=float(atc_band[0]),
        atc_high=float(atc_band[1]),
        ks_pvalue=float(ks),
        credibility=f,
    )


class TARPCheck(NamedTuple):
    """The summary from [`check_tarp`][diffgal.inference.check_tarp].

    **Fields:**

    - `passed`: whether the KS test does not reject calibration at the threshold.
    - `atc`: the area to the curve.
    - `ks_pvalue`: the KS p-value of the f_j against uniform.
    - `diagnosis`: one of `"calibrated"`, `"over-confident"`, `"over-dispersed"` or
        `"miscalibrated"` (rejected, but with an ATC consistent with zero: biased or misshapen).
    """

    passed: bool
    atc: float
    ks_pvalue: float
    diagnosis: str


def check_tarp(result: TARPResult, *, threshold: float = 0.01) -> TARPCheck:
    """Summarise a TARP run: pass/fail from the KS test, and the sign of a significant ATC.

    The posterior passes if the KS p-value is at least `threshold`. A failing one is called
    over-confident if the whole bootstrap interval of the ATC is below 0, over-dispersed if it is
    above 0, and miscalibrated otherwise.

    **Arguments:**

    - `result`: a [`TARPResult`][diffgal.inference.TARPResult] from
        [`run_tarp`][diffgal.inference.run_tarp].
    - `threshold`: the significance level of the KS test.

    **Returns:**

    A [`TARPCheck`][diffgal.inference.TARPCheck] with `passed`, `atc`, `ks_pvalue` and `diagnosis`.
    """
    passed = result.ks_pvalue >= threshold
    if passed:
        diagnosis = "calibrated"
    elif result.atc_high < 0:
        diagnosis = "over-confident"
    elif result.atc_low > 0:
        diagnosis = "over-dispersed"
    else:
        diagnosis = "miscalibrated"
    return TARPCheck(bool(passed), float(result.atc), float(result.ks_pvalue), diagnosis)


# ---------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "`diffgal.inference` plotting needs matplotlib, which is not installed. Install it "
            'with `pip install "diffgal[plot]"`.'
        ) from error
    return plt


def _new_axes(ax):
    if ax is not None:
        return ax.figure, ax
    return _pyplot().subplots(figsize=(4.0, 4.0))


def plot_sbc_ranks(
    ranks: Int[ArrayLike, "n_pair n_param"],
    n_draws: int,
    names: Sequence[str] | None = None,
    *,
    n_bins: int = 20,
):
    """Rank histograms, one panel per parameter, with the 99 % binomial band of uniform ranks.

    **Arguments:**

    - `ranks`: (n_pair, n_param) ranks from [`sbc_ranks`][diffgal.inference.sbc_ranks].
    - `n_draws`: L, the number of posterior draws per pair.
    - `names`: one label per parameter; `None` numbers them.
    - `n_bins`: the number of histogram bins (at most L + 1 are used).

    **Returns:**

    The matplotlib `Figure`.
    """
    from scipy import stats

    result = check_sbc(ranks, n_draws, n_bins=n_bins)
    n_param = result.histogram.shape[1]
    if names is not None and len(names) != n_param:
        raise ValueError(
            f"`plot_sbc_ranks`: `names` must have one label per parameter ({n_param}); got "
            f"{len(names)}."
        )
    names = [f"θ{d}" for d in range(n_param)] if names is None else list(names)
    n_bins = result.histogram.shape[0]
    n_pair = int(result.histogram[:, 0].sum())
    width = result.expected * (n_draws + 1) / n_pair
    edges = np.concatenate([[0.0], np.cumsum(width)])
    probability = width / (n_draws + 1)
    band_low = stats.binom.ppf(0.005, n_pair, probability)
    band_high = stats.binom.ppf(0.995, n_pair, probability)

    plt = _pyplot()
    fig, axes = plt.subplots(1, n_param, figsize=(3.2 * n_param, 2.8), squeeze=False)
    for d, ax in enumerate(axes[0]):
        ax.fill_between(
            edges,
            np.append(band_low, band_low[-1]),
            np.append(band_high, band_high[-1]),
            step="post",
            color="0.85",
            label="99 % band",
        )
        ax.stairs(result.expected, edges, color="0.4", linestyle="--")
        ax.stairs(result.histogram[:, d], edges, color="C0", linewidth=1.5)
        ax.set_xlim(0, n_draws + 1)
        ax.set_xlabel("rank")
        ax.set_title(f"{names[d]}  (KS p = {result.ks_pvalues[d]:.2g})", fontsize="medium")
    axes[0, 0].set_ylabel(f"count ({n_bins} bins)")
    axes[0, 0].legend(loc="lower center", fontsize="small")
    fig.tight_layout()
    return fig


def plot_coverage(
    levels: Float[ArrayLike, " n_level"],
    coverage: Float[ArrayLike, " n_level"] | Float[ArrayLike, "n_level n_curve"],
    *,
    names: Sequence[str] | None = None,
    ax=None,
):
    """Empirical coverage against the credibility level, with the diagonal of calibration.

    Pass `expected_coverage(...).curve()` for the HPD curve, or the levels and the (n_level,
    n_param) output of [`central_interval_coverage`][diffgal.inference.central_interval_coverage]
    for one curve per parameter.

    **Arguments:**

    - `levels`: (n_level,) credibility levels.
    - `coverage`: (n_level,) or (n_level, n_curve) coverage at those levels.
    - `names`: one legend label per curve; `None` gives none for one curve and numbers otherwise.
    - `ax`: a matplotlib `Axes` to draw into; `None` makes a new figure.

    **Returns:**

    The matplotlib `Figure`.
    """
    levels = np.asarray(levels, dtype=float)
    coverage = np.asarray(coverage, dtype=float)
    curves = coverage[:, None] if coverage.ndim == 1 else coverage
    if levels.ndim != 1 or curves.ndim != 2 or curves.shape[0] != levels.shape[0]:
        raise ValueError(
            f"`plot_coverage`: `coverage` must have shape (n_level,) or (n_level, n_curve) with "
            f"n_level = len(levels); got levels {levels.shape} and coverage {coverage.shape}."
        )
    fig, ax = _new_axes(ax)
    ax.plot([0, 1], [0, 1], color="0.5", linestyle="--", linewidth=1)
    marker = "o" if levels.shape[0] <= 20 else None
    for k in range(curves.shape[1]):
        label = None if names is None else names[k]
        if names is None and curves.shape[1] > 1:
            label = f"θ{k}"
        ax.plot(levels, curves[:, k], marker=marker, label=label)
    ax.text(0.04, 0.94, "conservative", transform=ax.transAxes, va="top", color="0.4")
    ax.text(0.96, 0.06, "over-confident", transform=ax.transAxes, ha="right", color="0.4")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("credibility level")
    ax.set_ylabel("empirical coverage")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="center right", fontsize="small")
    return fig


def plot_tarp(result: TARPResult, *, ax=None):
    """The TARP expected-coverage curve with its bootstrap band and the diagonal.

    **Arguments:**

    - `result`: a [`TARPResult`][diffgal.inference.TARPResult] from
        [`run_tarp`][diffgal.inference.run_tarp].
    - `ax`: a matplotlib `Axes` to draw into; `None` makes a new figure.

    **Returns:**

    The matplotlib `Figure`.
    """
    fig, ax = _new_axes(ax)
    alphas = np.asarray(result.alphas)
    ax.fill_between(
        alphas, np.asarray(result.ecp_low), np.asarray(result.ecp_high), color="C0", alpha=0.25
    )
    ax.plot(alphas, np.asarray(result.ecp), color="C0", label="ECP")
    ax.plot([0, 1], [0, 1], color="0.5", linestyle="--", linewidth=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("credibility level α")
    ax.set_ylabel("expected coverage probability")
    ax.set_title(f"TARP: ATC = {result.atc:+.3f}, KS p = {result.ks_pvalue:.2g}", fontsize="medium")
    return fig


def plot_corner(
    samples: Float[ArrayLike, "n_sample n_param"],
    *,
    names: Sequence[str] | None = None,
    truth: Float[ArrayLike, " n_param"] | None = None,
    bins: int = 30,
):
    """A corner (pair) plot: 1-D histograms on the diagonal, 2-D histograms below it.

    **Arguments:**

    - `samples`: `(n_sample, n_param)` posterior draws.
    - `names`: axis labels, one per parameter.
    - `truth`: a reference point drawn as lines (e.g. the true parameters of a simulation).
    - `bins`: histogram bins per axis.

    **Returns:**

    The matplotlib `Figure`.
    """
    import matplotlib.pyplot as plt

    samples = np.asarray(samples, dtype=float)
    if samples.ndim != 2 or samples.shape[0] < 2:
        raise ValueError(
            "`plot_corner`: `samples` must have shape (n_sample >= 2, n_param); got "
            f"{samples.shape}."
        )
    d = samples.shape[1]
    if names is not None and len(names) != d:
        raise ValueError(f"`plot_corner`: `names` needs {d} labels; got {len(names)}.")
    if truth is not None:
        truth = np.asarray(truth, dtype=float)
        if truth.shape != (d,):
            raise ValueError(f"`plot_corner`: `truth` must have shape ({d},); got {truth.shape}.")
    if not np.all(np.isfinite(samples)):
        raise ValueError("`plot_corner`: `samples` holds NaN or inf.")
    fig, axes = plt.subplots(d, d, figsize=(1.7 * d + 0.6, 1.7 * d + 0.6), squeeze=False)
    lo, hi = np.percentile(samples, 0.5, 0), np.percentile(samples, 99.5, 0)
    for i in range(d):
        for j in range(d):
            ax = axes[i, j]
            if j > i:
                ax.axis("off")
                continue
            if i == j:
                ax.hist(
                    samples[:, i],
                    bins=bins,
                    range=(lo[i], hi[i]),
                    color="C0",
                    histtype="stepfilled",
                    alpha=0.7,
                )
                ax.set_yticks([])
                if truth is not None:
                    ax.axvline(truth[i], color="C3", lw=1)
            else:
                ax.hist2d(
                    samples[:, j],
                    samples[:, i],
                    bins=bins,
                    range=[[lo[j], hi[j]], [lo[i], hi[i]]],
                    cmap="Blues",
                )
                if truth is not None:
                    ax.axvline(truth[j], color="C3", lw=0.8)
                    ax.axhline(truth[i], color="C3", lw=0.8)
                    ax.plot(truth[j], truth[i], "s", color="C3", ms=3)
            if i < d - 1:
                ax.set_xticklabels([])
            elif names is not None:
                ax.set_xlabel(names[j], fontsize=8)
            if j > 0 and i != j:
                ax.set_yticklabels([])
            elif names is not None and i != j:
                ax.set_ylabel(names[i], fontsize=8)
            ax.tick_params(labelsize=6)
    fig.tight_layout()
    return fig


def c2st(
    key: PRNGKeyArray,
    x: Float[ArrayLike, "n d"],
    y: Float[ArrayLike, "m d"],
    *,
    n_folds: int = 5,
    width: int | None = None,
    steps: int = 1000,
    learning_rate: float = 3e-3,
) -> float:
    """Classifier two-sample test: held-out accuracy of an MLP telling `x` from `y`.

    0.5 means the two sample sets are indistinguishable to the classifier; the Bayes-optimal
    accuracy for two Gaussians with a Mahalanobis distance Δ between their means (same
    covariance) is Φ(Δ / 2). Both sets are z-scored with the pooled mean and scale and the
    smaller set is subsampled to balance the classes. Each of `n_folds` folds trains an MLP
    (two hidden layers of `width`, default 10 d, GELU) full-batch with Adam for `steps` steps
    on the other folds; the folds run in parallel with `vmap`.

    **Arguments:**

    - `key`: a `jax.random.key`.
    - `x`, `y`: the two sample sets, `(n, d)` and `(m, d)` (for example NPE and NUTS draws of
      the same posterior).
    - `n_folds`, `width`, `steps`, `learning_rate`: the cross-validation and the classifier.

    **Returns:** the mean held-out accuracy.
    """
    import optax

    x = np.asarray(x, float)
    y = np.asarray(y, float)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(
            "`c2st`: `x` and `y` must be (n, d) and (m, d) with the same d; got "
            f"{x.shape} and {y.shape}."
        )
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("`c2st`: `x` or `y` holds NaN or inf; drop those samples.")
    if n_folds < 2:
        raise ValueError(f"`c2st`: `n_folds` must be >= 2; got {n_folds}.")
    n = min(len(x), len(y))
    if n < 5 * n_folds:
        raise ValueError(
            f"`c2st`: need at least {5 * n_folds} samples in each set for {n_folds} folds; "
            f"got {len(x)} and {len(y)}."
        )
    k_x, k_y, k_perm, k_init = jax.random.split(key, 4)
    x = x[np.asarray(jax.random.permutation(k_x, len(x)))[:n]]
    y = y[np.asarray(jax.random.permutation(k_y, len(y)))[:n]]
    data = np.concatenate([x, y])
    data = (data - data.mean(0)) / np.maximum(data.std(0), 1e-12)
    labels = np.concatenate([np.zeros(n), np.ones(n)])
    order = np.asarray(jax.random.permutation(k_perm, 2 * n))
    data, labels = jnp.asarray(data[order]), jnp.asarray(labels[order])
    d = data.shape[1]
    width = 10 * d if width is None else int(width)
    fold = jnp.arange(2 * n) % n_folds
    optimiser = optax.adam(learning_rate)

    def run_fold(k, f):
        model = eqx.nn.MLP(d, 1, width, 2, activation=jax.nn.gelu, key=k, dtype=data.dtype)
        train = (fold != f).astype(data.dtype)

        def loss(m):
            logits = jax.vmap(m)(data)[:, 0]
            per = optax.sigmoid_binary_cross_entropy(logits, labels)
            return jnp.sum(per * train) / jnp.sum(train)

        params, static = eqx.partition(model, eqx.is_inexact_array)
        state = optimiser.init(params)

        def step(carry, _):
            p, s = carry
            g = jax.grad(lambda q: loss(eqx.combine(q, static)))(p)
            u, s = optimiser.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        (params, _), _ = jax.lax.scan(step, (params, state), None, length=steps)
        logits = jax.vmap(eqx.combine(params, static))(data)[:, 0]
        correct = ((logits > 0) == (labels > 0.5)).astype(data.dtype)
        test = 1 - train
        return jnp.sum(correct * test) / jnp.sum(test)

    accuracies = eqx.filter_jit(jax.vmap(run_fold))(
        jax.random.split(k_init, n_folds), jnp.arange(n_folds)
    )
    return float(jnp.mean(accuracies))
