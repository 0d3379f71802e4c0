"""Neural posterior estimation with flowjax: a conditional flow q(theta | x).

The flow lives in a standardised, unconstrained space: theta is mapped through the prior's
support bijection (the bounded birth time through a logit) and z-scored, the observations are
z-scored, and samples are mapped back, so they never leave the prior support. `log_prob`
includes both Jacobians, so it is a density in physical units.

`train_npe` fits the flow by maximum likelihood on simulated pairs with fresh Gaussian noise
(0.05 dex by default) added to the abundances. `params` selects the columns to infer: all six,
or for example only the global ones (`GLOBAL_NAMES`), which gives the marginal posterior
needed by the many-star aggregation (marginals of a joint flow have no closed form).
"""

from __future__ import annotations

import os
import pathlib
import time
import typing

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import paramax
from flowjax.distributions import Normal
from flowjax.flows import coupling_flow, masked_autoregressive_flow
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._serialise import read_header, read_leaves, write_model
from ..chemistry import SBI_CHEMPY_COLUMNS, THETA_COLUMNS
from ._prior import ChemistryPrior
from ._training import fit_minibatch

__all__ = ["Posterior", "load_posterior", "save_posterior", "train_npe"]

FORMAT = "diffgal.inference.posterior/1"

_ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu, "gelu": jax.nn.gelu}
_FLOWS = {"maf": masked_autoregressive_flow, "coupling": coupling_flow}


def _build_embedding(key, n_obs, embedding, dtype):
    """An MLP summary network x -> R^d, or None; `embedding` = (d, width, depth) or None."""
    if embedding is None:
        return None
    d, width, depth = embedding
    return eqx.nn.MLP(n_obs, d, width, depth, activation=jax.nn.gelu, key=key, dtype=dtype)


def _check_embedding(embedding):
    if embedding is None:
        return None
    try:
        d, width, depth = (int(v) for v in embedding)
    except (TypeError, ValueError):
        raise ValueError(
            "`train_npe`: `embedding` must be None or (output_dim, width, depth), e.g. "
            f"(16, 64, 2); got {embedding!r}."
        ) from None
    if d < 1 or width < 1 or depth < 1:
        raise ValueError(
            f"`train_npe`: every entry of `embedding` (output_dim, width, depth) must be >= 1; "
            f"got {embedding!r}."
        )
    return (d, width, depth)


def _embed(embedding, xs):
    """Apply the summary network over the last axis (any leading batch shape)."""
    if embedding is None:
        return xs
    flat = xs.reshape(-1, xs.shape[-1])
    out = jax.vmap(embedding)(flat)
    return out.reshape(*xs.shape[:-1], out.shape[-1])


def _build_flow(key, dim, cond_dim, flow, flow_layers, nn_width, nn_depth, activation, dtype):
    if flow not in _FLOWS:
        raise ValueError(f"`train_npe`: unknown `flow` {flow!r}; pick one of {', '.join(_FLOWS)}.")
    if activation not in _ACTIVATIONS:
        raise ValueError(
            f"`train_npe`: unknown `activation` {activation!r}; pick one of "
            f"{', '.join(_ACTIVATIONS)}."
        )
    return _FLOWS[flow](
        key,
        base_dist=Normal(jnp.zeros(dim, dtype)),
        cond_dim=cond_dim,
        flow_layers=flow_layers,
        nn_width=nn_width,
        nn_depth=nn_depth,
        nn_activation=_ACTIVATIONS[activation],
    )


