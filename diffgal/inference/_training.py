"""One mini-batch training loop for the emulator and the flows: early stopping, checkpoints.

Each epoch is one jitted `lax.scan` over shuffled mini-batches. The loop keeps the best
validation epoch, stops after `patience` stale epochs, and (with `checkpoint`) writes the
model, optimiser state, best model and history after every epoch. A run resumed from that file
continues with the same batch order (the epoch keys are `fold_in(key, epoch)`), so it ends
with the same parameters as an uninterrupted run.
"""

from __future__ import annotations

import os
import time
import typing

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import paramax
from jaxtyping import PRNGKeyArray

from .._serialise import read_header, read_leaves, write_model

__all__ = ["fit_minibatch", "load_cached"]

CHECKPOINT_FORMAT = "diffgal.inference.checkpoint/1"


def load_cached(api: str, path, load: typing.Callable, **expected) -> typing.Any:
    """`load(path)` for a trained network kept in a cache folder, with a message that says how
    to start over when the file is corrupted, foreign, or trained for other columns.

    `expected` maps attribute names of the loaded model to the values it must have (for
    example `params=GLOBAL_NAMES`); any other value is a mismatch.
    """
    try:
        model = load(path)
    except ValueError as err:
        reason = str(err)
    else:
        wrong = [k for k, v in expected.items() if tuple(getattr(model, k)) != tuple(v)]
        if not wrong:
            return model
        found = "; ".join(
            f"`{k}` {tuple(getattr(model, k))} instead of {tuple(expected[k])}" for k in wrong
        )
        reason = f"it was trained for {found}."
    raise ValueError(
        f"`{api}`: the cached network {str(path)!r} cannot be used: {reason} Delete it to train "
        "it again, or pass another `cache` folder (`--cache` or a fresh `--out` of "
        "`diffgal infer`)."
    )


def _is_frozen(leaf) -> bool:
    return isinstance(leaf, paramax.NonTrainable)


def _split(model):
    return eqx.partition(model, eqx.is_inexact_array, is_leaf=_is_frozen)


@eqx.filter_jit
def _epoch(
    params, static, opt_state, key, data, loss_fn, optimiser, batch_size, n_batches, augment
):
    n = data[0].shape[0]
    k_perm, k_aug = jax.random.split(key)
    perm = jax.random.permutation(k_perm, n)[: n_batches * batch_size]
    batches = perm.reshape(n_batches, batch_size)
    keys = jax.random.split(k_aug, n_batches)

    def step(carry, inputs):
        params, opt_state = carry
        idx, k = inputs
        batch = tuple(d[idx] for d in data)
        if augment is not None:
            batch = augment(k, *batch)
        loss, grads = eqx.filter_value_and_grad(lambda p: loss_fn(eqx.combine(p, static), *batch))(
            params
        )
        updates, opt_state = optimiser.update(grads, opt_state, params)
        return (eqx.apply_updates(params, updates), opt_state), loss

    (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), (batches, keys))
    return params, opt_state, jnp.mean(losses)


