"""The sbi-chempy headline, done honestly: global IMF slope and SN Ia number from many stars.

`run_headline` builds (or reuses, from its cache directory) everything the comparison needs and
writes `summary.json`:

1. a training set of the diffgal model in faithful mode (`simulate_training_set`), and a
   separate held-out set;
2. the emulator (`fit_emulator`), scored on the held-out runs;
3. the marginal NPE q(Lambda | x) of the global parameters (`train_npe`), trained directly on
   model runs with 0.05 dex noise;
4. a mock galaxy: `n_stars` stars from the **model** (faithful mode, not the emulator) with
   the true Lambda, locals from the prior and 0.05 dex noise;
5. the methods side by side: (a) the Gaussian product with the (N - 1) prior correction and
   full covariance, and sbi-chempy's headline combination (`compat`) for reference; (b) the
   exact factorised potential, by Laplace and by NUTS; (c) hierarchical NUTS with the
   emulator as the likelihood; and the joint MAP through the differentiable model with a
   Laplace covariance;
6. optionally (`coverage_sets > 0`), the frequency with which the 68 % intervals of (a) and
   (b) cover the truth over independent mock galaxies of `coverage_stars` stars.

The training set, emulator and NPE depend only on `train_seed` and the sizes, so runs for many
mock seeds share them. Every stage is resumable: finished shards and trained models are kept.
"""

from __future__ import annotations

import json
import os
import pathlib
import time
import typing

import jax
import jax.numpy as jnp
import numpy as np

from ..chemistry import (
    CHEMPY_COLUMNS,
    SBI_CHEMPY_COLUMNS,
    THETA_COLUMNS,
    chempy_tng,
    load_yields,
)
from ._aggregate import (
    gaussian_fit,
    gaussian_product,
    gaussian_product_compat,
    laplace_aggregate,
    nuts_aggregate,
)
from ._emulator import emulator_accuracy, fit_emulator, load_emulator, save_emulator
from ._hierarchical import hierarchical_nuts, map_fit
from ._npe import load_posterior, save_posterior, train_npe
from ._prior import GLOBAL_NAMES, ChemistryPrior
from ._simulate import load_training_set, simulate_training_set
from ._training import load_cached

__all__ = ["TRUTH", "aggregate_stars", "mock_stars", "run_headline"]

#: sbi-chempy's mock truth for (alpha_IMF, log10 N_Ia).
TRUTH: tuple[float, float] = (-2.3, -2.89)

#: sbi-chempy's reported numbers (arXiv:2503.02456), for the comparison table.
SBI_CHEMPY_REPORTED = {
    "imf_slope": {"mean": -2.298, "sigma": 0.002},
    "log10_n_ia": {"mean": -2.885, "sigma": 0.003},
}

_OBS = [CHEMPY_COLUMNS.index(c) for c in SBI_CHEMPY_COLUMNS]


def mock_stars(
    key,
    n_stars: int,
    *,
    truth: typing.Sequence[float] = TRUTH,
    prior: ChemistryPrior | None = None,
    noise: float = 0.05,
    mode: str = "faithful",
    yields="tng",
    data_dir=None,
) -> tuple[np.ndarray, np.ndarray]:
    """A mock galaxy from the chemistry **model**: returns `(x_obs (n, 8), theta (n, 6))`.

    Locals and birth times are prior draws; runs the model rejects are redrawn (never kept as
    zeros); `noise` dex of Gaussian noise is added to the 8 observed abundances.
    """
    if n_stars < 1:
        raise ValueError(f"`mock_stars`: `n_stars` must be >= 1; got {n_stars}.")
    prior = ChemistryPrior() if prior is None else prior
    truth = np.asarray(truth, dtype=float)
    if truth.shape != (len(GLOBAL_NAMES),):
        raise ValueError(
            f"`mock_stars`: `truth` must hold the {len(GLOBAL_NAMES)} global parameters "
            f"({', '.join(GLOBAL_NAMES)}); got shape {truth.shape}. Pass e.g. `truth={TRUTH}`."
        )
    row = np.r_[np.asarray(prior.loc, float), 0.5 * (prior.t_low + prior.t_high)]
    row[list(prior.global_index)] = truth  # the prior's centre with the truth as globals
    if not (np.all(np.isfinite(truth)) and bool(prior.in_support(row))):
        raise ValueError(
            f"`mock_stars`: `truth` must be finite and inside the prior support; got "
            f"{truth.tolist()}. Pass finite values of ({', '.join(GLOBAL_NAMES)})."
        )
    table = load_yields(yields, data_dir=data_dir) if isinstance(yields, str) else yields
    k_theta, k_noise = jax.random.split(key)
    thetas, xs, attempt = [], [], 0
    have = 0
    while have < n_stars:
        th = np.array(prior.sample(jax.random.fold_in(k_theta, attempt), (n_stars,)))
        th[:, 0], th[:, 1] = truth
        x, failed = chempy_tng(th, mode=mode, yields=table)
        ok = ~np.asarray(failed) & np.all(np.isfinite(np.asarray(x)), 1)
        thetas.append(th[ok])
        xs.append(np.asarray(x)[ok])
        have += int(ok.sum())
        attempt += 1
        if attempt > 20:
            raise RuntimeError("`mock_stars`: the model rejected nearly every prior draw.")
    theta = np.concatenate(thetas)[:n_stars]
    x = np.concatenate(xs)[:n_stars][:, _OBS]
    x = x + noise * np.asarray(jax.random.normal(k_noise, x.shape, x.dtype))
    return x, theta


