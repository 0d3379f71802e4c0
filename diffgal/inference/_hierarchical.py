"""Explicit-likelihood baselines for many stars: hierarchical NUTS and gradient MAP + Laplace.

Both treat the global parameters Lambda = (alpha_IMF, log10 N_Ia) as shared and every star's
(log10 SFE, log10 SFR_peak, x_out, T) as its own, with the observed abundances
x_ij ~ N(f(Lambda, theta_i)_j, sigma^2):

- `hierarchical_nuts`: a NumPyro model (non-centred locals z_i ~ N(0, 1), T_i ~ U(2, 12.8))
  with `f` the emulator, sampled by NUTS (the spec's §9 baseline);
- `map_fit`: the joint mode of the same posterior found with optax through the differentiable
  chemistry model itself (smooth mode), and a Laplace covariance of Lambda from the exact
  per-star Hessians, marginalised over the locals by a Schur complement (no N x N matrix).
"""

from __future__ import annotations

import time
import typing

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import ArrayLike, Float, PRNGKeyArray

from ..chemistry import (
    CHEMPY_COLUMNS,
    DEFAULT_LOG10_TAU_IA,
    SBI_CHEMPY_COLUMNS,
    THETA_COLUMNS,
    GCEOptions,
    load_yields,
)
from ..chemistry._compat import _chempy_batch
from ._emulator import Emulator
from ._prior import GLOBAL_NAMES, ChemistryPrior

__all__ = [
    "GlobalPosterior",
    "check_observations",
    "hierarchical_nuts",
    "map_fit",
    "read_star_table",
]


class GlobalPosterior(typing.NamedTuple):
    """A posterior summary of the global parameters from one method.

    **Fields:** `mean` `(2,)`, `cov` `(2, 2)`, `samples` (or `None`), `seconds` (wall time),
    and `info` (method-specific diagnostics: r-hat, ESS, divergences, loss, ...).
    """

    mean: np.ndarray
    cov: np.ndarray
    samples: np.ndarray | None
    seconds: float
    info: dict


def check_observations(
    api: str,
    x_obs,
    columns: typing.Sequence[str] = SBI_CHEMPY_COLUMNS,
    *,
    allow_nan: bool = False,
) -> np.ndarray:
    """Host-side checks of a star table `(n_star, len(columns))` with messages naming `x_obs`."""
    columns = tuple(columns)
    x_obs = np.asarray(x_obs, dtype=float)
    if x_obs.ndim != 2 or x_obs.shape[1] != len(columns):
        raise ValueError(
            f"`{api}`: `x_obs` must have shape (n_star, {len(columns)}) with columns "
            f"{', '.join(columns)}; got shape {x_obs.shape}."
        )
    if x_obs.shape[0] == 0:
        raise ValueError(f"`{api}`: `x_obs` holds no stars; pass at least one row.")
    if not allow_nan and not np.all(np.isfinite(x_obs)):
        rows = np.where(~np.all(np.isfinite(x_obs), axis=1))[0]
        raise ValueError(
            f"`{api}`: `x_obs` has NaN/inf entries in {rows.size} rows (first: {rows[:5].tolist()}"
            "); drop those stars, or use a method with a missing-data policy."
        )
    return x_obs


def _summary(samples: np.ndarray):
    return samples.mean(0), np.cov(samples.T)


