"""A neural emulator of the chemistry model: theta (6) -> the 9 `chempy_tng` abundances.

The network works on standardised inputs and outputs; the scalers are fields of the module, so
`emulator(theta)` takes and returns physical units. `fit_emulator` trains it with optax on
mini-batches (one jitted epoch of `lax.scan` steps), keeps the best validation epoch, stops
early, checkpoints every epoch and resumes. Files are a JSON header plus
`eqx.tree_serialise_leaves`.
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
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._serialise import read_header, read_leaves, write_model
from ..chemistry import CHEMPY_COLUMNS, THETA_COLUMNS
from ._training import fit_minibatch

__all__ = [
    "Emulator",
    "EmulatorAccuracy",
    "EmulatorFit",
    "emulator_accuracy",
    "fit_emulator",
    "load_emulator",
    "save_emulator",
]

FORMAT = "diffgal.inference.emulator/1"

_ACTIVATIONS: dict[str, typing.Callable] = {
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "softplus": jax.nn.softplus,
    "relu": jax.nn.relu,
}


@typing.final
class Emulator(eqx.Module):
    """An MLP emulator with its input and output standardisation.

    **Fields:**

    - `layers`: the `eqx.nn.Linear` layers.
    - `theta_mean`, `theta_std`, `x_mean`, `x_std`: the scalers.
    - `width_sizes`, `activation`: the architecture (static).
    - `theta_columns`, `x_columns`: column names of inputs and outputs.
    - `info`: static `(key, value)` pairs recorded at training (mode, yield set, ...).
    """

    layers: tuple[eqx.nn.Linear, ...]
    theta_mean: Float[Array, " n_in"]
    theta_std: Float[Array, " n_in"]
    x_mean: Float[Array, " n_out"]
    x_std: Float[Array, " n_out"]
    width_sizes: tuple[int, ...] = eqx.field(static=True)
    activation: str = eqx.field(static=True)
    theta_columns: tuple[str, ...] = eqx.field(static=True)
    x_columns: tuple[str, ...] = eqx.field(static=True)
    info: tuple[tuple[str, str], ...] = eqx.field(static=True)

    def __init__(
        self,
        *,
        width_sizes: typing.Sequence[int] = (128, 128),
        activation: str = "gelu",
        theta_columns: typing.Sequence[str] = THETA_COLUMNS,
        x_columns: typing.Sequence[str] = CHEMPY_COLUMNS,
        theta_mean=None,
        theta_std=None,
        x_mean=None,
        x_std=None,
        info: dict | typing.Sequence[tuple[str, str]] = (),
        dtype=None,
        key: PRNGKeyArray,
    ):
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"`Emulator`: unknown `activation` {activation!r}; pick one of "
                f"{', '.join(_ACTIVATIONS)}."
            )
        width_sizes = tuple(int(w) for w in width_sizes)
        if not width_sizes or min(width_sizes) < 1:
            raise ValueError(f"`Emulator`: `width_sizes` must be positive ints; got {width_sizes}.")
        n_in, n_out = len(theta_columns), len(x_columns)
        dtype = jnp.asarray(0.0).dtype if dtype is None else dtype
        sizes = (n_in, *width_sizes, n_out)
        keys = jax.random.split(key, len(sizes) - 1)
        pairs = zip(sizes[:-1], sizes[1:], keys, strict=True)
        self.layers = tuple(eqx.nn.Linear(a, b, key=k, dtype=dtype) for a, b, k in pairs)

        def vec(v, n, fill):
            return jnp.full((n,), fill, dtype) if v is None else jnp.asarray(v, dtype)

        self.theta_mean = vec(theta_mean, n_in, 0.0)
        self.theta_std = vec(theta_std, n_in, 1.0)
        self.x_mean = vec(x_mean, n_out, 0.0)
        self.x_std = vec(x_std, n_out, 1.0)
        self.width_sizes = width_sizes
        self.activation = activation
        self.theta_columns = tuple(theta_columns)
        self.x_columns = tuple(x_columns)
        info = info.items() if isinstance(info, dict) else info
        self.info = tuple((str(k), str(v)) for k, v in info)

    def normalised(self, z: Float[Array, " n_in"]) -> Float[Array, " n_out"]:
        """The network on standardised coordinates (one point)."""
        act = _ACTIVATIONS[self.activation]
        for layer in self.layers[:-1]:
            z = act(layer(z))
        return self.layers[-1](z)

    def __call__(self, theta: Float[ArrayLike, "*batch n_in"]) -> Float[Array, "*batch n_out"]:
        """Abundances for `theta` (any leading batch shape), in physical units."""
        theta = jnp.asarray(theta)
        n_in = len(self.theta_columns)
        if theta.ndim == 0 or theta.shape[-1] != n_in:
            raise ValueError(
                f"`Emulator`: `theta` must have a last axis of size {n_in} "
                f"({', '.join(self.theta_columns)}); got shape {theta.shape}."
            )
        batch = theta.shape[:-1]
        z = ((theta - self.theta_mean) / self.theta_std).reshape(-1, n_in)
        y = jax.vmap(self.normalised)(z.astype(self.theta_mean.dtype))
        return (self.x_mean + self.x_std * y).reshape(*batch, -1)

    def header(self) -> dict:
        return {
            "format": FORMAT,
            "width_sizes": list(self.width_sizes),
            "activation": self.activation,
            "theta_columns": list(self.theta_columns),
            "x_columns": list(self.x_columns),
            "info": dict(self.info),
            "dtype": str(self.theta_mean.dtype),
        }


def _skeleton(header: dict) -> Emulator:
    return Emulator(
        width_sizes=header["width_sizes"],
        activation=header["activation"],
        theta_columns=header["theta_columns"],
        x_columns=header["x_columns"],
        info=header.get("info", {}),
        dtype=jnp.dtype(header["dtype"]),
        key=jax.random.key(0),
    )


def save_emulator(path: str | os.PathLike, emulator: Emulator) -> pathlib.Path:
    """Write `emulator` as a JSON header and its leaves."""
    return write_model(path, emulator.header(), emulator)


def load_emulator(path: str | os.PathLike) -> Emulator:
    """Read a file written by `save_emulator` (a foreign, truncated or corrupted file raises)."""
    header, payload = read_header(path, api="load_emulator", format=FORMAT)
    return read_leaves(
        payload, _skeleton(header), api="load_emulator", path=path, dtype=header.get("dtype")
    )


# ------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------


def _loss(model: Emulator, z, y):
    pred = jax.vmap(model.normalised)(z)
    return jnp.mean((pred - y) ** 2)


class EmulatorFit(typing.NamedTuple):
    """What `fit_emulator` returns: the best `emulator` and the `history` of losses."""

    emulator: Emulator
    history: dict


def _check_pairs(api: str, theta, x, n_in: int, n_out: int):
    theta = np.asarray(theta, dtype=float)
    x = np.asarray(x, dtype=float)
    if theta.ndim != 2 or theta.shape[1] != n_in:
        raise ValueError(f"`{api}`: `theta` must have shape (N, {n_in}); got {theta.shape}.")
    if x.ndim != 2 or x.shape[1] != n_out or x.shape[0] != theta.shape[0]:
        raise ValueError(
            f"`{api}`: `x` must have shape ({theta.shape[0]}, {n_out}) to match `theta`; got "
            f"{x.shape}."
        )
    bad = ~(np.all(np.isfinite(theta), 1) & np.all(np.isfinite(x), 1))
    if bad.any():
        raise ValueError(
            f"`{api}`: {int(bad.sum())} rows of `theta`/`x` are not finite (failed runs?); drop "
            "them first (`load_training_set` does)."
        )
    return theta, x


def fit_emulator(
    key: PRNGKeyArray,
    theta: Float[ArrayLike, "n n_in"],
    x: Float[ArrayLike, "n n_out"],
    *,
    width_sizes: typing.Sequence[int] = (128, 128),
    activation: str = "gelu",
    theta_columns: typing.Sequence[str] = THETA_COLUMNS,
    x_columns: typing.Sequence[str] = CHEMPY_COLUMNS,
    learning_rate: float = 2e-3,
    learning_rate_end: float = 1e-5,
    batch_size: int = 512,
    max_epochs: int = 200,
    patience: int = 30,
    val_fraction: float = 0.1,
    info: dict | None = None,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    show_progress: bool = True,
) -> EmulatorFit:
    """Train an `Emulator` by mean-squared error on standardised outputs.

    **Arguments:**

    - `key`: a `jax.random.key` (initialisation, validation split, batch order).
    - `theta`, `x`: the training pairs (finite rows only).
    - `width_sizes`, `activation`: the MLP (sbi-chempy's is `(100, 40)`, `"tanh"`).
    - `learning_rate`, `learning_rate_end`: Adam with a cosine decay between them over
      `max_epochs`.
    - `batch_size`, `max_epochs`, `patience`: early stopping when the validation loss has not
      improved for `patience` epochs; the best epoch is returned.
    - `val_fraction`: held-out fraction for early stopping.
    - `info`: recorded in the saved header (mode, yield set, ...).
    - `checkpoint`: a file written after every epoch (model, optimiser state, best model,
      history); with `resume=True` training continues from it and gives the same result as an
      uninterrupted run.
    - `show_progress`: a tqdm bar over epochs.

    **Returns:** an `EmulatorFit` `(emulator, history)`, history with `train`, `val` losses
    per epoch, `best_epoch` and `seconds`.
    """
    theta, x = _check_pairs("fit_emulator", theta, x, len(theta_columns), len(x_columns))
    k_init, k_epochs = jax.random.split(key)
    dtype = jnp.asarray(0.0).dtype
    t_mean, t_std = theta.mean(0), theta.std(0) + 1e-12
    x_mean, x_std = x.mean(0), x.std(0) + 1e-12
    model = Emulator(
        width_sizes=width_sizes,
        activation=activation,
        theta_columns=theta_columns,
        x_columns=x_columns,
        theta_mean=t_mean,
        theta_std=t_std,
        x_mean=x_mean,
        x_std=x_std,
        info=info or {},
        dtype=dtype,
        key=k_init,
    )
    zt = jnp.asarray((theta - t_mean) / t_std, dtype)
    yt = jnp.asarray((x - x_mean) / x_std, dtype)
    best, history = fit_minibatch(
        k_epochs,
        model,
        _loss,
        (zt, yt),
        api="fit_emulator",
        learning_rate=learning_rate,
        learning_rate_end=learning_rate_end,
        batch_size=int(batch_size),
        max_epochs=int(max_epochs),
        patience=int(patience),
        val_fraction=val_fraction,
        settings={"width_sizes": list(model.width_sizes), "activation": activation},
        checkpoint=checkpoint,
        resume=resume,
        show_progress=show_progress,
        desc="emulator",
    )
    return EmulatorFit(best, history)


class EmulatorAccuracy(typing.NamedTuple):
    """|emulator - model| in dex over held-out runs: overall and per output column."""

    median: float
    p90: float
    p99: float
    max: float
    per_column_median: dict
    per_column_p99: dict
    seconds_per_star: float
    n: int

    def as_dict(self) -> dict:
        return self._asdict()


def emulator_accuracy(
    emulator: Emulator,
    theta: Float[ArrayLike, "n n_in"],
    x: Float[ArrayLike, "n n_out"],
    *,
    columns: typing.Sequence[str] | None = None,
) -> EmulatorAccuracy:
    """Compare `emulator(theta)` with the model's `x` on held-out runs.

    `columns` restricts the statistics to those outputs (default all; sbi-chempy's 8 observed
    columns are `diffgal.chemistry.SBI_CHEMPY_COLUMNS`). The time per star is the steady-state
    batched evaluation time (after compilation).
    """
    theta, x = _check_pairs(
        "emulator_accuracy", theta, x, len(emulator.theta_columns), len(emulator.x_columns)
    )
    columns = tuple(emulator.x_columns) if columns is None else tuple(columns)
    idx = [emulator.x_columns.index(c) for c in columns]
    f = eqx.filter_jit(emulator.__call__)
    jax.block_until_ready(f(jnp.asarray(theta)))
    t0 = time.perf_counter()
    pred = np.asarray(jax.block_until_ready(f(jnp.asarray(theta))))
    dt = (time.perf_counter() - t0) / theta.shape[0]
    err = np.abs(pred - x)[:, idx]
    return EmulatorAccuracy(
        median=float(np.median(err)),
        p90=float(np.percentile(err, 90)),
        p99=float(np.percentile(err, 99)),
        max=float(err.max()),
        per_column_median={c: float(np.median(err[:, i])) for i, c in enumerate(columns)},
        per_column_p99={c: float(np.percentile(err[:, i], 99)) for i, c in enumerate(columns)},
        seconds_per_star=dt,
        n=int(theta.shape[0]),
    )
