"""SBC, expected coverage and TARP on a conjugate Gaussian model with an exact posterior.

θ ~ N(0, 1) per parameter (D = 2), x = θ + N(0, s²) with s = 0.5, so the posterior is
N(x / (1 + s²), s² / (1 + s²)). The exact posterior must pass every test; shrinking its standard
deviation by 0.5 (over-confident), doubling it (over-dispersed) or shifting its mean by one
standard deviation (biased) must fail them in the expected direction.
"""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest
from scipy import stats

from diffgal.inference._diagnostics import (
    CoverageResult,
    SBCResult,
    TARPResult,
    central_interval_coverage,
    check_sbc,
    check_tarp,
    expected_coverage,
    plot_coverage,
    plot_sbc_ranks,
    plot_tarp,
    run_tarp,
    sbc_ranks,
)

matplotlib.use("Agg")

NOISE = 0.5
N_PAIR, N_DRAW, N_PARAM = 400, 200, 2
LEVELS = (0.5, 0.68, 0.95)
VARIANTS = {
    "exact": {},
    "over_confident": {"scale": 0.5},
    "over_dispersed": {"scale": 2.0},
    "biased": {"shift": 1.0},
}


@functools.cache
def gaussian_problem(variant: str, seed: int = 0):
    """Truths, posterior draws and their log-densities under the (possibly wrong) posterior."""
    scale = VARIANTS[variant].get("scale", 1.0)
    shift = VARIANTS[variant].get("shift", 0.0)
    rng = np.random.default_rng(seed)
    truths = rng.standard_normal((N_PAIR, N_PARAM))
    x = truths + NOISE * rng.standard_normal((N_PAIR, N_PARAM))
    post_sd = np.sqrt(NOISE**2 / (1 + NOISE**2))
    q_mean = x / (1 + NOISE**2) + shift * post_sd
    q_sd = scale * post_sd
    samples = q_mean[:, None, :] + q_sd * rng.standard_normal((N_PAIR, N_DRAW, N_PARAM))
    log_prob_samples = stats.norm.logpdf(samples, q_mean[:, None, :], q_sd).sum(-1)
    log_prob_truth = stats.norm.logpdf(truths, q_mean, q_sd).sum(-1)
    return truths, samples, log_prob_samples, log_prob_truth


@functools.cache
def diagnostics(variant: str):
    truths, samples, log_prob_samples, log_prob_truth = gaussian_problem(variant)
    ranks = sbc_ranks(samples, truths)
    return {
        "ranks": ranks,
        "sbc": check_sbc(ranks, N_DRAW),
        "hpd": expected_coverage(log_prob_samples, log_prob_truth, LEVELS),
        "central": np.asarray(central_interval_coverage(samples, truths, LEVELS)),
        "tarp": run_tarp(jax.random.key(0), samples, truths),
    }


# --- the kernels against direct computations ----------------------------------------------------


def test_sbc_ranks_count_draws_below_truth():
    truths, samples, _, _ = gaussian_problem("exact")
    ranks = np.asarray(sbc_ranks(samples, truths))
    brute = np.array(
        [[np.sum(samples[j, :, d] < truths[j, d]) for d in range(N_PARAM)] for j in range(N_PAIR)]
    )
    assert ranks.shape == (N_PAIR, N_PARAM)
    assert np.issubdtype(ranks.dtype, np.integer)
    np.testing.assert_array_equal(ranks, brute)
    # all draws above / below the truth give the extreme ranks
    extreme = sbc_ranks(np.zeros((N_PAIR, 3, 1)), np.r_[-np.ones(200), np.ones(200)][:, None])
    np.testing.assert_array_equal(np.asarray(extreme)[:, 0], np.r_[np.zeros(200), np.full(200, 3)])