def hierarchical_nuts(
    key: PRNGKeyArray,
    x_obs: Float[ArrayLike, "n_star n_obs"],
    emulator: Emulator,
    *,
    prior: ChemistryPrior | None = None,
    sigma: float = 0.05,
    x_columns: typing.Sequence[str] = SBI_CHEMPY_COLUMNS,
    num_warmup: int = 500,
    num_samples: int = 500,
    num_chains: int = 2,
    target_accept_prob: float = 0.9,
    init_globals: Float[ArrayLike, " 2"] | None = None,
    show_progress: bool = False,
) -> GlobalPosterior:
    """NUTS on the hierarchical model with the emulator as the likelihood.

    **Arguments:**

    - `key`: a `jax.random.key`.
    - `x_obs`: `(n_star, n_obs)` observed abundances in `x_columns` order.
    - `emulator`: an `Emulator` with `CHEMPY_COLUMNS` outputs.
    - `prior`: the `ChemistryPrior` (default sbi-chempy's).
    - `sigma`: the observational noise [dex].
    - `num_warmup`, `num_samples`, `num_chains`, `target_accept_prob`: NumPyro NUTS settings
      (chains run vectorised).
    - `init_globals`: a start for Lambda (default the prior mean; locals start at the prior
      median).

    **Returns:** a `GlobalPosterior` with `info` holding r-hat, bulk ESS, divergences and ESS
    per second for each global parameter.
    """
    import numpyro
    import numpyro.distributions as dist
    from numpyro.diagnostics import effective_sample_size, split_gelman_rubin
    from numpyro.infer import MCMC, NUTS, init_to_value

    prior = ChemistryPrior() if prior is None else prior
    x_obs = check_observations("hierarchical_nuts", x_obs, x_columns)
    if tuple(emulator.x_columns) != tuple(CHEMPY_COLUMNS):
        raise ValueError(
            "`hierarchical_nuts`: `emulator` must output the `CHEMPY_COLUMNS`; got "
            f"{emulator.x_columns}."
        )
    if tuple(emulator.theta_columns) != tuple(THETA_COLUMNS):
        raise ValueError(
            "`hierarchical_nuts`: `emulator` must take the `THETA_COLUMNS` "
            f"{THETA_COLUMNS} as inputs; got {emulator.theta_columns}. Train it with "
            "`fit_emulator` on a `simulate_training_set` output."
        )
    unknown = [c for c in x_columns if c not in emulator.x_columns]
    if unknown:
        raise ValueError(
            f"`hierarchical_nuts`: `x_columns` {unknown} are not outputs of `emulator`; pick "
            f"from {', '.join(emulator.x_columns)}."
        )
    cols = jnp.array([emulator.x_columns.index(c) for c in x_columns])
    n_star = x_obs.shape[0]
    dtype = emulator.theta_mean.dtype
    loc, scale = prior.loc.astype(dtype), prior.scale.astype(dtype)
    x_obs_j = jnp.asarray(x_obs, dtype)

    def model(x):
        a = numpyro.sample("imf_slope", dist.Normal(loc[0], scale[0]))
        n = numpyro.sample("log10_n_ia", dist.Normal(loc[1], scale[1]))
        with numpyro.plate("stars", n_star):
            z = numpyro.sample("z", dist.Normal(jnp.zeros(3, dtype), 1.0).to_event(1))
            t = numpyro.sample("birth_time", dist.Uniform(prior.t_low, prior.t_high))
        theta = jnp.concatenate(
            [
                jnp.broadcast_to(jnp.stack([a, n]), (n_star, 2)),
                loc[2:] + scale[2:] * z,
                t[:, None],
            ],
            axis=1,
        )
        pred = emulator(theta)[:, cols]
        numpyro.sample("x", dist.Normal(pred, sigma).to_event(1), obs=x)

    start = prior.loc[:2] if init_globals is None else jnp.asarray(init_globals)
    init = {
        "imf_slope": jnp.asarray(start[0], dtype),
        "log10_n_ia": jnp.asarray(start[1], dtype),
        "z": jnp.zeros((n_star, 3), dtype),
        "birth_time": jnp.full((n_star,), 0.5 * (prior.t_low + prior.t_high), dtype),
    }
    kernel = NUTS(
        model, target_accept_prob=target_accept_prob, init_strategy=init_to_value(values=init)
    )
    mcmc = MCMC(
        kernel,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method="vectorized",
        progress_bar=show_progress,
    )
    t0 = time.perf_counter()
    mcmc.run(key, x_obs_j)
    samples = mcmc.get_samples(group_by_chain=True)
    jax.block_until_ready(samples)
    seconds = time.perf_counter() - t0
    glob = np.stack([np.asarray(samples[n]) for n in GLOBAL_NAMES], axis=-1)  # (chain, draw, 2)
    rhat = [float(split_gelman_rubin(glob[..., i])) for i in range(2)]
    ess = [float(effective_sample_size(glob[..., i])) for i in range(2)]
    divergences = int(np.sum(np.asarray(mcmc.get_extra_fields()["diverging"])))
    flat = glob.reshape(-1, 2)
    mean, cov = _summary(flat)
    info = {
        "r_hat": dict(zip(GLOBAL_NAMES, rhat, strict=True)),
        "ess_bulk": dict(zip(GLOBAL_NAMES, ess, strict=True)),
        "ess_per_second": {n: e / seconds for n, e in zip(GLOBAL_NAMES, ess, strict=True)},
        "divergences": divergences,
        "num_warmup": num_warmup,
        "num_samples": num_samples,
        "num_chains": num_chains,
        "likelihood": "emulator",
    }
    return GlobalPosterior(mean, cov, flat, seconds, info)


# ------------------------------------------------------------------------------------------------
# MAP through the differentiable model
# ------------------------------------------------------------------------------------------------


def _theta(prior: ChemistryPrior, lam, phi):
    """Physical theta `(n, 6)` from Lambda `(2,)` and per-star phi `(n, 4)` = (z1..z3, logit T)."""
    n = phi.shape[0]
    t = prior.t_low + (prior.t_high - prior.t_low) * jax.nn.sigmoid(phi[:, 3:])
    return jnp.concatenate(
        [jnp.broadcast_to(lam, (n, 2)), prior.loc[2:] + prior.scale[2:] * phi[:, :3], t], axis=1
    )