@typing.final
class Posterior(eqx.Module):
    """An amortised posterior q(theta[params] | x) in physical units.

    **Fields:**

    - `flow`: the conditional flowjax distribution on standardised unconstrained parameters.
    - `prior`: the `ChemistryPrior` whose support bijection maps the flow's space back.
    - `u_mean`, `u_std`, `x_mean`, `x_std`: the z-scoring of unconstrained theta and of x.
    - `params`: names of the inferred columns; `x_columns`: names of the observed columns.
    - `config`: static `(key, value)` pairs (architecture, noise level, ...).
    - `embedding`: an optional summary network (an `eqx.nn.MLP`) applied to the z-scored
      observations before they condition the flow, trained jointly with it; `None` conditions
      on the observations directly.
    """

    flow: typing.Any
    prior: ChemistryPrior
    u_mean: Float[Array, " n_param"]
    u_std: Float[Array, " n_param"]
    x_mean: Float[Array, " n_obs"]
    x_std: Float[Array, " n_obs"]
    params: tuple[str, ...] = eqx.field(static=True)
    x_columns: tuple[str, ...] = eqx.field(static=True)
    config: tuple[tuple[str, typing.Any], ...] = eqx.field(static=True)
    embedding: typing.Any = None

    @property
    def _has_time(self) -> bool:
        return "birth_time" in self.params

    def _to_u(self, theta):
        if not self._has_time:
            return theta
        j = self.params.index("birth_time")
        lo, hi = self.prior.t_low, self.prior.t_high
        s = (theta[..., j] - lo) / (hi - lo)
        return theta.at[..., j].set(jnp.log(s) - jnp.log1p(-s))

    def _from_u(self, u):
        if not self._has_time:
            return u
        j = self.params.index("birth_time")
        lo, hi = self.prior.t_low, self.prior.t_high
        return u.at[..., j].set(lo + (hi - lo) * jax.nn.sigmoid(u[..., j]))

    def _log_det_to_u(self, theta):
        if not self._has_time:
            return jnp.zeros(theta.shape[:-1], theta.dtype)
        j = self.params.index("birth_time")
        lo, hi = self.prior.t_low, self.prior.t_high
        s = (theta[..., j] - lo) / (hi - lo)
        return -jnp.log(hi - lo) - jnp.log(s) - jnp.log1p(-s)

    def _check_x(self, api, x):
        x = jnp.asarray(x)
        n = len(self.x_columns)
        if x.ndim == 0 or x.shape[-1] != n:
            raise ValueError(
                f"`Posterior.{api}`: `condition` must have a last axis of {n} observed columns "
                f"({', '.join(self.x_columns)}); got shape {x.shape}."
            )
        x = eqx.error_if(
            x,
            ~jnp.all(jnp.isfinite(x)),
            f"`Posterior.{api}`: `condition` holds NaN or inf; drop stars with missing "
            "abundances (this posterior was trained on complete rows).",
        )
        return (x - self.x_mean) / self.x_std

    def log_prob(
        self, theta: Float[ArrayLike, "*batch n_param"], condition: Float[ArrayLike, "*cb n_obs"]
    ) -> Float[Array, "*batch"]:
        """log q(theta | condition) in physical units; `-inf` outside the prior support.

        Leading dimensions of `theta` and `condition` broadcast (flowjax semantics).
        """
        theta = jnp.asarray(theta)
        if theta.ndim == 0 or theta.shape[-1] != len(self.params):
            raise ValueError(
                f"`Posterior.log_prob`: `theta` must have a last axis of {len(self.params)} "
                f"({', '.join(self.params)}); got shape {theta.shape}."
            )
        xs = self._check_x("log_prob", condition)
        if self._has_time:
            j = self.params.index("birth_time")
            t = theta[..., j]
            inside = (t > self.prior.t_low) & (t < self.prior.t_high)
            mid = 0.5 * (self.prior.t_low + self.prior.t_high)
            theta = theta.at[..., j].set(jnp.where(inside, t, mid))
        u = self._to_u(theta)
        s = (u - self.u_mean) / self.u_std
        lp = (
            paramax.unwrap(self.flow).log_prob(s, _embed(self.embedding, xs))
            - jnp.sum(jnp.log(self.u_std))
            + self._log_det_to_u(theta)
        )
        if self._has_time:
            lp = jnp.where(inside, lp, -jnp.inf)
        return lp

    def sample(
        self,
        key: PRNGKeyArray,
        sample_shape: tuple[int, ...],
        condition: Float[ArrayLike, "*cb n_obs"],
    ) -> Float[Array, "*sample_shape *cb n_param"]:
        """Draw `sample_shape` samples for each condition: shape `sample_shape + cb + (d,)`."""
        xs = self._check_x("sample", condition)
        cond = _embed(self.embedding, xs)
        s = paramax.unwrap(self.flow).sample(key, tuple(sample_shape), condition=cond)
        return self._from_u(self.u_mean + self.u_std * s)

    def sample_per_star(
        self, key: PRNGKeyArray, n: int, condition: Float[ArrayLike, "n_star n_obs"]
    ) -> Float[Array, "n_star n n_param"]:
        """`n` draws for each of many stars, star-major, computed star by star (bounded memory)."""
        condition = jnp.asarray(condition)
        keys = jax.random.split(key, condition.shape[0])
        return jax.lax.map(
            lambda kx: self.sample(kx[0], (n,), kx[1]), (keys, condition), batch_size=64
        )

    def header(self) -> dict:
        return {
            "format": FORMAT,
            "params": list(self.params),
            "x_columns": list(self.x_columns),
            "config": dict(self.config),
            "prior": {
                "loc": np.asarray(self.prior.loc).tolist(),
                "scale": np.asarray(self.prior.scale).tolist(),
                "t_low": self.prior.t_low,
                "t_high": self.prior.t_high,
            },
            "dtype": str(self.u_mean.dtype),
        }