def test_sbc_ranks_jit_vmap_and_float32():
    truths, samples, _, _ = gaussian_problem("exact")
    eager = sbc_ranks(samples, truths)
    np.testing.assert_array_equal(jax.jit(sbc_ranks)(samples, truths), eager)
    batched = jax.vmap(sbc_ranks)(jnp.stack([samples, samples[::-1]]), jnp.stack([truths] * 2))
    np.testing.assert_array_equal(batched[0], eager)
    np.testing.assert_array_equal(batched[1], sbc_ranks(samples[::-1], truths))
    f32 = sbc_ranks(samples.astype(np.float32), truths.astype(np.float32))
    np.testing.assert_array_equal(f32, eager)


def test_check_sbc_on_exactly_uniform_ranks():
    # L + 1 = 50 rank values in 20 bins of 2 or 3 values: the expected counts must follow the widths
    n_draws = 49
    column = np.tile(np.arange(n_draws + 1), 4)
    ranks = np.stack([column, np.random.default_rng(1).permutation(column)], axis=1)
    result = check_sbc(ranks, n_draws)
    assert isinstance(result, SBCResult)
    assert result.histogram.shape == (20, 2)
    np.testing.assert_array_equal(np.unique(result.expected), [8.0, 12.0])
    np.testing.assert_allclose(result.chi2_pvalues, 1.0)
    assert np.all(result.ks_pvalues > 0.5)
    assert result.passed()


def test_check_sbc_rejects_a_histogram_with_a_spike():
    ranks = np.tile(np.arange(N_DRAW + 1), 2)[:, None]
    ranks[:40] = N_DRAW // 2  # 40 of 402 pairs moved to the middle rank
    result = check_sbc(ranks, N_DRAW)
    assert result.chi2_pvalues[0] < 1e-6
    assert not result.passed()


def test_check_sbc_jitter_is_seeded():
    ranks = diagnostics("exact")["ranks"]
    first = check_sbc(ranks, N_DRAW, seed=3).ks_pvalues
    np.testing.assert_array_equal(check_sbc(ranks, N_DRAW, seed=3).ks_pvalues, first)
    assert not np.array_equal(check_sbc(ranks, N_DRAW, seed=4).ks_pvalues, first)


