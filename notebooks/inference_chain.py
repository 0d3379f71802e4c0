# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The IMF slope and the SN Ia number from many stars: the whole inference chain
#
# sbi-chempy (arXiv:2503.02456) infers the Galaxy's high-mass IMF slope alpha_IMF and SN Ia
# number log10 N_Ia from the abundances of many stars: a neural posterior per star, combined
# across stars. This notebook runs the same chain with `diffgal.inference`, honestly:
#
# 1. simulate a training set with the diffgal chemistry model (faithful mode);
# 2. train an emulator and check it on held-out runs;
# 3. train the marginal NPE q(alpha_IMF, log10 N_Ia | x) with 0.05 dex noise and check its
#    calibration (SBC, expected coverage, TARP);
# 4. draw a mock galaxy from the **model** (not the emulator) and combine its stars with
#    (a) the Gaussian product with the (N - 1) prior correction, sbi-chempy's headline
#    combination for reference, (b) the exact factorised potential, (c) hierarchical NUTS with
#    the emulator likelihood, and the joint MAP through the differentiable model;
# 5. ask which yield set made the stars: evidences of two candidate sets (with the Occam
#    penalty COMPASS's plug-in likelihood lacks) and the posterior model probabilities.
#
# `DIFFGAL_NOTEBOOK_SMALL=1` runs at tiny sizes (numbers then meaningless; the full-size run is
# `diffgal infer headline`) and skips the MAP and the model comparison, whose compilation
# dominates a small run (the tests run both on their own); `DIFFGAL_NOTEBOOK_OUT` chooses where
# the figures go.

# %%
import os
import pathlib
import tempfile
import time

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from diffgal.chemistry import (  # noqa: E402
    CHEMPY_COLUMNS,
    SBI_CHEMPY_COLUMNS,
    available_yield_sets,
    load_yields,
)
from diffgal.inference import (  # noqa: E402
    GLOBAL_NAMES,
    Candidate,
    ChemistryPrior,
    aggregate_log_posteriors,
    build_candidate,
    calibrate,
    candidate_yields,
    compare_models,
    emulator_accuracy,
    fit_emulator,
    gaussian_fit,
    gaussian_product,
    gaussian_product_compat,
    hierarchical_nuts,
    laplace_aggregate,
    load_training_set,
    map_fit,
    plot_comparison,
    simulate_training_set,
    train_npe,
)
from diffgal.inference._headline import TRUTH, mock_stars  # noqa: E402

SMALL = os.environ.get("DIFFGAL_NOTEBOOK_SMALL", "") not in ("", "0")
OUT = pathlib.Path(
    os.environ.get("DIFFGAL_NOTEBOOK_OUT") or tempfile.mkdtemp(prefix="diffgal_notebook_")
)
OUT.mkdir(parents=True, exist_ok=True)
WORK = pathlib.Path(tempfile.mkdtemp(prefix="diffgal_inference_"))
YIELDS = "tng" if available_yield_sets().get("tng") == "available" else "default"
N_TRAIN, N_TEST = (3000, 1000) if SMALL else (100_000, 10_000)
SHARD = 1000 if SMALL else 20_000  # one shard shape: the model compiles once
N_STARS = 25 if SMALL else 1000
START = time.perf_counter()
print(f"small run: {SMALL}; yields {YIELDS}; figures go to {OUT}")

# %% [markdown]
# ## 1. Training set
#
# Parameters from sbi-chempy's prior (five Normals and T ~ U(2, 12.8) Gyr), the model in
# faithful mode. The shards are resumable: run the cell again and finished shards are kept.
# Rejected runs are masked and dropped, never turned into zero rows.

# %%
prior = ChemistryPrior()
key = jax.random.key(0)
k_sim, k_test, k_emu, k_npe, k_cal, k_mock, k_agg, k_nuts = jax.random.split(key, 8)
sims = load_training_set(
    simulate_training_set(
        k_sim, WORK / "sims", N_TRAIN, yields=YIELDS, shard_size=SHARD, show_progress=False
    )
)
test = load_training_set(
    simulate_training_set(
        k_test, WORK / "test", N_TEST, yields=YIELDS, shard_size=SHARD, show_progress=False
    )
)
print(f"{sims.theta.shape[0]} training runs ({sims.n_failed} rejected by the model)")

