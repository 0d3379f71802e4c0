"""Second-order neural ODEs q'' = F(t, q, q') trained from positions only.

`NeuralSecondOrderODE` holds three parts:

- `force`, a `ForceMLP` (t, q, v) -> q'' in normalised coordinates (spec §5: one hidden layer of
  16 softplus units by default, smooth so that the Helmholtz conditions can differentiate it twice);
- `v0_net`, an MLP from the first `n_v0_points` observed positions to the initial velocity (n -> n,
  [16, 16, 16] ReLU for the default of one position), so a model trains from positions alone;
- optionally `q0_net` (`infer_q0=True`), the same kind of MLP giving a correction to the first
  observed position, so that integration does not start from a noisy observation;
- `normaliser`, a `Normaliser` fitted from the data: q̃ = (q - μ_q)/s_q per component and
  t̃ = (t - μ_t)/s_t, hence ṽ = v s_t/s_q and ã = a s_t²/s_q (spec §5).

Integration is one `diffrax.ODETerm` on the state (q̃, ṽ) with vector field (ṽ, F̃(t̃, q̃, ṽ)), an
adaptive solver (Tsit5 by default, or Dopri5) with a `PIDController`, `SaveAt(ts=...)` and the
default `RecursiveCheckpointAdjoint`. `predict` raises on a failed solve; training solves with
`throw=False` and drops unsuccessful trajectories from the loss.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ._ode import SecondOrderSolution, solve_second_order

__all__ = [
    "ForceMLP",
    "NeuralSecondOrderODE",
    "Normaliser",
    "curriculum_length",
    "fit_normaliser",
    "window_times",
]


# ------------------------------------------------------------------------------------------------
# Normalisation
# ------------------------------------------------------------------------------------------------


@typing.final
class Normaliser(eqx.Module):
    """Affine normalisation of time and positions, with the chain-rule maps it implies.

    q = μ_q + s_q q̃ per component and t = μ_t + s_t t̃, hence ṽ = v s_t/s_q and
    ã = a s_t²/s_q. The identity (μ = 0, s = 1) is the default. Fit one from data with
    `fit_normaliser`. The arrays are frozen during training (`train_lnode` never updates them).

    **Arguments:**

    - `q_mean`, `q_scale`: per-component μ_q and s_q, shape `(n,)`; `q_scale > 0`.
    - `t_mean`, `t_scale`: scalars μ_t and s_t; `t_scale > 0`.
    """

    q_mean: Float[Array, " n"]
    q_scale: Float[Array, " n"]
    t_mean: Float[Array, ""]
    t_scale: Float[Array, ""]

    def __init__(
        self,
        q_mean: Float[ArrayLike, " n"],
        q_scale: Float[ArrayLike, " n"],
        t_mean: Float[ArrayLike, ""] = 0.0,
        t_scale: Float[ArrayLike, ""] = 1.0,
    ):
        q_mean = jnp.asarray(q_mean, dtype=float)
        q_scale = jnp.asarray(q_scale, dtype=float)
        if q_mean.ndim != 1 or q_scale.shape != q_mean.shape:
            raise ValueError(
                "`Normaliser`: `q_mean` and `q_scale` must be 1-D of the same length n; got "
                f"shapes {q_mean.shape} and {q_scale.shape}."
            )
        t_mean = jnp.asarray(t_mean, dtype=float)
        t_scale = jnp.asarray(t_scale, dtype=float)
        if t_mean.ndim != 0 or t_scale.ndim != 0:
            raise ValueError(
                "`Normaliser`: `t_mean` and `t_scale` must be scalars; got shapes "
                f"{t_mean.shape} and {t_scale.shape}."
            )
        self.q_mean = q_mean
        self.q_scale = eqx.error_if(
            q_scale, ~jnp.all(q_scale > 0), "`Normaliser`: `q_scale` must be > 0."
        )
        self.t_mean = t_mean
        self.t_scale = eqx.error_if(t_scale, ~(t_scale > 0), "`Normaliser`: `t_scale` must be > 0.")

    @staticmethod
    def identity(n: int) -> Normaliser:
        """The identity map in `n` dimensions."""
        return Normaliser(np.zeros(n), np.ones(n))

    @property
    def n(self) -> int:
        return self.q_mean.shape[0]

    def t_to(self, t: Float[ArrayLike, "*shape"]) -> Float[Array, "*shape"]:
        """t -> t̃."""
        return (jnp.asarray(t) - self.t_mean) / self.t_scale

    def t_from(self, tn: Float[ArrayLike, "*shape"]) -> Float[Array, "*shape"]:
        """t̃ -> t."""
        return self.t_mean + self.t_scale * jnp.asarray(tn)

    def q_to(self, q: Float[ArrayLike, "*shape n"]) -> Float[Array, "*shape n"]:
        """q -> q̃."""
        return (jnp.asarray(q) - self.q_mean) / self.q_scale

    def q_from(self, qn: Float[ArrayLike, "*shape n"]) -> Float[Array, "*shape n"]:
        """q̃ -> q."""
        return self.q_mean + self.q_scale * jnp.asarray(qn)

    def v_to(self, v: Float[ArrayLike, "*shape n"]) -> Float[Array, "*shape n"]:
        """v -> ṽ = v s_t/s_q."""
        return jnp.asarray(v) * (self.t_scale / self.q_scale)

    def v_from(self, vn: Float[ArrayLike, "*shape n"]) -> Float[Array, "*shape n"]:
        """ṽ -> v = ṽ s_q/s_t."""
        return jnp.asarray(vn) * (self.q_scale / self.t_scale)

    def a_to(self, a: Float[ArrayLike, "*shape n"]) -> Float[Array, "*shape n"]:
        """a -> ã = a s_t²/s_q."""
        return jnp.asarray(a) * (self.t_scale**2 / self.q_scale)

    def a_from(self, an: Float[ArrayLike, "*shape n"]) -> Float[Array, "*shape n"]:
        """ã -> a = ã s_q/s_t²."""
        return jnp.asarray(an) * (self.q_scale / self.t_scale**2)

    def force_to(self, force: Callable) -> Callable:
        """A force law F(t, q, v) in physical coordinates, as F̃(t̃, q̃, ṽ) in normalised ones."""

        def normalised(tn, qn, vn):
            return self.a_to(force(self.t_from(tn), self.q_from(qn), self.v_from(vn)))

        return normalised

    def force_from(self, force_n: Callable) -> Callable:
        """A force law F̃(t̃, q̃, ṽ) in normalised coordinates, as F(t, q, v) in physical ones."""

        def physical(t, q, v):
            return self.a_from(force_n(self.t_to(t), self.q_to(q), self.v_to(v)))

        return physical

    def multiplier_to(self, g: Callable) -> Callable:
        """A multiplier g(t, q, v) as g̃(t̃, q̃, ṽ) = S g S / s_t with S = diag(s_q) (pitfall 5)."""

        def normalised(tn, qn, vn):
            gp = g(self.t_from(tn), self.q_from(qn), self.v_from(vn))
            return self.q_scale[:, None] * gp * self.q_scale[None, :] / self.t_scale

        return normalised


def fit_normaliser(
    ts: Float[ArrayLike, " n_time"], qs: Float[ArrayLike, "*batch n_time n"]
) -> Normaliser:
    """Fit a `Normaliser` to observation times `ts` and positions `qs` (spec §5).

    μ_q, s_q are the per-component mean and standard deviation of `qs` over all trajectories and
    times; μ_t, s_t those of `ts`. A constant component or a single time gets scale 1. NaNs are
    rejected.
    """
    ts = np.asarray(ts, dtype=np.float64)
    qs = np.asarray(qs, dtype=np.float64)
    if ts.ndim != 1 or qs.ndim < 2 or qs.shape[-2] != ts.shape[0]:
        raise ValueError(
            "`fit_normaliser`: expected `ts` of shape (n_time,) and `qs` of shape "
            f"(..., n_time, n); got {ts.shape} and {qs.shape}."
        )
    if not (np.all(np.isfinite(ts)) and np.all(np.isfinite(qs))):
        raise ValueError("`fit_normaliser`: `ts` and `qs` must be finite; found NaN or inf.")
    flat = qs.reshape(-1, qs.shape[-1])
    q_std = flat.std(axis=0)
    t_std = ts.std()
    return Normaliser(
        flat.mean(axis=0),
        np.where(q_std > 0, q_std, 1.0),
        ts.mean(),
        t_std if t_std > 0 else 1.0,
    )


# ------------------------------------------------------------------------------------------------
# Networks
# ------------------------------------------------------------------------------------------------


@typing.final
class ForceMLP(eqx.Module):
    """An MLP force law F(t, q, v) -> q'' with input (t, q, v) of size 2n + 1.

    `use_time=False` multiplies the t input by 0 (an autonomous force law; spec §5's optional
    t-suppression). `linear_skip=True` adds a linear map of the same input, initialised at zero
    (F = MLP(x) + A x + b): the network then represents linear forces (oscillators, linear
    damping) exactly instead of through the curvature of its activations, which the Helmholtz
    metric would score. Called as `force(t, q, v)` with scalar `t` and `q, v` of shape `(n,)`.
    """

    mlp: eqx.nn.MLP
    linear: eqx.nn.Linear | None
    n: int = eqx.field(static=True)
    use_time: bool = eqx.field(static=True)

    def __init__(
        self,
        n: int,
        *,
        width: int = 16,
        depth: int = 1,
        activation: Callable = jax.nn.softplus,
        use_time: bool = True,
        linear_skip: bool = False,
        key: PRNGKeyArray,
    ):
        if n < 1 or width < 1 or depth < 0:
            raise ValueError(
                f"`ForceMLP`: need n >= 1, width >= 1, depth >= 0; got n={n}, width={width}, "
                f"depth={depth}."
            )
        self.mlp = eqx.nn.MLP(2 * n + 1, n, width, depth, activation=activation, key=key)
        if linear_skip:
            linear = eqx.nn.Linear(2 * n + 1, n, key=jax.random.fold_in(key, 1))
            self.linear = eqx.tree_at(
                lambda m: (m.weight, m.bias), linear, replace_fn=jnp.zeros_like
            )
        else:
            self.linear = None
        self.n = n
        self.use_time = use_time

    def __call__(self, t, q, v):
        t = jnp.asarray(t, dtype=q.dtype)
        t = t if self.use_time else 0.0 * t
        x = jnp.concatenate([t[None], q, v])
        out = self.mlp(x)
        return out if self.linear is None else out + self.linear(x)


# ------------------------------------------------------------------------------------------------
# The model
# ------------------------------------------------------------------------------------------------


@typing.final
class NeuralSecondOrderODE(eqx.Module):
    """A second-order neural ODE (SONODE) q'' = F(t, q, q') learned from positions only.

    **Arguments:**

    - `n`: the configuration dimension.
    - `normaliser`: a `Normaliser` (see `fit_normaliser`); the identity if `None`.
    - `width`, `depth`, `activation`, `use_time`, `linear_skip`: the force MLP (default one
      hidden layer of 16 softplus units, spec §5; see `ForceMLP`). Keep the activation smooth:
      the Helmholtz metric differentiates F twice.
    - `v0_width`, `v0_depth`, `v0_activation`: the initial-velocity MLP (default [16, 16, 16]
      ReLU).
    - `n_v0_points`: how many leading positions the v0 net reads (default 1: q0 only, as in the
      spec). With k > 1 the net sees q(ts[0..k-1]) flattened, which identifies v0 when it is not
      a function of q0 alone (e.g. Kepler orbits of random eccentricity); the first k observation
      times must then be the same at training and at prediction.
    - `infer_q0`: also learn the initial position, q̃0 = q̃_obs[0] + q0_net(q̃_obs[:k]) (an MLP
      like the v0 net whose last layer starts at zero). Off by default (the spec starts from the
      first observation). With noisy positions, starting from the observation can make the
      data unfittable by the true force law (a 5 % error in r0 changes a Kepler orbit's period),
      which pushes F away from the truth; denoising the start avoids that.
    - `initial_fit_degree`: if set (1 <= degree < `n_v0_points`), a least-squares polynomial of
      this degree through the first positions gives the starting q0 and v0, and the networks
      learn corrections to it (the v0 net, and the q0 net with `infer_q0`; their last layers
      start at zero). The networks alone
      must otherwise learn that linear estimator from noisy data; a ReLU MLP does it poorly,
      and errors in v0 are absorbed by a distorted F.
    - `solver`, `rtol`, `atol`, `max_steps`: the diffrax solve (Tsit5 or Dopri5 with a
      `PIDController`; defaults 1e-6, 1e-6, 4096).
    - `key`: a JAX PRNG key.

    Everything inside (`force`, `v0_net`, `q0_net`) works in normalised coordinates; `predict`,
    `trajectory` and `acceleration` take and return physical ones.
    """

    force: ForceMLP
    v0_net: eqx.nn.MLP
    q0_net: eqx.nn.MLP | None
    normaliser: Normaliser
    solver: diffrax.AbstractAdaptiveSolver
    n: int = eqx.field(static=True)
    n_v0_points: int = eqx.field(static=True)
    initial_fit_degree: int | None = eqx.field(static=True)
    rtol: float = eqx.field(static=True)
    atol: float = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)
    hyperparameters: tuple = eqx.field(static=True)

    def __init__(
        self,
        n: int,
        *,
        normaliser: Normaliser | None = None,
        width: int = 16,
        depth: int = 1,
        activation: Callable = jax.nn.softplus,
        use_time: bool = True,
        linear_skip: bool = False,
        v0_width: int = 16,
        v0_depth: int = 3,
        v0_activation: Callable = jax.nn.relu,
        n_v0_points: int = 1,
        infer_q0: bool = False,
        initial_fit_degree: int | None = None,
        solver: diffrax.AbstractAdaptiveSolver = diffrax.Tsit5(),
        rtol: float = 1e-6,
        atol: float = 1e-6,
        max_steps: int = 4096,
        key: PRNGKeyArray,
    ):
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"`NeuralSecondOrderODE`: `n` must be a positive int; got {n!r}.")
        if n_v0_points < 1:
            raise ValueError(
                f"`NeuralSecondOrderODE`: `n_v0_points` must be >= 1; got {n_v0_points}."
            )
        if initial_fit_degree is not None and not 1 <= initial_fit_degree < n_v0_points:
            raise ValueError(
                "`NeuralSecondOrderODE`: `initial_fit_degree` must be None or an int with "
                f"1 <= degree < n_v0_points = {n_v0_points}; got {initial_fit_degree!r}."
            )
        if not isinstance(solver, diffrax.AbstractAdaptiveSolver):
            raise TypeError(
                "`NeuralSecondOrderODE`: `solver` must be an adaptive diffrax solver "
                f"(Tsit5, Dopri5, ...); got {type(solver).__name__}."
            )
        normaliser = Normaliser.identity(n) if normaliser is None else normaliser
        if normaliser.n != n:
            raise ValueError(
                f"`NeuralSecondOrderODE`: the normaliser is for n = {normaliser.n}; got n = {n}."
            )
        fkey, vkey, qkey = jax.random.split(key, 3)
        self.force = ForceMLP(
            n,
            width=width,
            depth=depth,
            activation=activation,
            use_time=use_time,
            linear_skip=linear_skip,
            key=fkey,
        )
        last = lambda m: (m.layers[-1].weight, m.layers[-1].bias)
        v0_net = eqx.nn.MLP(
            n * n_v0_points, n, v0_width, v0_depth, activation=v0_activation, key=vkey
        )
        if initial_fit_degree is not None:  # a correction of the polynomial slope
            v0_net = eqx.tree_at(last, v0_net, replace_fn=jnp.zeros_like)
        self.v0_net = v0_net
        if infer_q0:
            q0_net = eqx.nn.MLP(
                n * n_v0_points, n, v0_width, v0_depth, activation=v0_activation, key=qkey
            )
            self.q0_net = eqx.tree_at(last, q0_net, replace_fn=jnp.zeros_like)
        else:
            self.q0_net = None
        self.normaliser = normaliser
        self.solver = solver
        self.n = n
        self.n_v0_points = n_v0_points
        self.initial_fit_degree = None if initial_fit_degree is None else int(initial_fit_degree)
        self.rtol = float(rtol)
        self.atol = float(atol)
        self.max_steps = int(max_steps)
        self.hyperparameters = (
            ("n", n),
            ("width", width),
            ("depth", depth),
            ("activation", _name(activation)),
            ("use_time", bool(use_time)),
            ("linear_skip", bool(linear_skip)),
            ("v0_width", v0_width),
            ("v0_depth", v0_depth),
            ("v0_activation", _name(v0_activation)),
            ("n_v0_points", n_v0_points),
            ("infer_q0", bool(infer_q0)),
            ("initial_fit_degree", self.initial_fit_degree),
            ("solver", type(solver).__name__),
            ("rtol", float(rtol)),
            ("atol", float(atol)),
            ("max_steps", int(max_steps)),
        )

    # -- normalised-coordinate pieces (used by training and the metric) -------------------------

    def initial_state(
        self, qn_init: Float[Array, "k n"], tn_init: Float[Array, " k"] | None = None
    ) -> tuple[Float[Array, " n"], Float[Array, " n"]]:
        """(q̃0, ṽ0) from the first `n_v0_points` normalised positions, shape `(k, n)`.

        Without `initial_fit_degree`: q̃0 is `qn_init[0]` (plus the `q0_net` correction when
        `infer_q0=True`) and ṽ0 is `v0_net(qn_init)`. With it, a least-squares polynomial of
        that degree is fitted to the positions at their normalised times `tn_init` (required
        then); its value and slope at `tn_init[0]` start q̃0 and ṽ0, and the networks add
        corrections (their last layers start at zero).
        """
        flat = qn_init.reshape(-1)
        if self.initial_fit_degree is None:
            q_base, v_base = qn_init[0], 0.0
        else:
            if tn_init is None:
                raise ValueError(
                    "`initial_state`: a model with `initial_fit_degree` needs the times of the "
                    "first positions (`tn_init`)."
                )
            q_base, v_base = _polyfit_start(tn_init, qn_init, self.initial_fit_degree)
        q0 = q_base if self.q0_net is None else q_base + self.q0_net(flat)
        return q0, v_base + self.v0_net(flat)

    def solve_normalised(
        self,
        tn: Float[Array, " n_time"],
        qn_init: Float[Array, "k n"],
        *,
        throw: bool = True,
    ) -> SecondOrderSolution:
        """Integrate in normalised coordinates from `initial_state(qn_init, tn[:k])`."""
        q0, v0 = self.initial_state(qn_init, tn[: self.n_v0_points])
        return solve_second_order(
            self.force,
            tn,
            q0,
            v0,
            solver=self.solver,
            rtol=self.rtol,
            atol=self.atol,
            max_steps=self.max_steps,
            throw=throw,
        )

    # -- physical coordinates ---------------------------------------------------------------------

    def _check_inputs(self, ts, q0, name):
        ts = jnp.asarray(ts)
        if ts.ndim != 1 or ts.shape[0] < 2:
            raise ValueError(
                f"`{name}`: `ts` must be 1-D with at least 2 times; got shape {ts.shape}."
            )
        q0 = jnp.asarray(q0)
        k, n = self.n_v0_points, self.n
        if k == 1 and q0.shape == (n,):
            q0 = q0[None]
        if q0.shape != (k, n):
            want = f"({n},) or (1, {n})" if k == 1 else f"({k}, {n}) (the first {k} positions)"
            raise ValueError(f"`{name}`: `q0` must have shape {want}; got {q0.shape}.")
        if ts.shape[0] < k:
            raise ValueError(
                f"`{name}`: `ts` must hold at least n_v0_points = {k} times; got {ts.shape[0]}."
            )
        return ts, q0

    def trajectory(
        self,
        ts: Float[ArrayLike, " n_time"],
        q0: Float[ArrayLike, "*k n"],
        *,
        throw: bool = True,
    ) -> SecondOrderSolution:
        """Positions, velocities and the solver result at the physical times `ts`.

        `q0` is the first position, shape `(n,)`, or the first `n_v0_points` positions,
        shape `(n_v0_points, n)`, observed at `ts[:n_v0_points]`.
        """
        ts, q0 = self._check_inputs(ts, q0, "NeuralSecondOrderODE.trajectory")
        dtype = self.normaliser.q_scale.dtype
        ts, q0 = ts.astype(dtype), q0.astype(dtype)
        nz = self.normaliser
        qn, vn, result = self.solve_normalised(nz.t_to(ts), nz.q_to(q0), throw=throw)
        return SecondOrderSolution(nz.q_from(qn), nz.v_from(vn), result)

    def predict(
        self, ts: Float[ArrayLike, " n_time"], q0: Float[ArrayLike, "*k n"]
    ) -> Float[Array, "n_time n"]:
        """Predicted positions at `ts` (physical units); raises if the solve fails."""
        return self.trajectory(ts, q0)[0]

    def __call__(
        self, ts: Float[ArrayLike, " n_time"], q0: Float[ArrayLike, "*k n"]
    ) -> Float[Array, "n_time n"]:
        """Same as `predict`."""
        return self.predict(ts, q0)

    def acceleration(self, t, q, v) -> Float[Array, " n"]:
        """The learned force law F(t, q, v) in physical coordinates."""
        return self.normaliser.force_from(self.force)(t, q, v)


def _polyfit_start(tn, qn, degree: int):
    """Value and slope at `tn[0]` of the least-squares polynomial of `degree` through (tn, qn)."""
    dt = tn - tn[0]
    scale = jnp.maximum(jnp.max(jnp.abs(dt)), jnp.finfo(dt.dtype).tiny)
    x = dt / scale
    design = x[:, None] ** jnp.arange(degree + 1)[None, :]
    coef, *_ = jnp.linalg.lstsq(design, qn)
    return coef[0], coef[1] / scale


def _name(fn: Callable) -> str:
    return getattr(fn, "__name__", type(fn).__name__)


def curriculum_fraction(step, s_half: float) -> Array:
    """r(s) = 1/(1 + exp(-ln 3 (s - s½)/w)) with w = s½/2, so r(0) = 0.1 (spec §5)."""
    w = s_half / 2.0
    return jax.nn.sigmoid(math.log(3.0) * (jnp.asarray(step, dtype=float) - s_half) / w)


def curriculum_length(step, n_time: int, s_half: float | None) -> Array:
    """Number of leading points used at step `s`: max(2, ⌈r n_t⌉), all once r > 0.999."""
    if s_half is None or s_half <= 0:
        return jnp.asarray(n_time, dtype=jnp.int32)
    r = curriculum_fraction(step, s_half)
    m = jnp.maximum(2, jnp.ceil(r * n_time)).astype(jnp.int32)
    return jnp.where(r > 0.999, n_time, jnp.minimum(m, n_time)).astype(jnp.int32)


def window_times(tn: Float[Array, " n_time"], window: Array) -> Float[Array, " n_time"]:
    """Save times for a solve that only needs the first `window` points of `tn`.

    Times from index `window` on are moved into the interval after `tn[window - 1]`, evenly and
    strictly increasing, so the solve ends at most one sample interval after the window (at
    `tn[window - 1]` plus a fraction of the next spacing) and keeps a fixed output shape.
    """
    n_time = tn.shape[0]
    i = jnp.arange(n_time)
    last = tn[window - 1]
    gap = tn[jnp.minimum(window, n_time - 1)] - last
    extra = last + gap * (i - window + 1) / (n_time - window + 1)
    return jnp.where(i < window, tn, extra)