def _skeleton(header: dict) -> Posterior:
    cfg = header["config"]
    dtype = jnp.dtype(header["dtype"])
    dim, n_obs = len(header["params"]), len(header["x_columns"])
    embedding_spec = cfg.get("embedding")
    embedding_spec = None if embedding_spec is None else tuple(embedding_spec)
    cond_dim = n_obs if embedding_spec is None else embedding_spec[0]
    embedding = _build_embedding(jax.random.key(1), n_obs, embedding_spec, dtype)
    flow = _build_flow(
        jax.random.key(0),
        dim,
        cond_dim,
        cfg["flow"],
        cfg["flow_layers"],
        cfg["nn_width"],
        cfg["nn_depth"],
        cfg["activation"],
        dtype,
    )
    return Posterior(
        flow=flow,
        prior=ChemistryPrior(**header["prior"]),
        u_mean=jnp.zeros(dim, dtype),
        u_std=jnp.ones(dim, dtype),
        x_mean=jnp.zeros(n_obs, dtype),
        x_std=jnp.ones(n_obs, dtype),
        params=tuple(header["params"]),
        x_columns=tuple(header["x_columns"]),
        config=tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in cfg.items())),
        embedding=embedding,
    )


def save_posterior(path: str | os.PathLike, posterior: Posterior) -> pathlib.Path:
    """Write a `Posterior` as a JSON header plus its leaves."""
    return write_model(path, posterior.header(), posterior)


def load_posterior(path: str | os.PathLike) -> Posterior:
    """Read a file written by `save_posterior`; a foreign or corrupted file raises."""
    header, payload = read_header(path, api="load_posterior", format=FORMAT)
    return read_leaves(
        payload, _skeleton(header), api="load_posterior", path=path, dtype=header.get("dtype")
    )


def _nll(model, s, xs):
    flow, embedding = model
    return -jnp.mean(paramax.unwrap(flow).log_prob(s, _embed(embedding, xs)))


class NPEFit(typing.NamedTuple):
    """What `train_npe` returns: the `posterior` and the training `history`."""

    posterior: Posterior
    history: dict