# %% [markdown]
# ## 2. Emulator

# %%
emu = fit_emulator(
    k_emu, sims.theta, sims.x, max_epochs=10 if SMALL else 150, show_progress=False
).emulator
acc = emulator_accuracy(emu, test.theta, test.x)
print(
    f"emulator vs model on {acc.n} held-out runs: median |delta| {acc.median:.4f} dex, "
    f"p99 {acc.p99:.4f} dex, {acc.seconds_per_star * 1e6:.2f} us per star"
)

# %% [markdown]
# ## 3. Marginal NPE of the global parameters, and its calibration

# %%
cols = [CHEMPY_COLUMNS.index(c) for c in SBI_CHEMPY_COLUMNS]
posterior = train_npe(
    k_npe, sims.theta, sims.x[:, cols], params=GLOBAL_NAMES, noise=0.05,
    max_epochs=5 if SMALL else 80, show_progress=False,
).posterior
n_cal = min(test.theta.shape[0], 150 if SMALL else 1000)
report = calibrate(
    k_cal, posterior, test.theta[:n_cal], test.x[:n_cal, cols],
    n_draws=100 if SMALL else 1000, plots=OUT,
)
print("SBC KS p-values:", {k: round(v, 3) for k, v in report["sbc_ks_pvalue"].items()})
print("HPD coverage at 50/68/95 %:", report["hpd_coverage"])
print(f"TARP ATC {report['tarp_atc']:+.3f} ({report['tarp_diagnosis']})")

# %% [markdown]
# ## 4. A mock galaxy from the model, combined four ways

# %%
table = load_yields(YIELDS)
x_obs, theta_true = mock_stars(k_mock, N_STARS, prior=prior, yields=table)
mu_p, cov_p = prior.loc[:2], jnp.diag(prior.scale[:2] ** 2)


def log_prior(lam):
    return -0.5 * jnp.sum(((lam - mu_p) / prior.scale[:2]) ** 2)


results = {}
t0 = time.perf_counter()
draws = posterior.sample_per_star(k_agg, 200 if SMALL else 1000, jnp.asarray(x_obs))
means, covs = gaussian_fit(draws)
g = gaussian_product(means, covs, mu_p.astype(means.dtype), cov_p.astype(means.dtype))
results["(a) Gaussian product"] = (np.asarray(g.mean), np.asarray(g.cov), time.perf_counter() - t0)
compat = gaussian_product_compat(means, jnp.sqrt(jnp.diagonal(covs, axis1=1, axis2=2)))
results["sbi-chempy combination"] = (np.asarray(compat.mean), np.asarray(compat.cov), 0.0)
t0 = time.perf_counter()
potential = aggregate_log_posteriors(posterior.log_prob, log_prior, jnp.asarray(x_obs))
lap = laplace_aggregate(posterior.log_prob, log_prior, jnp.asarray(x_obs), g.mean)
results["(b) factorised, Laplace"] = (
    np.asarray(lap.posterior.mean), np.asarray(lap.posterior.cov), time.perf_counter() - t0,
)
nuts = hierarchical_nuts(
    k_nuts, x_obs, emu, num_warmup=40 if SMALL else 300, num_samples=40 if SMALL else 300,
    num_chains=1 if SMALL else 2,
)
results["(c) hierarchical NUTS"] = (nuts.mean, nuts.cov, nuts.seconds)
if not SMALL:  # compiling the model's Hessian takes ~50 s; tests/inference covers `map_fit`
    mp = map_fit(k_nuts, x_obs, yields=table, steps=300)
    results["MAP + Laplace"] = (mp.mean, mp.cov, mp.seconds)