def _star_neg_log_joint(prior, model_fn, sigma, lam, phi, x):
    """-log [p(x | Lambda, phi) p(phi)] for each star (the Lambda prior is added once)."""
    pred = model_fn(_theta(prior, lam, phi))
    lik = 0.5 * jnp.sum(((pred - x) / sigma) ** 2, axis=-1)
    z, u = phi[:, :3], phi[:, 3]
    # Standard-normal z; T uniform in its box -> density of logit(T) is sigmoid(u) sigmoid(-u).
    lp_phi = -0.5 * jnp.sum(z**2, -1) + jax.nn.log_sigmoid(u) + jax.nn.log_sigmoid(-u)
    return lik - lp_phi


def map_fit(
    key: PRNGKeyArray,
    x_obs: Float[ArrayLike, "n_star n_obs"],
    *,
    prior: ChemistryPrior | None = None,
    sigma: float = 0.05,
    x_columns: typing.Sequence[str] = SBI_CHEMPY_COLUMNS,
    yields="tng",
    data_dir=None,
    mode: str = "smooth",
    emulator: Emulator | None = None,
    steps: int = 400,
    learning_rate: float = 0.05,
    n_starts: int = 4,
    show_progress: bool = False,
) -> GlobalPosterior:
    """Joint MAP of Lambda and every star's locals with optax, and a Laplace covariance.

    **Arguments:**

    - `key`: a `jax.random.key` (random starts of the per-star birth times).
    - `x_obs`: `(n_star, n_obs)` observed abundances.
    - `prior`, `sigma`, `x_columns`: as for `hierarchical_nuts`.
    - `yields`, `data_dir`, `mode`: the chemistry model (`mode="smooth"` is differentiable);
      or pass `emulator` to use it instead of the model.
    - `steps`, `learning_rate`: Adam on the unconstrained parameters (a cosine decay).
    - `n_starts`: birth-time starts tried per star before the joint fit (the abundances of a
      star constrain T weakly, so a single start can land in a poor local mode).

    **Returns:** a `GlobalPosterior` whose `cov` is the Laplace covariance of Lambda, with the
    locals marginalised through the exact block-arrow Hessian.
    """
    prior = ChemistryPrior() if prior is None else prior
    x_obs = check_observations("map_fit", x_obs, x_columns)
    t0 = time.perf_counter()  # wall time includes compilation and the start search
    dtype = jnp.asarray(0.0).dtype
    cols = jnp.array([CHEMPY_COLUMNS.index(c) for c in x_columns])
    if emulator is not None:

        def model_fn(theta):
            return emulator(theta)[:, cols]

        source = "emulator"
    else:
        table = load_yields(yields, data_dir=data_dir) if isinstance(yields, str) else yields
        options = GCEOptions.from_mode(mode)
        tau = jnp.full((1,), DEFAULT_LOG10_TAU_IA, dtype)

        def model_fn(theta):
            x, _ = _chempy_batch(
                theta, jnp.broadcast_to(tau, theta.shape[:1]), table, options, None
            )
            return x[:, cols]

        source = f"model ({mode})"
    x = jnp.asarray(x_obs, dtype)
    n_star = x.shape[0]
    lam0 = prior.loc[:2].astype(dtype)

    lam_prior = prior.loc[:2].astype(dtype), prior.scale[:2].astype(dtype)

    def per_star(v, xi):  # v = (Lambda, phi_i) of one star
        return _star_neg_log_joint(prior, model_fn, sigma, v[:2], v[None, 2:], xi[None])[0]

    # One compiled per-star value-and-gradient serves the optimiser (summed over stars) and the
    # finite-difference Hessian below, so the model's gradient is compiled once.
    star_vg = jax.jit(jax.vmap(jax.value_and_grad(per_star)))

    def stack(lam, phi):
        return jnp.concatenate([jnp.broadcast_to(lam, (n_star, 2)), phi], 1)

    # Per-star starts: try n_starts birth times at the prior Lambda and z = 0, keep the best.
    t_grid = jnp.linspace(-2.0, 2.0, n_starts, dtype=dtype)
    cand = jnp.stack(
        [
            jnp.concatenate([jnp.zeros((n_star, 3), dtype), jnp.full((n_star, 1), u, dtype)], 1)
            for u in t_grid
        ]
    )
    costs = jnp.stack([star_vg(stack(lam0, c), x)[0] for c in cand])  # (n_starts, n_star)
    phi0 = cand[jnp.argmin(costs, axis=0), jnp.arange(n_star)]
    del key  # deterministic starts; the key is kept for API symmetry with the samplers

    schedule = optax.cosine_decay_schedule(learning_rate, steps, alpha=1e-2)
    optimiser = optax.adam(schedule)

    @jax.jit
    def update(params, opt_state, values, grads):
        lam, _ = params
        z = (lam - lam_prior[0]) / lam_prior[1]
        value = jnp.sum(values) + 0.5 * jnp.sum(z**2)
        g = (jnp.sum(grads[:, :2], 0) + z / lam_prior[1], grads[:, 2:])
        updates, opt_state = optimiser.update(g, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    params = (lam0, phi0)
    opt_state = optimiser.init(params)
    losses = []
    bar = None
    if show_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc="map", unit="step")
    for _ in range(steps):
        values, grads = star_vg(stack(*params), x)
        params, opt_state, value = update(params, opt_state, values, grads)
        losses.append(float(value))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    lam, phi = params

    # Per-star 6 x 6 Hessians by central differences of the exact gradient: second derivatives
    # of the smooth chemistry model in log10 SFR_peak and T are NaN under autodiff (both
    # forward-over-reverse and reverse-over-reverse; noted for diffgal.chemistry).
    eps = 1e-3 if dtype == jnp.float64 else 1e-2
    v = stack(lam, phi)
    basis = jnp.eye(6, dtype=dtype) * eps
    hess = jnp.stack(
        [(star_vg(v + e, x)[1] - star_vg(v - e, x)[1]) / (2 * eps) for e in basis], axis=1
    )  # (n_star, 6, 6), row k = d grad / d v_k
    hess = 0.5 * (hess + jnp.swapaxes(hess, 1, 2))
    h_ll = jnp.sum(hess[:, :2, :2], 0) + jnp.diag(1.0 / lam_prior[1] ** 2)
    h_lp, h_pp = hess[:, :2, 2:], hess[:, 2:, 2:]
    schur = jnp.einsum("nij,njk,nlk->il", h_lp, jnp.linalg.inv(h_pp), h_lp)
    precision = np.asarray(h_ll - schur)
    eig = np.linalg.eigvalsh(precision)
    if not np.all(eig > 0):
        raise FloatingPointError(
            "`map_fit`: the Laplace precision of Lambda is not positive definite (eigenvalues "
            f"{eig.tolist()}); the optimiser did not reach a mode. Raise `steps` or lower "
            "`learning_rate`."
        )
    cov = np.linalg.inv(precision)
    seconds = time.perf_counter() - t0
    info = {
        "source": source,
        "hessian": "central differences of the autodiff gradient",
        "steps": steps,
        "final_loss": losses[-1],
        "loss_drop_last_10pct": losses[int(0.9 * steps)] - losses[-1],
    }
    return GlobalPosterior(np.asarray(lam), cov, None, seconds, info)


