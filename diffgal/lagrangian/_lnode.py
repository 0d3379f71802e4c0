"""The Lagrangian neural ODE (LNODE): a second-order neural ODE regularised by a Helmholtz metric.

Reference model: `SimultaneousLearnedMetricOnlyX` (preset `simple_douglas`) of
luwo9/LagrangianNeuralODEs (spec §5). Three networks share one optimiser:

- the force F̃ (`LagrangianNeuralODE.node.force`) and the v0 net (`.node.v0_net`), exactly those
  of a `NeuralSecondOrderODE`;
- the multiplier g̃ (`.metric_net`, a `SymmetricMatrixMLP`), used in training only.

The loss is L = L_R + λ L_H. L_R is the position MSE over the current curriculum window (in
normalised coordinates). L_H is the Helmholtz metric H(F̃, g̃) (`helmholtz_loss`) at the
predicted trajectory points (t̃, q̃, ṽ) of the successful solves, passed through
`jax.lax.stop_gradient`, so the metric acts on F̃ only through F̃'s explicit appearance in the
Helmholtz conditions, never through the trajectory or the v0 net.

Gradient routing (`routed_gradients`, spec §5):

    gH = grad(λ L_H) wrt (F, g)          # the v0 net receives nothing
    gH.F = clip_global_norm(gH.F, 0.05);  gH.g = clip_global_norm(gH.g, 5.0)
    gR = grad(L_R) wrt (F, v0)
    g  = gH + gR                          # option: clip g.F and g.v0 to norm 1
    optimiser.update(g, state, params, value=L_H)   # value=L_R when λ = 0

With λ = 0 the metric is not evaluated at all, so the update is exactly that of the plain
`NeuralSecondOrderODE`. Inference (`predict`) integrates F̃ and the v0 net only.
"""

from __future__ import annotations

import typing

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import optax
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ._node import NeuralSecondOrderODE, Normaliser, window_times
from ._ode import SecondOrderSolution

__all__ = [
    "LagrangianNeuralODE",
    "clip_global_norm",
    "describe",
    "make_optimiser",
    "metric_gradient",
    "metric_points",
    "reconstruction_loss",
    "routed_gradients",
    "trainable_filter",
]

_ONE_D_MESSAGE = (
    "every second-order ODE in one dimension is variational (Darboux), so a Helmholtz metric "
    "cannot discriminate; use n >= 2, or train a plain `NeuralSecondOrderODE` (lambda = 0)."
)


@typing.final
class LagrangianNeuralODE(eqx.Module):
    """A second-order neural ODE with a learned Helmholtz multiplier g(t, q, v) (spec §5).

    **Arguments:**

    - `n`: the configuration dimension, >= 2 (in 1-D every ODE is variational).
    - `g_width`, `g_depth`, `g_use_time`: the `SymmetricMatrixMLP` multiplier (default [64, 64]
      softplus with a sinh head; the t input lets g grow like e^{γt} for damped systems).
    - `key`: a JAX PRNG key. The F and v0 networks are initialised from the first half of
      `jax.random.split(key)`, exactly as `NeuralSecondOrderODE(n, key=that_key)` would be.
    - `**node_kwargs`: every other keyword (`normaliser`, `width`, `depth`, `activation`,
      `use_time`, `linear_skip`, `v0_width`, `v0_depth`, `v0_activation`, `n_v0_points`,
      `infer_q0`, `solver`, `rtol`, `atol`, `max_steps`) builds the F and v0 networks as for
      `NeuralSecondOrderODE`.

    Training: `train_lnode`. Inference (`predict`, `trajectory`, `acceleration`) uses F and the
    v0 net only and costs exactly what the plain model costs.
    """

    node: NeuralSecondOrderODE
    metric_net: eqx.Module
    hyperparameters: tuple = eqx.field(static=True)

    def __init__(
        self,
        n: int,
        *,
        g_width: int = 64,
        g_depth: int = 2,
        g_use_time: bool = True,
        key: PRNGKeyArray,
        **node_kwargs,
    ):
        from ._helmholtz import SymmetricMatrixMLP

        if not isinstance(n, int) or n < 2:
            raise ValueError(
                f"`LagrangianNeuralODE`: `n` must be >= 2; got {n!r}: {_ONE_D_MESSAGE}"
            )
        nkey, gkey = jax.random.split(key)
        try:
            self.node = NeuralSecondOrderODE(n, key=nkey, **node_kwargs)
        except TypeError as err:
            raise TypeError(
                f"`LagrangianNeuralODE`: {err} (keyword arguments other than g_width, g_depth "
                "and g_use_time go to `NeuralSecondOrderODE`)."
            ) from None
        self.metric_net = SymmetricMatrixMLP(
            n, width=g_width, depth=g_depth, use_time=g_use_time, key=gkey
        )
        self.hyperparameters = self.node.hyperparameters + (
            ("g_width", g_width),
            ("g_depth", g_depth),
            ("g_use_time", bool(g_use_time)),
        )

    @property
    def n(self) -> int:
        return self.node.n

    @property
    def force(self):
        """The force network F̃(t̃, q̃, ṽ) (normalised coordinates)."""
        return self.node.force

    @property
    def v0_net(self):
        return self.node.v0_net

    @property
    def normaliser(self) -> Normaliser:
        return self.node.normaliser

    def trajectory(
        self, ts: Float[ArrayLike, " n_time"], q0: Float[ArrayLike, "*k n"], *, throw: bool = True
    ) -> SecondOrderSolution:
        """Positions, velocities and solver result; integrates F and the v0 net only."""
        return self.node.trajectory(ts, q0, throw=throw)

    def predict(
        self, ts: Float[ArrayLike, " n_time"], q0: Float[ArrayLike, "*k n"]
    ) -> Float[Array, "n_time n"]:
        """Predicted positions at `ts`; integrates F and the v0 net only (g is not called)."""
        return self.node.predict(ts, q0)

    def __call__(
        self, ts: Float[ArrayLike, " n_time"], q0: Float[ArrayLike, "*k n"]
    ) -> Float[Array, "n_time n"]:
        """Same as `predict`."""
        return self.node.predict(ts, q0)

    def acceleration(self, t, q, v) -> Float[Array, " n"]:
        """The learned force law F(t, q, v) in physical coordinates."""
        return self.node.acceleration(t, q, v)


