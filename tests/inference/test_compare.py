"""Model comparison: the evidence decomposition against analytic evidences, importance
sampling, the PPC, the reliability table, yield-set mixing and the `infer compare` CLI."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from diffgal.cli import main
from diffgal.inference import (
    candidate_yields,
    posterior_predictive_check,
    reliability_table,
    shared_global_correction,
)
from diffgal.inference._compare import (
    StarEvidence,
    _correction_from_grid,
    _star_evidence_generic,
)


def _mvn_logpdf(x, mean, cov):
    return scipy.stats.multivariate_normal(mean, cov).logpdf(x)


def _linear_gaussian(n_star, seed=0):
    """x_i = Λ + φ_i + ε_i in 2-D, Λ ~ N(μ0, S0), φ_i ~ N(0, s² I), ε_i ~ N(0, σ² I).

    Per star p(x_i | Λ) = N(x_i | Λ, v I) with v = s² + σ², so the per-star posterior of Λ,
    the per-star evidence and the joint evidence are all Gaussians in closed form.
    """
    rng = np.random.default_rng(seed)
    mu0 = np.array([-2.3, -2.89])
    s0 = np.array([[0.09, 0.02], [0.02, 0.04]])
    v = 0.3**2 + 0.05**2
    lam = rng.multivariate_normal(mu0, s0)
    x = lam + rng.normal(0, np.sqrt(v), (n_star, 2))
    # The joint evidence: vec(X) ~ N(1 ⊗ μ0, 11ᵀ ⊗ S0 + v I).
    joint = _mvn_logpdf(
        x.ravel(), np.tile(mu0, n_star), np.kron(np.ones((n_star, n_star)), s0)
        + v * np.eye(2 * n_star)
    )
    per_star_z = np.array([_mvn_logpdf(xi, mu0, s0 + v * np.eye(2)) for xi in x])
    p0 = np.linalg.inv(s0)
    post_cov = np.linalg.inv(p0 + np.eye(2) / v)

    def log_q(lam, xi):  # the exact per-star posterior N(post_mean(xi), post_cov)
        mean = post_cov @ (p0 @ mu0 + xi / v)
        d = lam - mean
        prec = jnp.asarray(np.linalg.inv(post_cov))
        return -0.5 * jnp.einsum("...i,ij,...j->...", d, prec, d) - 0.5 * np.log(
            (2 * np.pi) ** 2 * np.linalg.det(post_cov)
        )

    def log_prior(lam):
        d = lam - mu0
        return -0.5 * jnp.einsum("...i,ij,...j->...", d, jnp.asarray(p0), d) - 0.5 * np.log(
            (2 * np.pi) ** 2 * np.linalg.det(s0)
        )

    return x, joint, per_star_z, log_q, log_prior


@pytest.mark.parametrize("n_star", [1, 5, 100])
def test_evidence_decomposition_is_exact_for_linear_gaussian(n_star):
    """Σ log Z_i + log ∫ p^(1-N) Π q_i equals the analytic joint evidence."""
    x, joint, per_star_z, log_q, log_prior = _linear_gaussian(n_star, seed=n_star)
    corr = shared_global_correction(log_q, log_prior, jnp.asarray(x), x.mean(0))
    assert corr.edge < -20
    np.testing.assert_allclose(per_star_z.sum() + corr.log_value, joint, atol=1e-6)
    if n_star == 1:
        assert abs(corr.log_value) < 1e-6  # one star: q integrates to 1
    # Reweighting the stored grid (the bootstrap's shortcut) with unit weights is the same sum.
    again, _ = _correction_from_grid(corr.per_star, corr.log_prior, corr.log_cell)
    np.testing.assert_allclose(again, corr.log_value, rtol=0, atol=1e-12)


def test_evidence_grid_widens_until_the_edge_is_negligible():
    x, joint, per_star_z, log_q, log_prior = _linear_gaussian(20, seed=3)
    corr = shared_global_correction(log_q, log_prior, jnp.asarray(x), x.mean(0), width=1.0)
    assert corr.edge < -20  # started at ± 1 sd, widened
    np.testing.assert_allclose(per_star_z.sum() + corr.log_value, joint, atol=1e-6)


def _gaussian_star(x, sigma=0.2):
    """θ ~ N(0, I₂), x | θ ~ N(θ, σ² I₂): posterior N(x / (1 + σ²), σ² / (1 + σ²) I)."""
    post_mean, post_var = x / (1 + sigma**2), sigma**2 / (1 + sigma**2)
    log_z = _mvn_logpdf(np.asarray(x), np.zeros(2), (1 + sigma**2) * np.eye(2))

    def log_gauss(t, m, var):
        return jnp.sum(-0.5 * (t - m) ** 2 / var - 0.5 * jnp.log(2 * jnp.pi * var), -1)

    return post_mean, post_var, log_z, log_gauss


def test_importance_sampled_star_evidence():
    x = jnp.array([0.4, -0.7])
    sigma = 0.2
    post_mean, post_var, log_z, log_gauss = _gaussian_star(x, sigma)

    def log_lik(t, xx):
        return log_gauss(xx, t, sigma**2)

    def sample_prior(k, n):
        return jax.random.normal(k, (n, 2))

    def log_prior(t):
        return log_gauss(t, 0.0, 1.0)

    # The exact posterior as proposal: every weight equals Z, the estimate is exact, ESS = n.
    def exact(k, n, xx):
        return post_mean + jnp.sqrt(post_var) * jax.random.normal(k, (n, 2))

    def exact_lp(t, xx):
        return log_gauss(t, post_mean, post_var)

    lz, ess, _, w = _star_evidence_generic(
        jax.random.key(0), x, exact, exact_lp, log_lik, sample_prior, log_prior, 256, 0.0
    )
    np.testing.assert_allclose(lz, log_z, atol=1e-10)
    np.testing.assert_allclose(ess, 256, rtol=1e-10)
    np.testing.assert_allclose(w.sum(), 1.0, atol=1e-12)

    # A shifted, too-wide proposal plus the defensive prior component: right within MC error,
    # with a smaller ESS.
    def rough(k, n, xx):
        return post_mean + 0.05 + 2 * jnp.sqrt(post_var) * jax.random.normal(k, (n, 2))

    def rough_lp(t, xx):
        return log_gauss(t, post_mean + 0.05, 4 * post_var)

    lz, ess, _, _ = _star_evidence_generic(
        jax.random.key(1), x, rough, rough_lp, log_lik, sample_prior, log_prior, 4000, 0.1
    )
    assert 100 < float(ess) < 4000
    assert abs(float(lz) - log_z) < 4.0 / np.sqrt(float(ess))


def test_posterior_predictive_p_values_are_chi2_survival():
    """With one-hot weights the p-value is the χ²(8) survival function of the residual."""
    rng = np.random.default_rng(0)
    n_star, n_draw = 4, 3
    theta = jnp.asarray(rng.normal(size=(n_star, n_draw, 6)))
    weights = jnp.zeros((n_star, n_draw)).at[:, 1].set(1.0)
    star = StarEvidence(jnp.zeros(n_star), jnp.ones(n_star), theta, weights)

    def emulator(t):  # 9 outputs in CHEMPY_COLUMNS order
        return jnp.concatenate([t, t[..., :3]], -1)

    pred = np.asarray(emulator(theta))[:, 1, :]
    from diffgal.chemistry import CHEMPY_COLUMNS, SBI_CHEMPY_COLUMNS

    cols = [CHEMPY_COLUMNS.index(c) for c in SBI_CHEMPY_COLUMNS]
    x_obs = pred[:, cols] + 0.05 * rng.normal(size=(n_star, 8)) * np.array([1, 1, 1, 1, 3, 1, 1, 1])
    out = posterior_predictive_check(star, emulator, x_obs, noise=0.05)
    chi2 = np.sum(((x_obs - pred[:, cols]) / 0.05) ** 2, -1)
    np.testing.assert_allclose(out["p_values"], scipy.stats.chi2.sf(chi2, 8), rtol=1e-8)
    np.testing.assert_allclose(out["mean_chi2_per_dof"], chi2.mean() / 8, rtol=1e-8)


def test_corner_plot_layout_and_errors():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from diffgal.inference import plot_corner

    draws = np.random.default_rng(0).normal(size=(500, 3))
    fig = plot_corner(draws, names=["a", "b", "c"], truth=[0.0, 0.0, 0.0])
    visible = [ax for ax in fig.axes if ax.axison]
    assert len(visible) == 6  # 3 diagonal + 3 below
    plt.close(fig)
    with pytest.raises(ValueError, match="`names` needs 3 labels"):
        plot_corner(draws, names=["a"])
    with pytest.raises(ValueError, match="`truth` must have shape"):
        plot_corner(draws, truth=[0.0])


def test_reliability_table_counts_by_hand():
    p = np.array([[0.95, 0.05], [0.8, 0.2], [0.15, 0.85], [0.5, 0.5]])
    truth = [0, 1, 1, 0]
    rows = {tuple(r["bin"]): r for r in reliability_table(p, truth, bins=(0, 0.3, 0.7, 1))}
    low = rows[(0.0, 0.3)]  # 0.05 (false), 0.2 (true), 0.15 (false)
    assert low["count"] == 3
    np.testing.assert_allclose(low["mean_probability"], 0.4 / 3)
    np.testing.assert_allclose(low["observed_frequency"], 1 / 3)
    mid = rows[(0.3, 0.7)]  # 0.5 (true), 0.5 (false)
    assert mid["count"] == 2 and mid["observed_frequency"] == 0.5
    high = rows[(0.7, 1.0)]  # 0.95 (true), 0.8 (false), 0.85 (true)
    np.testing.assert_allclose(high["observed_frequency"], 2 / 3)
    with pytest.raises(ValueError, match="`truth`"):
        reliability_table(p, [0, 1])


def test_candidate_yields_mix_channels():
    default = candidate_yields("default")
    mixed = candidate_yields("default/default/default")
    np.testing.assert_array_equal(mixed.cc.masses, default.cc.masses)
    assert mixed.name == "default/default/default"
    with pytest.raises(ValueError, match="unknown yield set"):
        candidate_yields("nope")


def test_mixed_set_takes_tng_cc_and_default_agb_snia(tng_data_dir):
    mixed = candidate_yields("mixed", data_dir=tng_data_dir)
    tng = candidate_yields("tng", data_dir=tng_data_dir)
    default = candidate_yields("default")
    np.testing.assert_array_equal(mixed.cc.masses, tng.cc.masses)
    np.testing.assert_array_equal(mixed.agb.masses, default.agb.masses)
    np.testing.assert_array_equal(
        np.asarray(mixed.snia.yields_per_event), np.asarray(default.snia.yields_per_event)
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--sets", "tng"], "--sets: name at least two"),
        (["--sets", "tng,tng"], "--sets: name at least two"),
        (["--sets", "tng,bogus"], "unknown yield set 'bogus'"),
        (["--curve", "1,x"], "--curve: expected comma-separated integers"),
        (["--grid", "4"], "--grid: must be >= 8"),
        (["--stars-file", "{tmp}/none.csv"], "none.csv"),
    ],
)
def test_compare_usage_errors(tmp_path, capsys, argv, message):
    argv = ["infer", "compare", "--out", str(tmp_path / "o"), *argv]
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_compare_cli_end_to_end_small(tmp_path, capsys):
    """A tiny run of the whole command: two sets, a mock from `default`, resumable cache.

    The training and held-out sets have the same size, so the model compiles once per set.
    """
    out = tmp_path / "cmp"
    argv = ["infer", "compare", "--sets", "default,default/default/tng", "--mock", "default",
            "--stars", "6", "--out", str(out), "--n-train", "600", "--n-test", "600",
            "--epochs", "2", "--draws", "32", "--grid", "16", "--bootstrap", "10", "--curve",
            "", "--no-progress"]
    if not _tng_present():
        argv[argv.index("default,default/default/tng")] = "default,default/default/default"
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "log evidence" in text and "wrote" in text
    summary = json.loads((out / "summary.json").read_text())
    probs = np.array(list(summary["probability"].values()))
    np.testing.assert_allclose(probs.sum(), 1.0, atol=1e-9)
    assert summary["truth"]["yields"] == "default"
    assert summary["probability_vs_n_stars"] == []  # --curve '' skips it (each n compiles)
    assert set(summary["bootstrap"]["probability_mean"]) == set(summary["models"])
    assert 0 <= summary["ppc_winner"]["fraction_below_0.05"] <= 1
    assert (out / "compare.png").stat().st_size > 0 and (out / "ppc.png").stat().st_size > 0
    assert len(summary["ppc_winner"]["p_values"]) == 6
    # The cached 6-D NPE and emulator also give a PPC straight from the NPE's draws.
    from diffgal.inference import load_emulator, load_posterior, posterior_predictive

    root = out / "cache" / "default"
    npe, emu = load_posterior(root / "npe_600.eqx"), load_emulator(root / "emulator_600.eqx")
    x = np.load(out / "mock.npz")["x_obs"]
    ppc = posterior_predictive(jax.random.key(0), npe, emu, x, n_draws=20)
    assert len(ppc["p_values"]) == 6 and all(0 <= p <= 1 for p in ppc["p_values"])
    marginal = load_posterior(root / "npe_globals_600.eqx")
    with pytest.raises(ValueError, match="6-D NPE"):
        posterior_predictive(jax.random.key(0), marginal, emu, x)
    # The cache is complete: a second run trains nothing and gives the same evidences.
    assert main(argv) == 0
    again = json.loads((out / "summary.json").read_text())
    assert again["train"][summary["models"][0]]["emulator_s"] < 5
    np.testing.assert_allclose(
        list(again["log_evidence"].values()), list(summary["log_evidence"].values()), rtol=1e-6
    )


def _tng_present():
    import os
    import pathlib

    root = os.environ.get("DIFFGAL_DATA_DIR")
    return bool(root) and (pathlib.Path(root) / "yields" / "tng" / "SNII.hdf5").is_file()