def test_expected_coverage_by_hand():
    # draws with log q = 0, 1, ..., 9; the truth's log q = (j mod 10) - 0.5 gives
    # alpha_j = (10 - j mod 10) / 10, i.e. alpha uniform on {0.1, ..., 1.0}
    log_prob_samples = np.tile(np.arange(10.0), (100, 1))
    log_prob_truth = np.arange(100) % 10 - 0.5
    result = expected_coverage(log_prob_samples, log_prob_truth, levels=(0.05, 0.3, 0.55, 1.0))
    assert isinstance(result, CoverageResult)
    np.testing.assert_allclose(result.credibility, (10 - np.arange(100) % 10) / 10)
    np.testing.assert_allclose(result.coverage, [0.0, 0.3, 0.5, 1.0])
    levels, curve = result.curve(11)
    np.testing.assert_allclose(levels, np.linspace(0, 1, 11))
    np.testing.assert_allclose(curve, [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    # -inf (outside the support) is a valid log-density: such draws never beat the truth
    log_prob_samples[:, 0] = -np.inf
    assert float(expected_coverage(log_prob_samples, log_prob_truth).credibility[-1]) == 0.1


def test_expected_coverage_jits():
    _, _, log_prob_samples, log_prob_truth = gaussian_problem("exact")
    jitted = jax.jit(expected_coverage)(log_prob_samples, log_prob_truth)
    np.testing.assert_array_equal(jitted.coverage, diagnostics("exact")["hpd"].coverage)
    assert jitted.coverage.dtype == jnp.float64


def test_tarp_is_deterministic_and_uses_given_references():
    truths, samples, _, _ = gaussian_problem("exact")
    key = jax.random.key(0)
    first = diagnostics("exact")["tarp"]
    again = run_tarp(key, samples, truths)
    np.testing.assert_array_equal(again.ecp, first.ecp)
    assert again.atc == first.atc and again.ks_pvalue == first.ks_pvalue
    assert run_tarp(jax.random.key(1), samples, truths).atc != first.atc
    # references at the truths put no draw closer than the truth: f_j = 0 for every pair
    at_truth = run_tarp(key, samples, truths, references=truths)
    np.testing.assert_array_equal(at_truth.credibility, 0.0)
    np.testing.assert_array_equal(at_truth.ecp[1:], 1.0)
    assert at_truth.ecp[0] == 0.0
    boxed = run_tarp(key, samples, truths, prior_bounds=(-4.0 * np.ones(2), 4.0 * np.ones(2)))
    assert boxed.ks_pvalue > 0.01 and abs(boxed.atc) < 0.03


# --- the exact posterior passes, the wrong ones fail in the expected direction -------------------


def test_exact_posterior_passes():
    result = diagnostics("exact")
    sbc, hpd, tarp = result["sbc"], result["hpd"], result["tarp"]
    assert np.all(sbc.ks_pvalues > 0.01), sbc.ks_pvalues  # observed 0.21, 0.85
    assert np.all(sbc.chi2_pvalues > 0.01), sbc.chi2_pvalues  # observed 0.50, 0.73
    assert sbc.passed()
    np.testing.assert_allclose(hpd.coverage, LEVELS, atol=0.07)  # observed 0.55, 0.73, 0.95
    assert hpd.levels.shape == (3,)
    assert stats.kstest(np.asarray(hpd.credibility), "uniform").pvalue > 0.001
    assert result["central"].shape == (3, N_PARAM)
    np.testing.assert_allclose(result["central"], np.array(LEVELS)[:, None] * [1, 1], atol=0.07)
    assert isinstance(tarp, TARPResult)
    assert abs(tarp.atc) < 0.03  # observed +0.011 [-0.005, 0.025]
    assert tarp.atc_low < 0 < tarp.atc_high
    assert tarp.ks_pvalue > 0.01  # observed 0.28
    assert np.all(np.diff(np.asarray(tarp.ecp)) >= 0)
    assert np.all((tarp.ecp_low <= tarp.ecp) & (tarp.ecp <= tarp.ecp_high))
    assert float(jnp.max(jnp.abs(tarp.ecp - tarp.alphas))) < 0.08
    assert check_tarp(tarp) == (True, tarp.atc, tarp.ks_pvalue, "calibrated")


def test_over_confident_posterior_fails():
    result = diagnostics("over_confident")
    sbc, hpd, tarp = result["sbc"], result["hpd"], result["tarp"]
    assert np.all(sbc.ks_pvalues < 0.01) and np.all(sbc.chi2_pvalues < 0.01)
    assert not sbc.passed()
    # ranks pile up at 0 and L
    assert np.all(sbc.histogram[[0, -1]] > 2 * sbc.expected[0])  # observed 62-88 vs 21.9
    levels = np.asarray(LEVELS)
    # analytic for a 2-D Gaussian of half the width: coverage(c) = 1 - (1 - c)^(1/4)
    np.testing.assert_allclose(hpd.coverage, 1 - (1 - levels) ** 0.25, atol=0.07)
    assert np.all(np.asarray(hpd.coverage) < levels - 0.2)
    assert hpd.coverage[1] < 0.5  # observed 0.265, analytic 0.248
    assert np.all(result["central"] < np.array(LEVELS)[:, None] - 0.15)
    assert tarp.atc < -0.03 and tarp.atc_high < 0  # observed -0.054 [-0.076, -0.033]
    assert tarp.ks_pvalue < 1e-6
    assert check_tarp(tarp).diagnosis == "over-confident"
    assert not check_tarp(tarp).passed


def test_over_dispersed_posterior_is_conservative():
    result = diagnostics("over_dispersed")
    sbc, hpd, tarp = result["sbc"], result["hpd"], result["tarp"]
    assert np.all(sbc.ks_pvalues < 0.01) and not sbc.passed()
    # ranks pile up in the middle
    middle = sbc.histogram[8:12]
    assert np.all(middle > 1.5 * sbc.expected[8:12, None])
    levels = np.asarray(LEVELS)
    # analytic for a 2-D Gaussian of twice the width: coverage(c) = 1 - (1 - c)^4
    np.testing.assert_allclose(hpd.coverage, 1 - (1 - levels) ** 4, atol=0.07)
    assert np.all(np.asarray(hpd.coverage)[:2] > levels[:2] + 0.25)  # observed 0.945, 0.99
    assert hpd.coverage[2] > 0.99
    assert np.all(result["central"][:2] > np.array(LEVELS)[:2, None] + 0.1)
    assert tarp.atc > 0.03 and tarp.atc_low > 0  # observed +0.078 [0.071, 0.085]
    assert check_tarp(tarp).diagnosis == "over-dispersed"


def test_biased_posterior_fails():
    result = diagnostics("biased")
    sbc, hpd, tarp = result["sbc"], result["hpd"], result["tarp"]
    assert np.all(sbc.ks_pvalues < 1e-6) and np.all(sbc.chi2_pvalues < 1e-6)
    # the posterior sits one sd too high, so the truth is usually below most draws
    assert np.all(np.median(np.asarray(result["ranks"]), axis=0) < 0.3 * N_DRAW)
    assert np.all(np.asarray(hpd.coverage) < np.asarray(LEVELS) - 0.15)
    assert tarp.ks_pvalue < 1e-4
    assert not check_tarp(tarp).passed


# --- bad input ------------------------------------------------------------------------------------

SAMPLES = np.zeros((N_PAIR, 5, 2))
TRUTHS = np.zeros((N_PAIR, 2))
VARYING = np.random.default_rng(0).standard_normal((N_PAIR, 2))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: sbc_ranks(SAMPLES[..., 0], TRUTHS), r"`sbc_ranks`: `samples` must have shape"),
        (lambda: sbc_ranks(SAMPLES, TRUTHS[:, 0]), r"`sbc_ranks`: `truths` must have shape"),
        (
            lambda: sbc_ranks(SAMPLES, TRUTHS[:-1]),
            r"`samples`.*`truths`.*got samples \(400, 5, 2\)",
        ),
        (lambda: sbc_ranks(SAMPLES, TRUTHS[:, :1]), r"agree in n_pair and n_param"),
        (lambda: sbc_ranks(SAMPLES[:, :1], TRUTHS), r"`sbc_ranks`: `samples` needs at least 2"),
        (lambda: central_interval_coverage(SAMPLES, TRUTHS[:-1]), r"`central_interval_coverage`"),
        (lambda: central_interval_coverage(SAMPLES, TRUTHS, (0.5, 68)), r"`levels` must lie in"),
        (lambda: run_tarp(jax.random.key(0), SAMPLES[:, :1], TRUTHS), r"`run_tarp`: `samples`"),
        (
            lambda: run_tarp(jax.random.key(0), SAMPLES, TRUTHS),
            r"`run_tarp`: every parameter of `truths` must vary.*prior_bounds",
        ),
        (
            lambda: run_tarp(jax.random.key(0), SAMPLES, VARYING, references=VARYING[:10]),
            r"`run_tarp`: `references` must have shape",
        ),
        (
            lambda: run_tarp(jax.random.key(0), SAMPLES, TRUTHS, prior_bounds=(1.0, 0.0)),
            r"`prior_bounds` must have high > low",
        ),
        (lambda: check_sbc(np.zeros(N_PAIR, int), 10), r"`check_sbc`: `ranks` must have shape"),
        (lambda: check_sbc(np.full((N_PAIR, 2), 11), 10), r"`ranks` must lie in 0 … n_draws = 10"),
        (lambda: check_sbc(np.zeros((N_PAIR, 2), int), 1), r"`check_sbc`: `n_draws` must be"),
        (lambda: check_sbc(np.full((N_PAIR, 2), 0.5), 10), r"`ranks` must be integers"),
        (
            lambda: expected_coverage(np.zeros(N_PAIR), np.zeros(N_PAIR)),
            r"`expected_coverage`: `log_prob_samples` must have shape \(n_pair, n_draw\)",
        ),
        (
            lambda: expected_coverage(np.zeros((N_PAIR, 5)), np.zeros((N_PAIR, 1))),
            r"`log_prob_truth` must have shape \(n_pair,\)",
        ),
        (
            lambda: expected_coverage(np.zeros((N_PAIR, 5)), np.zeros(N_PAIR - 1)),
            r"must share n_pair; got \(400, 5\) and \(399,\)",
        ),
        (
            lambda: expected_coverage(np.zeros((N_PAIR, 1)), np.zeros(N_PAIR)),
            r"`log_prob_samples` needs at least 2 draws",
        ),
    ],
)
def test_bad_input_raises_naming_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_nan_input_raises():
    samples = SAMPLES.copy()
    samples[3, 2, 1] = np.nan
    with pytest.raises(
        ValueError, match=r"`sbc_ranks`: `samples` must not contain NaN.*\(3, 2, 1\)"
    ):
        sbc_ranks(samples, TRUTHS)
    with pytest.raises(ValueError, match=r"`run_tarp`: `truths` must not contain NaN"):
        run_tarp(jax.random.key(0), SAMPLES, np.where(TRUTHS == 0, np.nan, 0.0))
    with pytest.raises(ValueError, match=r"`expected_coverage`: `log_prob_truth` must not"):
        expected_coverage(np.zeros((N_PAIR, 5)), np.full(N_PAIR, np.nan))
    with pytest.raises(eqx.EquinoxRuntimeError, match=r"`sbc_ranks`: `samples` contains NaN"):
        eqx.filter_jit(sbc_ranks)(samples, TRUTHS)