# ------------------------------------------------------------------------------------------------
# Pieces of the training step (pure functions; `train_lnode` composes them)
# ------------------------------------------------------------------------------------------------


def _node_of(model) -> NeuralSecondOrderODE:
    if isinstance(model, LagrangianNeuralODE):
        return model.node
    if isinstance(model, NeuralSecondOrderODE):
        return model
    raise TypeError(
        f"expected a `NeuralSecondOrderODE` or a `LagrangianNeuralODE`; got {type(model).__name__}."
    )


def trainable_filter(model) -> typing.Any:
    """A filter spec (pytree of bools) marking the trainable arrays: all inexact arrays except
    the normaliser's."""
    spec = jtu.tree_map(eqx.is_inexact_array, model)
    frozen = lambda m: _node_of(m).normaliser
    return eqx.tree_at(frozen, spec, replace=jtu.tree_map(lambda _: False, frozen(model)))


def clip_global_norm(tree, max_norm: float):
    """Scale `tree` so that its global L2 norm is at most `max_norm` (optax's rule)."""
    norm = optax.tree.norm(tree)
    scale = jnp.where(norm < max_norm, 1.0, max_norm / jnp.where(norm > 0, norm, 1.0))
    return jtu.tree_map(lambda x: (x * scale).astype(x.dtype), tree)


def make_optimiser(
    learning_rate: float = 0.07,
    *,
    plateau_factor: float = 0.5,
    plateau_patience: int = 2000,
    plateau_rtol: float = 1e-2,
    learning_rate_end: float | None = None,
    decay_steps: int | None = None,
) -> optax.GradientTransformationExtraArgs:
    """`optax.radam(learning_rate)` (threshold 5, as torch RAdam) chained with
    `optax.contrib.reduce_on_plateau(plateau_factor, plateau_patience, plateau_rtol)` (spec §5).
    The plateau value is passed as `update(..., value=...)`.

    With `learning_rate_end` (and `decay_steps`), the RAdam learning rate follows a cosine decay
    from `learning_rate` to `learning_rate_end` over `decay_steps` steps instead of staying
    constant (the plateau scale still multiplies it). Off by default, for parity with the
    reference. A decaying rate removes most of the mini-batch jitter from the final force
    network, which matters when its derivatives are scored (the Helmholtz metric of a learned F).
    """
    lr = learning_rate
    if learning_rate_end is not None:
        if decay_steps is None or decay_steps < 1:
            raise ValueError(
                "`make_optimiser`: `learning_rate_end` needs `decay_steps` >= 1 (the length of "
                f"the cosine decay); got {decay_steps!r}."
            )
        if not 0 < learning_rate_end <= learning_rate:
            raise ValueError(
                "`make_optimiser`: need 0 < learning_rate_end <= learning_rate; got "
                f"{learning_rate_end} and {learning_rate}."
            )
        lr = optax.cosine_decay_schedule(
            learning_rate, int(decay_steps), alpha=learning_rate_end / learning_rate
        )
    return optax.chain(
        optax.radam(lr, threshold=5.0),
        optax.contrib.reduce_on_plateau(
            factor=plateau_factor, patience=plateau_patience, rtol=plateau_rtol
        ),
    )