print(f"{'method':26s} {'alpha_IMF':>24s} {'log10 N_Ia':>24s} {'wall s':>7s}")
for name, (mean, cov, sec) in results.items():
    sd = np.sqrt(np.diag(cov))
    cells = [
        f"{mean[i]:.4f} +/- {sd[i]:.4f} ({(mean[i] - TRUTH[i]) / sd[i]:+.1f}s)" for i in range(2)
    ]
    print(f"{name:26s} {cells[0]:>24s} {cells[1]:>24s} {sec:7.1f}")
print(f"factorised potential at the truth: {float(potential(jnp.asarray(TRUTH))):.2f}")

# %%
fig, ax = plt.subplots(figsize=(5.5, 4.5))
t = np.linspace(0, 2 * np.pi, 200)
circle = np.stack([np.cos(t), np.sin(t)])
for (name, (mean, cov, _)), colour in zip(results.items(), plt.cm.tab10.colors, strict=False):
    ell = np.linalg.cholesky(np.asarray(cov, float)) @ circle
    ax.plot(mean[0] + ell[0], mean[1] + ell[1], color=colour, label=name)
    ax.plot(*mean, "o", color=colour, ms=3)
ax.plot(*TRUTH, "k*", ms=12, label="truth")
ax.set_xlabel(r"$\alpha_\mathrm{IMF}$")
ax.set_ylabel(r"$\log_{10} N_\mathrm{Ia}$")
ax.set_title(f"{N_STARS} stars: 1-sigma ellipses")
ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig(OUT / "methods.png", dpi=110)
plt.close(fig)

# %% [markdown]
# ## 5. Which yield set made these stars?
#
# The evidence of a yield set m for the star set, with Λ shared by all stars, is
# Π_i Z_{m,i} · ∫ p(Λ)^(1-N) Π_i q_m(Λ | x_i) dΛ. The per-star evidences Z_{m,i} come from
# importance sampling with the model's 6-D NPE as proposal and its emulator as likelihood, and
# the integral over Λ from a quadrature of the marginal NPE (`diffgal.inference.compare_models`,
# `diffgal infer compare`). The first candidate reuses the networks above, and the second is
# `mixed` (TNG CC-SN with the default set's AGB and SN Ia tables) trained from scratch. The mock
# comes from `mixed`. This needs the TNG tables.

# %%
if SMALL:  # ~2 min of training and compiling; tests/inference/test_compare.py runs it small
    print("model comparison skipped in the small run")
elif YIELDS == "tng":
    npe6 = train_npe(
        k_npe, sims.theta, sims.x[:, cols], noise=0.05, max_epochs=150,
        show_progress=False,
    ).posterior
    first = Candidate("tng", npe6, posterior, emu, {})
    second = build_candidate(
        "mixed", WORK / "candidates", n_train=N_TRAIN, n_test=SHARD, shard_size=SHARD,
        emulator_epochs=150, npe_epochs=150, marginal_epochs=80, show_progress=False,
    )
    x_mixed, _ = mock_stars(k_mock, N_STARS, prior=prior, yields=candidate_yields("mixed"))
    comparison = compare_models(
        k_agg, [first, second], x_mixed, n_draws=512, n_grid=64, n_bootstrap=200,
        n_stars_curve=(1, 3, 10, 30, 100, 300),
    )
    for name, lz, p in zip(comparison.names, comparison.log_z, comparison.probabilities,
                           strict=True):
        print(f"{name:8s} log evidence {lz:10.2f}   posterior model probability {p:.4f}")
    ppc = comparison.report["ppc_winner"]
    print(f"winner {comparison.report['winner']}: PPC p < 0.05 for "
          f"{100 * ppc['fraction_below_0.05']:.0f} % of stars, chi2/dof "
          f"{ppc['mean_chi2_per_dof']:.2f}")
    plot_comparison(comparison.report, OUT / "compare.png")
else:
    print("model comparison skipped: the TNG yield tables are not available here")
print(f"done in {time.perf_counter() - START:.0f} s")
