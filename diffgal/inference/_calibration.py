"""Calibration of a trained posterior on held-out simulations: SBC, HPD coverage and TARP.

`calibrate` draws `n_draws` samples for each of `n_test` held-out pairs (theta*, x* + noise),
then runs `sbc_ranks` / `check_sbc`, `expected_coverage` (from the flow's own `log_prob`),
`central_interval_coverage` and `run_tarp`, and optionally writes the three plots.
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike, Float, PRNGKeyArray

from ..chemistry import THETA_COLUMNS
from ._diagnostics import (
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
from ._npe import Posterior

__all__ = ["calibrate"]

LEVELS = (0.5, 0.68, 0.95)


def _check_pairs(posterior: Posterior, theta: np.ndarray, x: np.ndarray) -> None:
    """Host-side checks of the held-out pairs, with messages naming `theta` and `x`."""
    n_theta, n_obs = len(THETA_COLUMNS), len(posterior.x_columns)
    if theta.ndim != 2 or theta.shape[1] != n_theta or theta.shape[0] == 0:
        raise ValueError(
            f"`calibrate`: `theta` must have shape (n, {n_theta}) with n >= 1 and all the columns "
            f"{', '.join(THETA_COLUMNS)} (the posterior's {', '.join(posterior.params)} are "
            f"selected from them); got shape {theta.shape}."
        )
    if x.ndim != 2 or x.shape != (theta.shape[0], n_obs):
        raise ValueError(
            f"`calibrate`: `x` must have shape ({theta.shape[0]}, {n_obs}): one row per row of "
            f"`theta`, columns {', '.join(posterior.x_columns)}; got shape {x.shape}. Pass the "
            "pairs of one simulation set, in the posterior's `x_columns` order."
        )
    bad = ~np.all(np.isfinite(theta), axis=1)
    if bad.any():
        raise ValueError(
            f"`calibrate`: `theta` has NaN/inf entries in {int(bad.sum())} rows (first: "
            f"{np.where(bad)[0][:5].tolist()}); drop those pairs (failed runs?)."
        )
    bad = ~np.all(np.isfinite(x), axis=1)
    if bad.any():
        raise ValueError(
            f"`calibrate`: `x` has NaN/inf entries in {int(bad.sum())} rows (first: "
            f"{np.where(bad)[0][:5].tolist()}); drop those pairs (failed runs?)."
        )
    prior = posterior.prior
    outside = ~np.asarray(prior.in_support(theta))
    if outside.any():
        raise ValueError(
            f"`calibrate`: {int(outside.sum())} rows of `theta` lie outside the posterior's prior "
            f"support (birth time in [{prior.t_low}, {prior.t_high}] Gyr; first: "
            f"{np.where(outside)[0][:5].tolist()}); calibrate on draws from `posterior.prior`."
        )


def calibrate(
    key: PRNGKeyArray,
    posterior: Posterior,
    theta: Float[ArrayLike, "n 6"],
    x: Float[ArrayLike, "n n_obs"],
    *,
    noise: float | None = None,
    n_draws: int = 1000,
    plots: str | pathlib.Path | None = None,
) -> dict:
    """SBC, expected coverage and TARP of `posterior` on held-out pairs.

    **Arguments:**

    - `key`: a `jax.random.key` (noise, draws, TARP references).
    - `posterior`: a trained `Posterior`.
    - `theta`: `(n, 6)` held-out parameters (all columns; the posterior's are selected).
    - `x`: `(n, n_obs)` noise-free observables in `posterior.x_columns` order.
    - `noise`: noise [dex] added to `x` (default: the level the posterior was trained with).
    - `n_draws`: posterior draws per pair.
    - `plots`: a folder for `sbc_ranks.png`, `coverage.png` and `tarp.png` (optional).

    **Returns:** a JSON-able dictionary: KS and chi-square p-values per parameter, HPD and
    central-interval coverage at 50/68/95 %, TARP ATC and KS p-value, and pass flags.
    """
    config = dict(posterior.config)
    noise = config.get("noise", 0.0) if noise is None else noise
    theta = np.asarray(theta, dtype=float)
    x = np.asarray(x, dtype=float)
    _check_pairs(posterior, theta, x)
    idx = [THETA_COLUMNS.index(p) for p in posterior.params]
    truths = theta[:, idx]
    dtype = posterior.u_mean.dtype
    k_noise, k_draw, k_tarp = jax.random.split(key, 3)
    x_obs = jnp.asarray(x + noise * np.asarray(jax.random.normal(k_noise, x.shape)), dtype)
    draws = posterior.sample_per_star(k_draw, n_draws, x_obs)  # (n, L, d)
    lp_draws = jax.lax.map(
        lambda a: posterior.log_prob(a[0], a[1]), (draws, x_obs), batch_size=64
    )  # (n, L)
    lp_truth = posterior.log_prob(jnp.asarray(truths, dtype), x_obs)
    ranks = sbc_ranks(draws, truths)
    sbc = check_sbc(ranks, n_draws)
    cov = expected_coverage(lp_draws, lp_truth, LEVELS)
    central = np.asarray(central_interval_coverage(draws, truths, LEVELS))
    tarp = run_tarp(k_tarp, draws, truths)
    tarp_check = check_tarp(tarp)
    hpd = {f"{lev:.2f}": float(c) for lev, c in zip(LEVELS, np.asarray(cov.coverage), strict=True)}
    report = {
        "n_test": int(theta.shape[0]),
        "n_draws": int(n_draws),
        "noise": float(noise),
        "params": list(posterior.params),
        "sbc_ks_pvalue": dict(
            zip(posterior.params, np.asarray(sbc.ks_pvalues).tolist(), strict=True)
        ),
        "sbc_chi2_pvalue": dict(
            zip(posterior.params, np.asarray(sbc.chi2_pvalues).tolist(), strict=True)
        ),
        "sbc_pass": bool(sbc.passed(0.01)),
        "hpd_coverage": hpd,
        "hpd_coverage_within_0.05": bool(all(abs(c - float(k)) <= 0.05 for k, c in hpd.items())),
        "central_coverage": {
            p: {f"{lev:.2f}": float(central[i, j]) for i, lev in enumerate(LEVELS)}
            for j, p in enumerate(posterior.params)
        },
        "tarp_atc": float(tarp.atc),
        "tarp_ks_pvalue": float(tarp.ks_pvalue),
        "tarp_diagnosis": tarp_check.diagnosis,
    }
    if plots is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        folder = pathlib.Path(plots)
        folder.mkdir(parents=True, exist_ok=True)
        fig = plot_sbc_ranks(ranks, n_draws, names=list(posterior.params))
        fig.savefig(folder / "sbc_ranks.png", dpi=110)
        plt.close(fig)
        grid, curve = cov.curve(101)
        fig = plot_coverage(grid, curve)
        fig.savefig(folder / "coverage.png", dpi=110)
        plt.close(fig)
        fig = plot_tarp(tarp)
        fig.savefig(folder / "tarp.png", dpi=110)
        plt.close(fig)
    return report