def reconstruction_loss(
    node: NeuralSecondOrderODE,
    tn: Float[Array, " n_time"],
    qn: Float[Array, "n_traj n_time n"],
    window: Array,
) -> tuple[Array, tuple[Array, Array, Array, Array]]:
    """L_R: the mean squared position error over the first `window` points, normalised units.

    Each trajectory is integrated with `throw=False` over the window (the later save times are
    squeezed into the next sample interval by `window_times` and masked out). Unsuccessful (or
    non-finite) trajectories are dropped from the mean.

    Returns `(L_R, (t_window, q_pred, v_pred, ok))`.
    """
    n_time = tn.shape[0]
    k = node.n_v0_points
    t_window = window_times(tn, window)
    solve = lambda q: node.solve_normalised(t_window, q[:k], throw=False)
    q_pred, v_pred, result = jax.vmap(solve)(qn)
    ok = (result == diffrax.RESULTS.successful) & jnp.all(
        jnp.isfinite(q_pred) & jnp.isfinite(v_pred), axis=(1, 2)
    )
    in_window = jnp.arange(n_time) < window
    use = ok[:, None, None] & in_window[None, :, None]
    err = jnp.where(use, jnp.where(use, q_pred, 0.0) - qn, 0.0)
    count = jnp.maximum(jnp.sum(ok) * window * node.n, 1)
    return jnp.sum(err**2) / count, (t_window, q_pred, v_pred, ok)


def metric_points(
    t_window: Float[Array, " n_time"],
    q_pred: Float[Array, "n_traj n_time n"],
    v_pred: Float[Array, "n_traj n_time n"],
    ok: Array,
    window: Array,
    n_points: int | None = None,
) -> tuple[Float[Array, " n_pts"], Float[Array, "n_pts n"], Float[Array, "n_pts n"], Array]:
    """The (t̃, q̃, ṽ) points where L_H is evaluated (with `stop_gradient`), and their weights.

    `n_points` (default: all `n_time`) evenly spaced indices `(i * window) // n_points` inside
    the current window are taken from every trajectory, so the points cover the window with
    near-equal weights and a fixed shape. Points of failed trajectories get weight 0 (and are
    replaced by zeros, so they stay finite).
    """
    n_time = t_window.shape[0]
    n_points = n_time if n_points is None else n_points
    idx = (jnp.arange(n_points) * window) // n_points
    q = q_pred[:, idx]
    v = v_pred[:, idx]
    q = jnp.where(jnp.isfinite(q), q, 0.0)
    v = jnp.where(jnp.isfinite(v), v, 0.0)
    t = jnp.broadcast_to(t_window[idx], q.shape[:2])
    w = jnp.broadcast_to(ok[:, None], q.shape[:2]).astype(q.dtype)
    n = q.shape[-1]
    return jax.lax.stop_gradient((t.reshape(-1), q.reshape(-1, n), v.reshape(-1, n), w.reshape(-1)))


class StepStats(typing.NamedTuple):
    loss: Array
    reconstruction: Array
    metric: Array
    metric_parts: tuple[Array, Array, Array]
    n_failed: Array
    plateau_value: Array