def test_few_pairs_warn():
    truths, samples, log_prob_samples, log_prob_truth = gaussian_problem("exact")
    few = slice(0, 50)
    with pytest.warns(UserWarning, match=r"`sbc_ranks`: only 50 held-out pairs.*>= 100"):
        ranks = sbc_ranks(samples[few], truths[few])
    with pytest.warns(UserWarning, match=r"`check_sbc`: only 50 held-out pairs"):
        check_sbc(ranks, N_DRAW)
    with pytest.warns(UserWarning, match=r"`expected_coverage`: only 50"):
        expected_coverage(log_prob_samples[few], log_prob_truth[few])
    with pytest.warns(UserWarning, match=r"`run_tarp`: only 50"):
        run_tarp(jax.random.key(0), samples[few], truths[few], n_bootstrap=10)


# --- plots ----------------------------------------------------------------------------------------


def test_plots_return_figures():
    from matplotlib.figure import Figure

    result = diagnostics("exact")
    figures = [
        plot_sbc_ranks(result["ranks"], N_DRAW, names=["a", "b"]),
        plot_coverage(*result["hpd"].curve()),
        plot_coverage(LEVELS, result["central"], names=["a", "b"]),
        plot_tarp(result["tarp"]),
    ]
    try:
        assert all(isinstance(fig, Figure) for fig in figures)
        assert len(figures[0].axes) == N_PARAM
        assert figures[0].axes[1].get_title().startswith("b")
        assert len(figures[2].axes[0].lines) == 1 + N_PARAM  # diagonal + one curve per parameter
        assert "ATC" in figures[3].axes[0].get_title()
    finally:
        import matplotlib.pyplot as plt

        for fig in figures:
            plt.close(fig)


def test_c2st_matches_the_bayes_optimal_accuracy():
    """Two Gaussians a Mahalanobis distance Δ apart: the best accuracy is Φ(Δ / 2)."""
    import scipy.stats

    from diffgal.inference import c2st

    rng = np.random.default_rng(0)
    same = c2st(jax.random.key(0), rng.normal(size=(1000, 2)), rng.normal(size=(1200, 2)),
                steps=500)
    assert abs(same - 0.5) < 0.04
    shifted = c2st(jax.random.key(1), rng.normal(size=(1000, 2)),
                   rng.normal(size=(1000, 2)) + [1.5, 0.0], steps=500)
    assert abs(shifted - scipy.stats.norm.cdf(0.75)) < 0.04
    with pytest.raises(ValueError, match="same d"):
        c2st(jax.random.key(0), np.zeros((50, 2)), np.zeros((50, 3)))
    with pytest.raises(ValueError, match="NaN or inf"):
        c2st(jax.random.key(0), np.full((50, 2), np.nan), np.zeros((50, 2)))