@eqx.filter_jit
def _evaluate(params, static, data, loss_fn, chunk):
    n = data[0].shape[0]
    n_full = (n // chunk) * chunk
    total = 0.0
    if n_full:
        parts = [d[:n_full].reshape(n // chunk, chunk, *d.shape[1:]) for d in data]
        total = (
            jnp.sum(jax.lax.map(lambda b: loss_fn(eqx.combine(params, static), *b), parts)) * chunk
        )
    if n_full < n:
        total = total + loss_fn(eqx.combine(params, static), *(d[n_full:] for d in data)) * (
            n - n_full
        )
    return total / n


def fit_minibatch(
    key: PRNGKeyArray,
    model,
    loss_fn: typing.Callable,
    data: tuple,
    *,
    api: str,
    learning_rate: float,
    learning_rate_end: float | None = None,
    batch_size: int,
    max_epochs: int,
    patience: int,
    val_fraction: float = 0.1,
    clip_norm: float | None = None,
    augment: typing.Callable | None = None,
    settings: dict | None = None,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    show_progress: bool = True,
    desc: str = "train",
):
    """Minimise `mean loss_fn(model, *batch)` over mini-batches of `data` with Adam.

    `loss_fn(model, *arrays)` returns the mean loss over the rows given. `augment(key, *batch)`,
    if given, transforms each training mini-batch with a fresh key (for example fresh
    observational noise every step, so that a flow cannot fit one noise realisation); the
    validation rows get one fixed augmentation. Returns `(best_model, history)`. `settings`
    (JSON-able) is stored in the checkpoint and must match on resume.
    """
    n = data[0].shape[0]
    if any(d.shape[0] != n for d in data):
        raise ValueError(f"`{api}`: the training arrays have different lengths.")
    n_val = max(1, int(round(val_fraction * n)))
    if n - n_val < batch_size:
        raise ValueError(
            f"`{api}`: {n - n_val} training rows are fewer than `batch_size` = {batch_size}; "
            "pass more simulations or a smaller `batch_size`."
        )
    k_split, k_epochs = jax.random.split(key)
    perm = jax.random.permutation(k_split, n)
    train = tuple(d[perm[n_val:]] for d in data)
    val = tuple(d[perm[:n_val]] for d in data)
    if augment is not None:
        val = tuple(augment(jax.random.fold_in(k_split, 1), *val))
    n_batches = (n - n_val) // batch_size
    if learning_rate_end is None:
        schedule = learning_rate
    else:
        schedule = optax.cosine_decay_schedule(
            learning_rate, max_epochs * n_batches, alpha=learning_rate_end / learning_rate
        )
    parts = [optax.clip_by_global_norm(clip_norm)] if clip_norm is not None else []
    optimiser = optax.chain(*parts, optax.adam(schedule))
    params, static = _split(model)
    opt_state = optimiser.init(params)
    best = params
    history = {"train": [], "val": []}
    best_val, best_epoch, start = float("inf"), -1, 0
    settings = {
        **(settings or {}),
        "n": int(n),
        "learning_rate": learning_rate,
        "learning_rate_end": learning_rate_end,
        "batch_size": int(batch_size),
        "max_epochs": int(max_epochs),
        "patience": int(patience),
        "val_fraction": val_fraction,
        "clip_norm": clip_norm,
        "key": np.asarray(jax.random.key_data(key)).tolist(),
        "data_sum": float(sum(np.sum(np.asarray(d, dtype=np.float64)) for d in data)),
    }
    if resume:
        if checkpoint is None:
            raise ValueError(f"`{api}`: `resume=True` needs a `checkpoint` path.")
        header, payload = read_header(checkpoint, api=api, format=CHECKPOINT_FORMAT)
        stored = header.get("settings", {})
        diffs = [k for k in sorted(set(settings) | set(stored)) if stored.get(k) != settings.get(k)]
        if diffs:
            raise ValueError(
                f"`{api}`: checkpoint {str(checkpoint)!r} was written for other settings or data "
                f"({', '.join(diffs)} differ); resume with the same call, or start afresh with "
                "`resume=False`."
            )
        params, opt_state, best = read_leaves(
            payload, (params, opt_state, best), api=api, path=checkpoint
        )
        history = {k: list(v) for k, v in header["history"].items()}
        best_val, best_epoch, start = header["best_val"], header["best_epoch"], header["epoch"]
    bar = None
    if show_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_epochs, initial=start, desc=desc, unit="epoch")
    chunk = min(4096, n_val)
    t0 = time.perf_counter()
    for epoch in range(start, max_epochs):
        if best_epoch >= 0 and epoch - best_epoch > patience:
            break
        params, opt_state, train_loss = _epoch(
            params,
            static,
            opt_state,
            jax.random.fold_in(k_epochs, epoch),
            train,
            loss_fn,
            optimiser,
            batch_size,
            n_batches,
            augment,
        )
        val_loss = float(_evaluate(params, static, val, loss_fn, chunk))
        train_loss = float(train_loss)
        if not np.isfinite(train_loss):
            raise FloatingPointError(
                f"`{api}`: the training loss became {train_loss} at epoch {epoch}; lower "
                "`learning_rate` or set `clip_norm` (the best model so far is in the checkpoint)."
            )
        history["train"].append(train_loss)
        history["val"].append(val_loss)
        if val_loss < best_val:
            best, best_val, best_epoch = params, val_loss, epoch
        if checkpoint is not None:
            write_model(
                checkpoint,
                {
                    "format": CHECKPOINT_FORMAT,
                    "settings": settings,
                    "history": history,
                    "best_val": best_val,
                    "best_epoch": best_epoch,
                    "epoch": epoch + 1,
                },
                (params, opt_state, best),
            )
        if bar is not None:
            bar.update(1)
            bar.set_postfix(train=f"{train_loss:.3e}", val=f"{val_loss:.3e}")
    if bar is not None:
        bar.close()
    out = {
        "train": np.asarray(history["train"]),
        "val": np.asarray(history["val"]),
        "best_epoch": int(best_epoch),
        "best_val": float(best_val),
        "seconds": time.perf_counter() - t0,
    }
    return eqx.combine(best, static), out