def metric_gradient(
    params,
    static,
    points: tuple[Array, Array, Array, Array],
    *,
    lam: float,
    helmholtz_weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
    helmholtz_clip: float = 10.0,
    f_metric_clip: float = 0.05,
    g_metric_clip: float = 5.0,
):
    """The clipped gradient of λ L_H w.r.t. the trainable `params` of a `LagrangianNeuralODE`.

    `points = (t, q, v, w)` from `metric_points` (weights `w` per point). L_H is the weighted
    mean of the pointwise `helmholtz_loss(F̃, g̃, t, q, v)`. The F part of the gradient is
    clipped to global norm `f_metric_clip`, the g part to `g_metric_clip`; the v0 net does not
    appear in L_H, so its gradient is exactly zero. Returns `(g_h, (L_H, (H1, H2, H3)))`.
    """
    from ._helmholtz import helmholtz_loss

    model = eqx.combine(params, static)
    if not isinstance(model, LagrangianNeuralODE):
        raise ValueError(
            "`routed_gradients`: `lam` != 0 needs a `LagrangianNeuralODE` (a g network); got a "
            f"{type(model).__name__}."
        )
    t_pts, q_pts, v_pts, w_pts = points
    mean = lambda x: jnp.sum(w_pts * x) / jnp.maximum(jnp.sum(w_pts), 1.0)

    def metric(p):
        m = eqx.combine(p, static)
        h = helmholtz_loss(
            m.node.force,
            m.metric_net,
            t_pts,
            q_pts,
            v_pts,
            weights=helmholtz_weights,
            clip=helmholtz_clip,
            pointwise=True,
        )
        h_mean = mean(h.H)
        return lam * h_mean, (h_mean, (mean(h.H1), mean(h.H2), mean(h.H3)))

    (_, (l_h, parts)), g_h = jax.value_and_grad(metric, has_aux=True)(params)
    g_h = eqx.tree_at(
        lambda p: p.node.force, g_h, replace_fn=lambda t: clip_global_norm(t, f_metric_clip)
    )
    g_h = eqx.tree_at(
        lambda p: p.metric_net, g_h, replace_fn=lambda t: clip_global_norm(t, g_metric_clip)
    )
    return g_h, (l_h, tuple(parts))


def routed_gradients(
    params,
    static,
    tn: Float[Array, " n_time"],
    qn: Float[Array, "n_traj n_time n"],
    window: Array,
    *,
    lam: float,
    n_points: int | None = None,
    helmholtz_weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
    helmholtz_clip: float = 10.0,
    f_metric_clip: float = 0.05,
    g_metric_clip: float = 5.0,
    total_clip: float | None = None,
):
    """The routed gradient of L_R + λ L_H w.r.t. the trainable `params` (see the module doc).

    `params, static = eqx.partition(model, trainable_filter(model))`. `lam` is a Python float:
    with `lam == 0` the metric is not evaluated, the g network gets a zero gradient and the
    result equals the plain second-order NODE gradient exactly. `total_clip` (off by default;
    the reference's 2026-03 option uses 1.0) clips the summed F gradient and the v0 gradient
    (and the q0-net gradient, with `infer_q0`) to that global norm each.

    Returns `(grads, StepStats)`.
    """
    lam = float(lam)

    def recon(p):
        return reconstruction_loss(_node_of(eqx.combine(p, static)), tn, qn, window)

    (l_r, (t_window, q_pred, v_pred, ok)), grads = jax.value_and_grad(recon, has_aux=True)(params)
    nan = jnp.full((), jnp.nan, dtype=l_r.dtype)
    l_h, parts = nan, (nan, nan, nan)
    if lam != 0.0:
        points = metric_points(t_window, q_pred, v_pred, ok, window, n_points)
        g_h, (l_h, parts) = metric_gradient(
            params,
            static,
            points,
            lam=lam,
            helmholtz_weights=helmholtz_weights,
            helmholtz_clip=helmholtz_clip,
            f_metric_clip=f_metric_clip,
            g_metric_clip=g_metric_clip,
        )
        grads = jtu.tree_map(jnp.add, grads, g_h)
    if total_clip is not None:
        node_path = (lambda p: p.node) if isinstance(params, LagrangianNeuralODE) else (lambda p: p)
        subs = ("force", "v0_net") + (("q0_net",) if node_path(params).q0_net is not None else ())
        for sub in subs:
            where = lambda p, sub=sub: getattr(node_path(p), sub)
            grads = eqx.tree_at(where, grads, replace_fn=lambda t: clip_global_norm(t, total_clip))
    loss = l_r if lam == 0.0 else l_r + lam * l_h
    stats = StepStats(
        loss=loss,
        reconstruction=l_r,
        metric=l_h,
        metric_parts=parts,
        n_failed=jnp.sum(~ok),
        plateau_value=l_r if lam == 0.0 else l_h,
    )
    return grads, stats


def describe(model) -> dict:
    """JSON-able hyperparameters of a model (for checkpoint headers)."""
    return {"class": type(model).__name__, **dict(model.hyperparameters)}