def train_npe(
    key: PRNGKeyArray,
    theta: Float[ArrayLike, "n 6"],
    x: Float[ArrayLike, "n n_obs"],
    *,
    prior: ChemistryPrior | None = None,
    params: typing.Sequence[str] = THETA_COLUMNS,
    x_columns: typing.Sequence[str] = SBI_CHEMPY_COLUMNS,
    noise: float = 0.05,
    flow: str = "maf",
    flow_layers: int = 5,
    nn_width: int = 64,
    nn_depth: int = 2,
    activation: str = "tanh",
    embedding: typing.Sequence[int] | None = None,
    learning_rate: float = 1e-3,
    learning_rate_end: float | None = 1e-5,
    batch_size: int = 256,
    max_epochs: int = 100,
    patience: int = 30,
    val_fraction: float = 0.1,
    clip_norm: float | None = 5.0,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    show_progress: bool = True,
) -> NPEFit:
    """Train an amortised posterior q(theta[params] | x + noise) on simulated pairs.

    **Arguments:**

    - `key`: a `jax.random.key` (noise, initialisation, split, batches).
    - `theta`: `(N, 6)` parameters in `THETA_COLUMNS` order, drawn from `prior`.
    - `x`: `(N, n_obs)` noise-free observables in `x_columns` order (pick the columns of a
      `chempy_tng` output with `diffgal.chemistry.CHEMPY_COLUMNS.index`).
    - `prior`: the `ChemistryPrior` the pairs were drawn from (its support bounds the samples).
    - `params`: the columns to infer (default all six; `GLOBAL_NAMES` for the marginal of the
      global parameters).
    - `noise`: the standard deviation [dex] of the Gaussian noise added to `x` (one draw per
      pair); 0 trains on clean data.
    - `flow`, `flow_layers`, `nn_width`, `nn_depth`, `activation`: the flowjax flow
      (`"maf"` or `"coupling"`; sbi-chempy's is `"maf"`, 4 layers, width 8, depth 2, tanh).
    - `embedding`: `None` (condition on the z-scored observations), or `(output_dim, width,
      depth)` for a GELU MLP summary network trained jointly with the flow (useful for many
      or redundant observables).
    - `learning_rate`, `learning_rate_end`, `batch_size`, `max_epochs`, `patience`,
      `val_fraction`, `clip_norm`: Adam with cosine decay and early stopping on the validation
      negative log-likelihood.
    - `checkpoint`, `resume`: per-epoch checkpoint and exact resume.
    - `show_progress`: a tqdm bar over epochs.

    **Returns:** an `NPEFit` `(posterior, history)`.
    """
    prior = ChemistryPrior() if prior is None else prior
    params = tuple(params)
    unknown = [p for p in params if p not in THETA_COLUMNS]
    if unknown or not params:
        raise ValueError(
            f"`train_npe`: `params` must be a non-empty subset of {THETA_COLUMNS}; got {params}."
        )
    theta = np.asarray(theta, dtype=float)
    x = np.asarray(x, dtype=float)
    if theta.ndim != 2 or theta.shape[1] != 6:
        raise ValueError(f"`train_npe`: `theta` must have shape (N, 6); got {theta.shape}.")
    if x.ndim != 2 or x.shape != (theta.shape[0], len(x_columns)):
        raise ValueError(
            f"`train_npe`: `x` must have shape ({theta.shape[0]}, {len(x_columns)}) (columns "
            f"{', '.join(x_columns)}); got {x.shape}."
        )
    bad = ~(np.all(np.isfinite(theta), 1) & np.all(np.isfinite(x), 1))
    if bad.any():
        raise ValueError(
            f"`train_npe`: {int(bad.sum())} rows are not finite (failed runs?); drop them first."
        )
    outside = ~np.asarray(prior.in_support(theta))
    if outside.any():
        raise ValueError(
            f"`train_npe`: {int(outside.sum())} rows of `theta` lie outside the prior support "
            f"(birth time in [{prior.t_low}, {prior.t_high}] Gyr); simulate from `prior`."
        )
    if noise < 0:
        raise ValueError(f"`train_npe`: `noise` must be >= 0 dex; got {noise}.")
    embedding = _check_embedding(embedding)
    dtype = jnp.asarray(0.0).dtype
    k_noise, k_flow, k_fit = jax.random.split(key, 3)
    k_flow, k_embed = jax.random.split(k_flow)
    # Scalers of the noisy observations, from one noise draw; training draws fresh noise for
    # every mini-batch (`augment`), so the flow cannot fit one noise realisation.
    x_noisy = x + noise * np.asarray(jax.random.normal(k_noise, x.shape, dtype))
    idx = [THETA_COLUMNS.index(p) for p in params]
    config = {
        "flow": flow,
        "flow_layers": int(flow_layers),
        "nn_width": int(nn_width),
        "nn_depth": int(nn_depth),
        "activation": activation,
        "noise": float(noise),
    }
    if embedding is not None:
        config["embedding"] = embedding
    cond_dim = len(x_columns) if embedding is None else embedding[0]
    shell = Posterior(
        flow=_build_flow(
            k_flow,
            len(params),
            cond_dim,
            flow,
            flow_layers,
            nn_width,
            nn_depth,
            activation,
            dtype,
        ),
        prior=prior,
        u_mean=jnp.zeros(len(params), dtype),
        u_std=jnp.ones(len(params), dtype),
        x_mean=jnp.zeros(len(x_columns), dtype),
        x_std=jnp.ones(len(x_columns), dtype),
        params=params,
        x_columns=tuple(x_columns),
        config=tuple(sorted(config.items())),
        embedding=_build_embedding(k_embed, len(x_columns), embedding, dtype),
    )
    u = np.asarray(shell._to_u(jnp.asarray(theta[:, idx])))
    u_mean, u_std = u.mean(0), u.std(0)
    x_mean, x_std = x_noisy.mean(0), x_noisy.std(0)
    s = jnp.asarray((u - u_mean) / u_std, dtype)
    x_clean = jnp.asarray(x, dtype)
    xm, xsd = jnp.asarray(x_mean, dtype), jnp.asarray(x_std, dtype)

    def augment(k, s_batch, x_batch):
        noisy = x_batch + noise * jax.random.normal(k, x_batch.shape, x_batch.dtype)
        return s_batch, (noisy - xm) / xsd

    t0 = time.perf_counter()
    (flow_fit, embedding_fit), history = fit_minibatch(
        k_fit,
        (shell.flow, shell.embedding),
        _nll,
        (s, x_clean),
        api="train_npe",
        learning_rate=learning_rate,
        learning_rate_end=learning_rate_end,
        batch_size=int(batch_size),
        max_epochs=int(max_epochs),
        patience=int(patience),
        val_fraction=val_fraction,
        clip_norm=clip_norm,
        augment=augment,
        settings={
            **config,
            **({"embedding": list(embedding)} if embedding is not None else {}),
            "params": list(params),
            "x_columns": list(x_columns),
        },
        checkpoint=checkpoint,
        resume=resume,
        show_progress=show_progress,
        desc="npe",
    )
    history["seconds"] = time.perf_counter() - t0
    posterior = Posterior(
        flow=flow_fit,
        prior=prior,
        u_mean=jnp.asarray(u_mean, dtype),
        u_std=jnp.asarray(u_std, dtype),
        x_mean=jnp.asarray(x_mean, dtype),
        x_std=jnp.asarray(x_std, dtype),
        params=params,
        x_columns=tuple(x_columns),
        config=tuple(sorted(config.items())),
        embedding=embedding_fit,
    )
    return NPEFit(posterior, history)
