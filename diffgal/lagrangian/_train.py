"""Training loops for second-order neural ODEs and Lagrangian neural ODEs, with checkpoints.

`train_lnode` trains a `NeuralSecondOrderODE` (λ = 0, the plain SONODE baseline) or a
`LagrangianNeuralODE` (λ = 1 by default) on position trajectories. One `eqx.filter_jit`-ed step
samples a batch, evaluates the routed gradient of `L_R + λ L_H` (`routed_gradients`), and applies
`optax.radam` chained with `reduce_on_plateau` (`make_optimiser`). A tqdm bar shows progress.

Checkpoints are a one-line JSON header (format, model and training hyperparameters, step, data
fingerprint, SHA-256 of the payload) followed by `eqx.tree_serialise_leaves` of
(model, optimiser state, step, RNG key data, loss history). `resume=path` restores all of them
and continues exactly where training stopped: the loss curve and the parameters equal those of an
uninterrupted run. An interrupt (Ctrl-C) writes the checkpoint at the last finished step before it
re-raises. A corrupted, truncated or mismatched checkpoint raises `ValueError`; a missing one
raises `FileNotFoundError`. Training never silently restarts from scratch.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import pathlib
import typing
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import ArrayLike, Float, PRNGKeyArray

from .._serialise import write_model
from ._lnode import (
    LagrangianNeuralODE,
    _node_of,
    describe,
    make_optimiser,
    routed_gradients,
    trainable_filter,
)
from ._node import NeuralSecondOrderODE, curriculum_length

__all__ = [
    "CHECKPOINT_FORMAT",
    "HISTORY_COLUMNS",
    "TrainResult",
    "load_checkpoint",
    "train_lnode",
]

CHECKPOINT_FORMAT = "diffgal.lagrangian.checkpoint/1"

#: Columns of the per-step loss history (`TrainResult.history`, one array per name).
HISTORY_COLUMNS = (
    "loss",  # L_R + λ L_H
    "reconstruction",  # L_R
    "metric",  # L_H (NaN when λ = 0: not evaluated)
    "H1",
    "H2",
    "H3",
    "window",  # curriculum window (number of leading points)
    "n_failed",  # trajectories of the batch whose solve failed (dropped from the loss)
    "lr_scale",  # reduce_on_plateau's scale after the step
    "skipped",  # 1 if the step was skipped because of a non-finite gradient
)

#: Training options stored in the header and checked on resume (`steps` is not among them, so a
#: run can be extended).
_TRAIN_KEYS = (
    "batch_size",
    "lam",
    "learning_rate",
    "learning_rate_end",
    "decay_steps",
    "plateau_factor",
    "plateau_patience",
    "plateau_rtol",
    "plateau_during_curriculum",
    "curriculum_half",
    "n_points",
    "helmholtz_weights",
    "helmholtz_clip",
    "f_metric_clip",
    "g_metric_clip",
    "total_clip",
)


class TrainResult(typing.NamedTuple):
    """What `train_lnode` returns.

    **Fields:**

    - `model`: the trained model (same class as the input).
    - `history`: `{column: array of shape (steps,)}` for `HISTORY_COLUMNS`, plus `"step"`.
    - `opt_state`: the final optimiser state.
    - `step`: the number of steps taken in total (including those before a resume).
    """

    model: typing.Any
    history: dict[str, np.ndarray]
    opt_state: typing.Any
    step: int


# ------------------------------------------------------------------------------------------------
# Checkpoint I/O
# ------------------------------------------------------------------------------------------------


def _fingerprint(ts: np.ndarray, qs: np.ndarray) -> str:
    h = hashlib.sha1()
    for x in (ts, qs):
        x = np.ascontiguousarray(x, dtype=np.float64)
        h.update(str(x.shape).encode())
        h.update(x.tobytes())
    return h.hexdigest()


def _write_checkpoint(path: pathlib.Path, header: dict, tree) -> None:
    write_model(path, header, tree)  # the JSON header + leaves format of diffgal._serialise


def _read_header(path: pathlib.Path) -> tuple[dict, bytes]:
    if not path.is_file():
        raise FileNotFoundError(
            f"`train_lnode`: checkpoint {str(path)!r} does not exist; pass an existing file to "
            "`resume` (or resume=None to start a new run)."
        )
    raw = path.read_bytes()
    line, sep, payload = raw.partition(b"\n")
    try:
        header = json.loads(line.decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(
            f"`train_lnode`: {str(path)!r} is not a diffgal checkpoint or its header is corrupted "
            f"(could not parse the JSON header: {err})."
        ) from None
    if not sep or not isinstance(header, dict) or header.get("format") != CHECKPOINT_FORMAT:
        found = header.get("format") if isinstance(header, dict) else None
        raise ValueError(
            f"`train_lnode`: {str(path)!r} is not a {CHECKPOINT_FORMAT!r} checkpoint (format "
            f"{found!r})."
        )
    if len(payload) != header.get("payload_bytes") or (
        hashlib.sha256(payload).hexdigest() != header.get("payload_sha256")
    ):
        raise ValueError(
            f"`train_lnode`: checkpoint {str(path)!r} is corrupted or truncated: its payload "
            f"({len(payload)} bytes) does not match the SHA-256 and size in its header "
            f"({header.get('payload_bytes')} bytes). Resume from an earlier checkpoint."
        )
    return header, payload


def load_checkpoint(path: str | os.PathLike, like) -> tuple[dict, typing.Any]:
    """Read a `train_lnode` checkpoint: returns `(header, tree)`.

    `like` is a pytree of the stored structure: `(model, opt_state, step, key_data, history)`.
    Raises `ValueError` for a corrupted, truncated or foreign file.
    """
    path = pathlib.Path(path)
    header, payload = _read_header(path)
    try:
        tree = eqx.tree_deserialise_leaves(io.BytesIO(payload), like)
    except Exception as err:  # shape/dtype/structure mismatch inside equinox or numpy
        raise ValueError(
            f"`train_lnode`: checkpoint {str(path)!r} does not match the model or optimiser "
            f"given (its arrays have other shapes or dtypes): {err}"
        ) from None
    return header, tree


def _compare(kind: str, stored: dict, given: dict, path: pathlib.Path) -> None:
    keys = sorted(set(stored) | set(given))
    diffs = [
        f"{k}: checkpoint {stored.get(k)!r}, given {given.get(k)!r}"
        for k in keys
        if stored.get(k) != given.get(k)
    ]
    if diffs:
        raise ValueError(
            f"`train_lnode`: checkpoint {str(path)!r} was written with other {kind} than this "
            "call; resume with the same settings (or start a new run without `resume`). "
            "Differences: " + "; ".join(diffs) + "."
        )


# ------------------------------------------------------------------------------------------------
# The training loop
# ------------------------------------------------------------------------------------------------


def _jsonable(x):
    if isinstance(x, tuple | list):
        return [_jsonable(v) for v in x]
    if isinstance(x, float | int | str | bool) or x is None:
        return x
    return float(x)


def _check_data(model, ts, qs) -> tuple[np.ndarray, np.ndarray]:
    ts = np.asarray(ts)
    qs = np.asarray(qs)
    n = _node_of(model).n
    if ts.ndim != 1 or ts.shape[0] < 2:
        raise ValueError(
            f"`train_lnode`: `ts` must be 1-D with at least 2 observation times; got {ts.shape}."
        )
    if qs.ndim != 3 or qs.shape[1:] != (ts.shape[0], n):
        raise ValueError(
            "`train_lnode`: `qs` must have shape (n_traj, n_time, n) = "
            f"(n_traj, {ts.shape[0]}, {n}); got {qs.shape}."
        )
    if not np.all(np.isfinite(ts)) or not np.all(np.diff(ts) > 0):
        raise ValueError("`train_lnode`: `ts` must be finite and strictly increasing.")
    if not np.all(np.isfinite(qs)):
        bad = np.unique(np.nonzero(~np.isfinite(qs))[0])
        raise ValueError(
            f"`train_lnode`: `qs` holds NaN or inf in {bad.size} trajectories (first: index "
            f"{int(bad[0])}); drop or repair them before training."
        )
    if qs.shape[1] < _node_of(model).n_v0_points:
        raise ValueError("`train_lnode`: fewer observation times than `n_v0_points`.")
    return ts, qs


class _StepOptions(typing.NamedTuple):
    """Hashable hyperparameters of one training step (static under `eqx.filter_jit`, so the
    compiled step is reused by later `train_lnode` calls with the same settings and shapes)."""

    batch: int
    curriculum_half: float | None
    lam: float
    n_points: int | None
    helmholtz_weights: tuple[float, ...]
    helmholtz_clip: float
    f_metric_clip: float
    g_metric_clip: float
    total_clip: float | None
    learning_rate: float
    learning_rate_end: float | None
    decay_steps: int | None
    plateau_factor: float
    plateau_patience: int
    plateau_rtol: float
    plateau_during_curriculum: bool


@eqx.filter_jit
def _train_step(params, opt_state, key, step, tn, qn, static, hp: _StepOptions):
    """One optimiser step: sample a batch, routed gradient, RAdam + plateau update.

    A step whose loss or gradient is not finite leaves the parameters and the optimiser state
    unchanged (and is flagged in the history).
    """
    n_traj, n_time = qn.shape[:2]
    optimiser = make_optimiser(
        hp.learning_rate,
        plateau_factor=hp.plateau_factor,
        plateau_patience=hp.plateau_patience,
        plateau_rtol=hp.plateau_rtol,
        learning_rate_end=hp.learning_rate_end,
        decay_steps=hp.decay_steps,
    )
    key, sub = jax.random.split(key)
    idx = jax.random.choice(sub, n_traj, (hp.batch,), replace=False)
    window = curriculum_length(step, n_time, hp.curriculum_half)
    grads, stats = routed_gradients(
        params,
        static,
        tn,
        qn[idx],
        window,
        lam=hp.lam,
        n_points=hp.n_points,
        helmholtz_weights=hp.helmholtz_weights,
        helmholtz_clip=hp.helmholtz_clip,
        f_metric_clip=hp.f_metric_clip,
        g_metric_clip=hp.g_metric_clip,
        total_clip=hp.total_clip,
    )
    updates, new_state = optimiser.update(grads, opt_state, params, value=stats.plateau_value)
    if not hp.plateau_during_curriculum:
        # While the curriculum window grows the loss covers fewer points, so it is not
        # comparable from step to step: an early L_H over a short window sits far below the
        # later values and would trigger spurious halvings. The scheduler starts counting once
        # the window is full (until then its state stays at `init`, scale 1).
        full = window >= n_time
        plateau = jtu.tree_map(
            lambda a, b: jnp.where(full, a, b), new_state[-1], opt_state[-1]
        )
        new_state = (*new_state[:-1], plateau)
    new_params = eqx.apply_updates(params, updates)
    finite = jnp.isfinite(stats.reconstruction) & jnp.all(
        jnp.stack([jnp.all(jnp.isfinite(g)) for g in jtu.tree_leaves(grads)])
    )
    keep = lambda new, old: jtu.tree_map(lambda a, b: jnp.where(finite, a, b), new, old)
    params = keep(new_params, params)
    opt_state = keep(new_state, opt_state)
    dtype = stats.loss.dtype
    row = jnp.stack(
        [
            stats.loss,
            stats.reconstruction,
            stats.metric,
            *stats.metric_parts,
            window.astype(dtype),
            stats.n_failed.astype(dtype),
            opt_state[-1].scale.astype(dtype),
            (~finite).astype(dtype),
        ]
    )
    return params, opt_state, key, row


def train_lnode(
    key: PRNGKeyArray,
    model: NeuralSecondOrderODE | LagrangianNeuralODE,
    ts: Float[ArrayLike, " n_time"],
    qs: Float[ArrayLike, "n_traj n_time n"],
    *,
    steps: int,
    batch_size: int = 128,
    lam: float | None = None,
    learning_rate: float = 0.07,
    learning_rate_end: float | None = None,
    plateau_factor: float = 0.5,
    plateau_patience: int = 2000,
    plateau_rtol: float = 1e-2,
    plateau_during_curriculum: bool = False,
    curriculum_half: float | None = 1200.0,
    n_points: int | None = None,
    helmholtz_weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
    helmholtz_clip: float = 10.0,
    f_metric_clip: float = 0.05,
    g_metric_clip: float = 5.0,
    total_clip: float | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 1000,
    resume: str | os.PathLike | None = None,
    show_progress: bool = True,
) -> TrainResult:
    """Train a second-order neural ODE (λ = 0) or a Lagrangian neural ODE on positions.

    **Arguments:**

    - `key`: PRNG key for the batch sampling (ignored on resume: the stored key continues).
    - `model`: a `NeuralSecondOrderODE` or a `LagrangianNeuralODE`, with its normaliser already
      fitted (`fit_normaliser(ts, qs)`); its normaliser is frozen.
    - `ts`: observation times, shape `(n_time,)`, strictly increasing.
    - `qs`: observed positions, shape `(n_traj, n_time, n)`, finite.
    - `steps`: total number of optimiser steps (a resumed run continues up to `steps`).
    - `batch_size`: trajectories per step, drawn without replacement (capped at `n_traj`).
    - `lam`: the metric weight λ; default 1 for a `LagrangianNeuralODE`, 0 for the plain model
      (which accepts nothing else). λ = 0 reproduces the plain update exactly.
    - `learning_rate`, `plateau_factor`, `plateau_patience`, `plateau_rtol`: `make_optimiser`
      (RAdam 0.07, factor 0.5, patience 2000, rtol 1e-2). The plateau is driven by L_H, or by
      L_R when λ = 0.
    - `plateau_during_curriculum`: if `False` (default) the plateau scheduler starts counting
      only once the curriculum window covers the whole series. A loss over a growing window is
      not comparable from step to step: L_H over the first few points is far below its later
      values, so a scheduler counting from step 0 halves the learning rate of a Lagrangian
      neural ODE for no reason (measured: twice in 6000 steps on the damped oscillator, which
      raised its held-out error by 16-48 %). `True` counts from the first step, as the
      reference does.
    - `learning_rate_end`: if given, the learning rate decays by a cosine from `learning_rate`
      to this value over `steps` (then `steps` is part of the run's settings and a resumed run
      must ask for the same `steps`). Default `None`: constant, as the reference.
    - `curriculum_half`: s½ of the temporal curriculum r(s) (spec §5, default 1200); `None`
      uses the full series from the start.
    - `n_points`: points per trajectory at which L_H is evaluated (default all `n_time`, evenly
      spread over the window; see `metric_points`).
    - `helmholtz_weights`, `helmholtz_clip`: passed to `helmholtz_loss`.
    - `f_metric_clip`, `g_metric_clip`, `total_clip`: gradient routing (`routed_gradients`).
    - `checkpoint`: file to write every `checkpoint_every` steps and at the end (atomic
      replace). `None`: no checkpoints.
    - `resume`: a checkpoint written by this function with the same model hyperparameters,
      training options and data; training continues from its step, optimiser state, RNG key and
      history.
    - `show_progress`: show a tqdm progress bar.

    **Returns:**

    A `TrainResult(model, history, opt_state, step)`.
    """
    if not isinstance(model, NeuralSecondOrderODE | LagrangianNeuralODE):
        raise TypeError(
            "`train_lnode`: `model` must be a NeuralSecondOrderODE or a LagrangianNeuralODE; got "
            f"{type(model).__name__}."
        )
    plain = isinstance(model, NeuralSecondOrderODE)
    lam = (0.0 if plain else 1.0) if lam is None else float(lam)
    if plain and lam != 0.0:
        raise ValueError(
            f"`train_lnode`: a NeuralSecondOrderODE has no g network, so `lam` must be 0; got "
            f"{lam}. Use a LagrangianNeuralODE for lam > 0."
        )
    if lam < 0 or not math.isfinite(lam):
        raise ValueError(f"`train_lnode`: `lam` must be finite and >= 0; got {lam}.")
    if steps < 0 or checkpoint_every < 1:
        raise ValueError(
            f"`train_lnode`: need steps >= 0 and checkpoint_every >= 1; got {steps}, "
            f"{checkpoint_every}."
        )
    ts_np, qs_np = _check_data(model, ts, qs)
    n_traj, n_time, _ = qs_np.shape
    batch = int(min(batch_size, n_traj))

    config = {
        "batch_size": batch,
        "lam": lam,
        "learning_rate": float(learning_rate),
        "learning_rate_end": None if learning_rate_end is None else float(learning_rate_end),
        "decay_steps": None if learning_rate_end is None else int(steps),
        "plateau_factor": float(plateau_factor),
        "plateau_patience": int(plateau_patience),
        "plateau_rtol": float(plateau_rtol),
        "plateau_during_curriculum": bool(plateau_during_curriculum),
        "curriculum_half": None if curriculum_half is None else float(curriculum_half),
        "n_points": None if n_points is None else int(n_points),
        "helmholtz_weights": _jsonable(tuple(helmholtz_weights)),
        "helmholtz_clip": float(helmholtz_clip),
        "f_metric_clip": float(f_metric_clip),
        "g_metric_clip": float(g_metric_clip),
        "total_clip": None if total_clip is None else float(total_clip),
    }
    optimiser = make_optimiser(
        learning_rate,
        plateau_factor=plateau_factor,
        plateau_patience=plateau_patience,
        plateau_rtol=plateau_rtol,
        learning_rate_end=config["learning_rate_end"],
        decay_steps=config["decay_steps"],
    )  # `_train_step` rebuilds the same optimiser from `hp`
    params, static = eqx.partition(model, trainable_filter(model))
    opt_state = optimiser.init(params)
    if not jnp.issubdtype(jnp.asarray(key).dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)  # a legacy uint32 key
    key_data = jax.random.key_data(key)
    n_cols = len(HISTORY_COLUMNS)
    dtype = _node_of(model).normaliser.q_scale.dtype
    fingerprint = _fingerprint(ts_np, qs_np)
    model_info = describe(model)
    start = 0
    history = np.zeros((0, n_cols))

    if resume is not None:
        resume = pathlib.Path(resume)
        header, _ = _read_header(resume)
        _compare("model hyperparameters", header.get("model", {}), model_info, resume)
        stored = dict(header.get("train", {}))
        # Checkpoints from before the option existed counted plateaus from the first step.
        stored.setdefault("plateau_during_curriculum", True)
        _compare("training options", stored, config, resume)
        if header.get("data_sha1") != fingerprint:
            raise ValueError(
                f"`train_lnode`: checkpoint {str(resume)!r} was trained on other data (its "
                "fingerprint of ts and qs differs); resume with the same ts and qs."
            )
        n_hist = int(header["step"])
        like = (model, opt_state, jnp.zeros((), jnp.int32), key_data, np.zeros((n_hist, n_cols)))
        _, (model, opt_state, step_arr, key_data, history) = load_checkpoint(resume, like)
        if int(step_arr) != n_hist:
            raise ValueError(
                f"`train_lnode`: checkpoint {str(resume)!r} is inconsistent (header step "
                f"{n_hist}, stored step {int(step_arr)})."
            )
        params, static = eqx.partition(model, trainable_filter(model))
        start = n_hist
        history = np.asarray(history)
    key = jax.random.wrap_key_data(key_data, impl=jax.random.key_impl(key))

    nz = _node_of(model).normaliser
    tn = nz.t_to(jnp.asarray(ts_np, dtype))
    qn = nz.q_to(jnp.asarray(qs_np, dtype))
    hp = _StepOptions(
        batch=batch,
        curriculum_half=config["curriculum_half"],
        lam=lam,
        n_points=config["n_points"],
        helmholtz_weights=tuple(float(w) for w in helmholtz_weights),
        helmholtz_clip=float(helmholtz_clip),
        f_metric_clip=float(f_metric_clip),
        g_metric_clip=float(g_metric_clip),
        total_clip=config["total_clip"],
        learning_rate=float(learning_rate),
        learning_rate_end=config["learning_rate_end"],
        decay_steps=config["decay_steps"],
        plateau_factor=float(plateau_factor),
        plateau_patience=int(plateau_patience),
        plateau_rtol=float(plateau_rtol),
        plateau_during_curriculum=bool(plateau_during_curriculum),
    )

    def save(step: int, rows: list) -> None:
        nonlocal history
        if rows:
            history = np.concatenate([history, np.asarray(jnp.stack(rows), np.float64)])
            rows.clear()
        header = {
            "format": CHECKPOINT_FORMAT,
            "model": model_info,
            "train": config,
            "steps_requested": int(steps),
            "step": int(step),
            "history_columns": list(HISTORY_COLUMNS),
            "data_sha1": fingerprint,
            "dtype": str(dtype),
            "key_impl": str(jax.random.key_impl(key)),
        }
        tree = (
            eqx.combine(params, static),
            opt_state,
            jnp.asarray(step, jnp.int32),
            jax.random.key_data(key),
            history,
        )
        _write_checkpoint(pathlib.Path(checkpoint), header, tree)

    from tqdm.auto import tqdm

    rows: list = []
    bar = tqdm(total=steps, initial=start, disable=not show_progress, desc="train_lnode")
    every = max(1, steps // 200)
    done = start
    try:
        for s in range(start, steps):
            params, opt_state, key, row = _train_step(
                params, opt_state, key, jnp.asarray(s), tn, qn, static, hp
            )
            rows.append(row)
            done = s + 1
            bar.update(1)
            if show_progress and (s + 1) % every == 0:
                r = np.asarray(row)
                bar.set_postfix(L_R=f"{r[1]:.3g}", L_H=f"{r[2]:.3g}", window=int(r[6]))
            if checkpoint is not None and (s + 1) % checkpoint_every == 0:
                save(s + 1, rows)
    except KeyboardInterrupt:
        # No lost work: write the state after the last finished step, then stop as asked.
        bar.close()
        if checkpoint is not None and rows:
            save(done, rows)
            warnings.warn(
                f"`train_lnode`: interrupted after step {done}; saved {str(checkpoint)!r}. "
                "Resume with `resume=` that path and the same settings.",
                RuntimeWarning,
                stacklevel=2,
            )
        raise
    bar.close()
    final_step = max(start, steps)
    if checkpoint is not None and final_step > start and final_step % checkpoint_every != 0:
        save(final_step, rows)
    if rows:
        history = np.concatenate([history, np.asarray(jnp.stack(rows), np.float64)])
        rows.clear()
    collapsed = int(np.sum(history[start:, HISTORY_COLUMNS.index("n_failed")] >= batch))
    if collapsed:
        warnings.warn(
            f"`train_lnode`: in {collapsed} of {history.shape[0] - start} steps every trajectory "
            "of the batch failed to solve (the loss and gradient were 0 there). Lower the "
            "learning rate, keep the curriculum (`curriculum_half`) or raise `max_steps`.",
            RuntimeWarning,
            stacklevel=2,
        )
    out = {name: history[:, i] for i, name in enumerate(HISTORY_COLUMNS)}
    out["step"] = np.arange(history.shape[0])
    return TrainResult(eqx.combine(params, static), out, opt_state, final_step)