def _entry(mean, cov, seconds, truth=None, extra=None) -> dict:
    """A JSON entry for one method; `truth=None` for real data (no distances)."""
    mean, cov = np.asarray(mean, float), np.asarray(cov, float)
    sd = np.sqrt(np.diag(cov))
    out = {
        "wall_s": float(seconds),
        "correlation": float(cov[0, 1] / (sd[0] * sd[1])),
    }
    for i, name in enumerate(GLOBAL_NAMES):
        out[name] = {"mean": float(mean[i]), "sigma": float(sd[i]), "wall_s": float(seconds)}
        if truth is not None:
            out[name]["truth"] = float(truth[i])
            out[name]["distance_sigma"] = float((mean[i] - truth[i]) / sd[i])
    if truth is not None:
        # The truth's Mahalanobis distance in the 2-D Gaussian summary.
        d = mean - np.asarray(truth)
        out["mahalanobis"] = float(np.sqrt(d @ np.linalg.solve(cov, d)))
    if extra:
        out.update(extra)
    return out


def aggregate_stars(key, posterior, x_obs, *, prior=None, n_draws=1000, nuts=True,
                    nuts_samples=500) -> dict:
    """Methods (a), compat and (b) for a star table with a marginal NPE of the globals.

    Returns `{method: entry}` with mean, sigma, correlation and wall time per global.
    """
    from ._hierarchical import check_observations

    if tuple(posterior.params) != GLOBAL_NAMES:
        raise ValueError(
            f"`aggregate_stars`: `posterior` must be the marginal NPE of {GLOBAL_NAMES} "
            f"(`train_npe(..., params=GLOBAL_NAMES)`); got one of {posterior.params}."
        )
    x_obs = check_observations("aggregate_stars", x_obs, posterior.x_columns)
    prior = posterior.prior if prior is None else prior
    agg = _aggregate_npe(key, posterior, x_obs, prior, n_draws=n_draws, nuts=nuts,
                         nuts_samples=nuts_samples)
    return {name: _entry(*v[:3], None, v[3] if len(v) > 3 else None) for name, v in agg.items()}


def _prior_globals(prior: ChemistryPrior):
    """The prior mean, covariance and (normalised) log density of the globals.

    The density is an `eqx.Module`, not a closure, so the jitted aggregators that take it
    compile once per star count instead of once per call.
    """
    from ._compare import _prior_globals_normalised

    mu, sd, log_prior = _prior_globals_normalised(prior)
    return mu, jnp.diag(sd**2), log_prior


def _aggregate_npe(key, posterior, x_obs, prior, *, n_draws, nuts, nuts_samples):
    """Methods (a) and (b) on one star set with the marginal NPE."""
    results = {}
    mu_p, cov_p, log_prior = _prior_globals(prior)
    cond = jnp.asarray(x_obs, posterior.u_mean.dtype)
    k_draw, k_nuts = jax.random.split(key)

    t0 = time.perf_counter()
    draws = posterior.sample_per_star(k_draw, n_draws, cond)
    means, covs = gaussian_fit(draws)
    g = gaussian_product(means, covs, mu_p.astype(means.dtype), cov_p.astype(means.dtype))
    jax.block_until_ready(g.mean)
    results["a_gaussian_product"] = (g.mean, g.cov, time.perf_counter() - t0)
    compat = gaussian_product_compat(means, jnp.sqrt(jnp.diagonal(covs, axis1=1, axis2=2)))
    results["compat_sbi_chempy"] = (compat.mean, compat.cov, time.perf_counter() - t0)

    log_q = posterior.log_prob  # a pytree (bound method of a Module): no recompiles

    t0 = time.perf_counter()
    lap = laplace_aggregate(log_q, log_prior, cond, g.mean)
    jax.block_until_ready(lap.posterior.mean)
    results["b_factorised_laplace"] = (
        lap.posterior.mean,
        lap.posterior.cov,
        time.perf_counter() - t0,
    )
    if nuts:
        t0 = time.perf_counter()
        res = nuts_aggregate(
            k_nuts,
            log_q,
            log_prior,
            cond,
            lap.posterior.mean,
            num_warmup=nuts_samples,
            num_samples=nuts_samples,
        )
        flat = np.asarray(res.samples).reshape(-1, 2)
        results["b_factorised_nuts"] = (
            flat.mean(0),
            np.cov(flat.T),
            time.perf_counter() - t0,
            {
                "r_hat": np.asarray(res.r_hat).tolist(),
                "ess": np.asarray(res.ess).tolist(),
                "divergences": int(res.num_divergences),
            },
        )
    return results