def read_star_table(path, columns: typing.Sequence[str] = SBI_CHEMPY_COLUMNS) -> np.ndarray:
    """Read observed abundances `(n_star, len(columns))` from a CSV, `.npy` or `.npz` file.

    - CSV: a header row naming the columns (any order, extra columns ignored), e.g.
      `[C/Fe],[Fe/H],[He/Fe],[Mg/Fe],[N/Fe],[Ne/Fe],[O/Fe],[Si/Fe]`; empty cells read as NaN.
    - `.npy`: an array whose columns are `columns` in order; `.npz`: the same under `x_obs`.

    Missing columns, a wrong column count, NaN entries and an empty table raise `ValueError`
    (missing-data policy: stars with missing abundances must be dropped before inference).
    """
    import pathlib

    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"`read_star_table`: {str(path)!r} does not exist.")
    if path.suffix == ".npy":
        table = np.load(path)
    elif path.suffix == ".npz":
        with np.load(path) as f:
            if "x_obs" not in f:
                raise ValueError(
                    f"`read_star_table`: {str(path)!r} has no `x_obs` array (found "
                    f"{sorted(f.files)})."
                )
            table = f["x_obs"]
    else:
        with open(path) as f:
            header = [h.strip() for h in f.readline().strip().split(",")]
            has_rows = any(line.strip() for line in f)
        missing = [c for c in columns if c not in header]
        if missing:
            raise ValueError(
                f"`read_star_table`: {str(path)!r} lacks the columns {missing}; its header is "
                f"{header}. Name the columns {', '.join(columns)} in the first row."
            )
        if has_rows:
            data = np.genfromtxt(path, delimiter=",", skip_header=1, dtype=float, ndmin=2)
        else:
            data = np.zeros((0, len(header)))
        table = data[:, [header.index(c) for c in columns]]
    return check_observations("read_star_table", table, columns)