def run_headline(
    out: str | os.PathLike,
    *,
    stars: int = 1000,
    seed: int = 0,
    train_seed: int = 0,
    n_train: int = 100_000,
    n_test: int = 10_000,
    cache: str | os.PathLike | None = None,
    data_dir=None,
    methods: typing.Sequence[str] = ("a", "b", "c", "map"),
    emulator_epochs: int = 150,
    npe_epochs: int = 80,
    nuts_warmup: int = 300,
    nuts_samples: int = 300,
    nuts_chains: int = 2,
    map_steps: int = 300,
    coverage_sets: int = 0,
    coverage_stars: int = 100,
    show_progress: bool = True,
) -> dict:
    """Run the headline reproduction for one mock galaxy; writes `out/summary.json`.

    **Arguments:**

    - `out`: the output directory.
    - `stars`: stars in the mock galaxy; `seed`: its seed.
    - `train_seed`, `n_train`, `n_test`: the training and held-out simulation sets.
    - `cache`: where simulations and trained models are kept (default `out/cache`); reuse it
      across seeds.
    - `data_dir`: the diffgal data directory (TNG yields).
    - `methods`: any of `"a"`, `"b"`, `"c"`, `"map"`.
    - `emulator_epochs`, `npe_epochs`: maximum training epochs (early stopping applies).
    - `nuts_warmup`, `nuts_samples`, `nuts_chains`: hierarchical NUTS (method c).
    - `map_steps`: Adam steps of the joint MAP.
    - `coverage_sets`, `coverage_stars`: independent mock galaxies for the 68 % coverage of
      (a) and (b) (0 skips it).
    - `show_progress`: progress bars.

    **Returns:** the summary dictionary (also written as JSON).
    """
    methods = tuple(methods)
    unknown = [m for m in methods if m not in ("a", "b", "c", "map")]
    if unknown:
        raise ValueError(
            f"`run_headline`: unknown `methods` {unknown}; pick from 'a', 'b', 'c', 'map'."
        )
    if stars < 1:
        raise ValueError(f"`run_headline`: `stars` must be >= 1; got {stars}.")
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cache = out / "cache" if cache is None else pathlib.Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    prior = ChemistryPrior()
    timings: dict[str, float] = {}
    key = jax.random.key(train_seed)
    k_sim, k_test, k_emu, k_npe = jax.random.split(key, 4)

    # 0. Networks already in the cache, loaded first so that a corrupted, foreign or mismatched
    # file fails before any simulation.
    emu_path = cache / f"emulator_{n_train}.eqx"
    npe_path = cache / f"npe_globals_{n_train}.eqx"
    emulator = posterior = None
    if "c" in methods and emu_path.is_file():
        t0 = time.perf_counter()
        emulator = load_cached(
            "run_headline", emu_path, load_emulator, x_columns=CHEMPY_COLUMNS,
            theta_columns=THETA_COLUMNS,
        )
        timings["emulator_train_s"] = time.perf_counter() - t0
    if npe_path.is_file():
        t0 = time.perf_counter()
        posterior = load_cached(
            "run_headline", npe_path, load_posterior, params=GLOBAL_NAMES,
            x_columns=SBI_CHEMPY_COLUMNS,
        )
        timings["npe_train_s"] = time.perf_counter() - t0

    # 1. Simulations (resumable shards).
    t0 = time.perf_counter()
    sims = load_training_set(
        simulate_training_set(
            k_sim,
            cache / f"sims_{n_train}",
            n_train,
            prior=prior,
            data_dir=data_dir,
            show_progress=show_progress,
        )
    )
    test = load_training_set(
        simulate_training_set(
            k_test,
            cache / f"test_{n_test}",
            n_test,
            prior=prior,
            data_dir=data_dir,
            show_progress=show_progress,
        )
    )
    timings["simulate_s"] = time.perf_counter() - t0

    # 2. Emulator (needed by method c).
    emu_report = None
    if "c" in methods:
        if emulator is None:
            t0 = time.perf_counter()
            ckpt = cache / f"emulator_{n_train}.ckpt"
            fit = fit_emulator(
                k_emu,
                sims.theta,
                sims.x,
                max_epochs=emulator_epochs,
                info={"mode": "faithful", "yields": "tng", "n_train": n_train},
                checkpoint=ckpt,
                resume=ckpt.is_file(),
                show_progress=show_progress,
            )
            emulator = fit.emulator
            save_emulator(emu_path, emulator)
            timings["emulator_train_s"] = time.perf_counter() - t0
        emu_report = emulator_accuracy(emulator, test.theta, test.x).as_dict()

    # 3. Marginal NPE of the globals.
    if posterior is None:
        t0 = time.perf_counter()
        ckpt = cache / f"npe_globals_{n_train}.ckpt"
        fit = train_npe(
            k_npe,
            sims.theta,
            sims.x[:, _OBS],
            prior=prior,
            params=GLOBAL_NAMES,
            max_epochs=npe_epochs,
            checkpoint=ckpt,
            resume=ckpt.is_file(),
            show_progress=show_progress,
        )
        posterior = fit.posterior
        save_posterior(npe_path, posterior)
        timings["npe_train_s"] = time.perf_counter() - t0

    # 4. The mock galaxy from the model.
    k_mock, k_a, k_c, k_cov = jax.random.split(jax.random.key(seed), 4)
    table = load_yields("tng", data_dir=data_dir)
    x_obs, theta_true = mock_stars(k_mock, stars, prior=prior, yields=table)
    np.savez(out / "mock.npz", x_obs=x_obs, theta=theta_true)

    # 5. Methods.
    results: dict[str, dict] = {}
    if "a" in methods or "b" in methods:
        agg = _aggregate_npe(
            k_a,
            posterior,
            x_obs,
            prior,
            n_draws=1000,
            nuts="b" in methods,
            nuts_samples=500,
        )
        for name, value in agg.items():
            if name.startswith("b_") and "b" not in methods:
                continue
            if name.startswith(("a_", "compat")) and "a" not in methods:
                continue
            results[name] = _entry(*value[:3], TRUTH, value[3] if len(value) > 3 else None)
    if "c" in methods:
        r = hierarchical_nuts(
            k_c,
            x_obs,
            emulator,
            prior=prior,
            num_warmup=nuts_warmup,
            num_samples=nuts_samples,
            num_chains=nuts_chains,
            show_progress=show_progress,
        )
        results["c_hierarchical_nuts"] = _entry(r.mean, r.cov, r.seconds, TRUTH, r.info)
    if "map" in methods:
        r = map_fit(
            k_c, x_obs, prior=prior, yields=table, steps=map_steps, show_progress=show_progress
        )
        results["map_laplace"] = _entry(r.mean, r.cov, r.seconds, TRUTH, r.info)

    # 6. Coverage over independent mock galaxies.
    coverage = None
    if coverage_sets > 0:
        hits = {"a_gaussian_product": [], "b_factorised_laplace": [], "compat_sbi_chempy": []}
        iterator = range(coverage_sets)
        if show_progress:
            from tqdm.auto import tqdm

            iterator = tqdm(iterator, desc="coverage", unit="galaxy")
        for j in iterator:
            kj = jax.random.fold_in(k_cov, j)
            xj, _ = mock_stars(jax.random.fold_in(kj, 0), coverage_stars, prior=prior, yields=table)
            agg = _aggregate_npe(
                jax.random.fold_in(kj, 1),
                posterior,
                xj,
                prior,
                n_draws=1000,
                nuts=False,
                nuts_samples=0,
            )
            for name in hits:
                mean, cov = np.asarray(agg[name][0]), np.asarray(agg[name][1])
                sd = np.sqrt(np.diag(cov))
                hits[name].append((np.abs(mean - np.asarray(TRUTH)) <= sd).tolist())
        coverage = {
            "n_sets": coverage_sets,
            "n_stars": coverage_stars,
            "nominal": 0.68,
            "fraction": {
                name: dict(zip(GLOBAL_NAMES, np.mean(np.asarray(h), 0).tolist(), strict=True))
                for name, h in hits.items()
            },
        }

    summary = {
        "n_stars": stars,
        "seed": seed,
        "train_seed": train_seed,
        "n_train": n_train,
        "n_test": n_test,
        "truth": dict(zip(GLOBAL_NAMES, TRUTH, strict=True)),
        "mock": "diffgal chemistry model, faithful mode, TNG yields, 0.05 dex noise",
        "n_failed_train_runs": sims.n_failed,
        "timings": timings,
        "emulator_accuracy": emu_report,
        "methods": results,
        "coverage": coverage,
        "sbi_chempy_reported": SBI_CHEMPY_REPORTED,
        "device": jax.devices()[0].platform,
        "dtype": str(jnp.asarray(0.0).dtype),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
