"""Helmholtz conditions (Douglas/Sarlet and Santilli forms) and the learned-multiplier metric.

For `q'' = F(t, q, v)` a Lagrangian exists (locally, on the domain considered) iff some
symmetric, non-singular `g(t, q, v)` satisfies

- (H1) `g Φ = (g Φ)ᵀ` with `Φ = ½ D_t(J_v) − J_q − ¼ J_v J_v`;
- (H2) `D_t g + ½ (J_vᵀ g + g J_v) = 0`;
- (H3) `∂g_ij/∂v_k = ∂g_ik/∂v_j`,

where `J_q = ∂F/∂q`, `J_v = ∂F/∂v` and `D_t = ∂_t + v·∂_q + F·∂_v` is the total derivative along
the flow. `g` may be indefinite. Everything here is a pure function of callables, so it works
with analytic functions and with `eqx.Module` networks, under `jit`, `vmap` and `grad`.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ._ode import Force

#: A multiplier `g(t, q, v) -> (n, n)`, symmetric.
Multiplier = Callable[[Array, Array, Array], Array]
#: Sample points `(ts, qs, vs)` of shapes `(m,)`, `(m, n)`, `(m, n)`.
Points = tuple[ArrayLike, ArrayLike, ArrayLike]

_ONE_D_MESSAGE = (
    "every 1-D second-order ODE is variational (Darboux), so a Helmholtz metric cannot "
    "discriminate at n = 1; use n >= 2 or restrict g by hand"
)


class HelmholtzResiduals(NamedTuple):
    """The Helmholtz residuals at one point (leading batch axes under `vmap`).

    **Fields:**

    - `r1`: `g Φ − (g Φ)ᵀ`, shape `(n, n)` (condition H1).
    - `r2`: `D_t g + ½ (J_vᵀ g + g J_v)`, shape `(n, n)` (condition H2).
    - `r3`: `r3[i, j, k] = ∂g_ij/∂v_k − ∂g_ik/∂v_j`, shape `(n, n, n)` (condition H3).
    """

    r1: Float[Array, "*batch n n"]
    r2: Float[Array, "*batch n n"]
    r3: Float[Array, "*batch n n n"]


class SantilliResiduals(NamedTuple):
    """The Santilli self-adjointness residuals of `E(t, q, v, a) = 0` at one point.

    **Fields:**

    - `s1`: `∂E_i/∂a_j − ∂E_j/∂a_i`, shape `(n, n)` (condition i).
    - `s2`: `∂E_i/∂v_j + ∂E_j/∂v_i − 2 d/dt(∂E_j/∂a_i)`, shape `(n, n)` (condition ii).
    - `s3`: `∂E_i/∂q_j − ∂E_j/∂q_i − ½ d/dt(∂E_i/∂v_j − ∂E_j/∂v_i)`, shape `(n, n)`
      (condition iii).
    """

    s1: Float[Array, "*batch n n"]
    s2: Float[Array, "*batch n n"]
    s3: Float[Array, "*batch n n"]


class HelmholtzLoss(NamedTuple):
    """The Helmholtz metric `H = w1 H1 + w2 H2 + w3 H3` and its three parts.

    Each field is a scalar (mean over points) or, with `pointwise=True`, an array of shape
    `(m,)` (mean over the residual entries at each point). The parts are unweighted.
    """

    H: Float[Array, "*m"]
    H1: Float[Array, "*m"]
    H2: Float[Array, "*m"]
    H3: Float[Array, "*m"]


# ---------------------------------------------------------------------------------------------
# Residuals
# ---------------------------------------------------------------------------------------------


def _as_point(name: str, t, q, v):
    q = jnp.asarray(q)
    v = jnp.asarray(v)
    t = jnp.asarray(t)
    if q.ndim != 1 or v.shape != q.shape or t.ndim != 0:
        raise ValueError(
            f"`{name}`: expected one point, a scalar `t` and `q`, `v` of shape (n,); got t "
            f"{t.shape}, q {q.shape}, v {v.shape}. For many points use jax.vmap (see the "
            "docstring) or `helmholtz_loss`."
        )
    dtype = jnp.result_type(q, v, t, float)
    return t.astype(dtype), q.astype(dtype), v.astype(dtype)


def _check_output(name: str, what: str, value, shape) -> None:
    if value.shape != shape:
        raise ValueError(
            f"`{name}`: `{what}` must return shape {shape} at a point with n = {shape[0]}; got "
            f"{value.shape}."
        )


class _ForceTerms(NamedTuple):
    """F, J_q, J_v and D_t J_v at a point: everything the residuals need from the force."""

    a: Array
    jq: Array
    jv: Array
    dt_jv: Array


def _force_terms(force: Force, t, q, v) -> _ForceTerms:
    """F, J_q, J_v and D_t J_v at one point: one jacfwd and one jvp with tangent (1, v, F)."""
    a = force(t, q, v)
    _check_output("helmholtz_residuals", "F", a, q.shape)
    a = a.astype(q.dtype)

    def jacobians(t, q, v):
        return jax.jacfwd(force, argnums=(1, 2))(t, q, v)

    (jq, jv), (_, dt_jv) = jax.jvp(jacobians, (t, q, v), (jnp.ones_like(t), v, a))
    return _ForceTerms(a, jq, jv, dt_jv)


def _multiplier_terms(g: Multiplier, t, q, v, a):
    """g, D_t g and ∂g/∂v at one point: one vmapped jvp over the n + 1 tangents."""
    n = q.shape[0]
    _check_output("helmholtz_residuals", "g", jax.eval_shape(g, t, q, v), (n, n))
    dts = jnp.zeros((n + 1,), t.dtype).at[0].set(1)
    dqs = jnp.zeros((n + 1, n), q.dtype).at[0].set(v)
    dvs = jnp.concatenate([a[None], jnp.eye(n, dtype=q.dtype)])

    def push(dt, dq, dv):
        return jax.jvp(g, (t, q, v), (dt, dq, dv))

    gv, tangents = jax.vmap(push, out_axes=(None, 0))(dts, dqs, dvs)
    # tangents[0] = D_t g; tangents[1 + k][i, j] = ∂g_ij/∂v_k.
    return gv, tangents[0], jnp.moveaxis(tangents[1:], 0, -1)


def _residuals_from_terms(terms: _ForceTerms, g: Multiplier, t, q, v):
    gv, dt_g, dg_dv = _multiplier_terms(g, t, q, v, terms.a)
    jv = terms.jv
    phi = 0.5 * terms.dt_jv - terms.jq - 0.25 * (jv @ jv)
    g_phi = gv @ phi
    r1 = g_phi - g_phi.T
    r2 = dt_g + 0.5 * (jv.T @ gv + gv @ jv)
    r3 = dg_dv - jnp.swapaxes(dg_dv, -1, -2)
    return HelmholtzResiduals(r1, r2, r3), gv


def _residuals_and_g(force: Force, g: Multiplier, t, q, v):
    return _residuals_from_terms(_force_terms(force, t, q, v), g, t, q, v)


def helmholtz_residuals(
    F: Force,
    g: Multiplier,
    t: float | Float[ArrayLike, ""],
    q: Float[ArrayLike, " n"],
    v: Float[ArrayLike, " n"],
) -> HelmholtzResiduals:
    """The Douglas/Sarlet residuals R1, R2, R3 of `q'' = F(t, q, v)` for a multiplier `g`.

    With `J_q = ∂F/∂q`, `J_v = ∂F/∂v` (`J[i, j] = ∂F_i/∂x_j`) and the total derivative along
    the flow `D_t = ∂_t + v·∂_q + F·∂_v`:

    - `R1 = g Φ − (g Φ)ᵀ` with `Φ = ½ D_t(J_v) − J_q − ¼ J_v J_v`;
    - `R2 = D_t g + ½ (J_vᵀ g + g J_v)`;
    - `R3[i, j, k] = ∂g_ij/∂v_k − ∂g_ik/∂v_j`.

    `J_q`, `J_v` and `∂g/∂v` come from `jax.jacfwd`; `D_t J_v` and `D_t g` are each one
    `jax.jvp` with tangent `(1, v, F(t, q, v))`.

    All three vanish iff `g` makes the system an Euler-Lagrange system (given `g = gᵀ` and
    `det g ≠ 0`, which are not checked here). **A non-zero residual for one guessed `g` proves
    nothing**: the curl force `F = (−q2, q1)` fails with `g = I` (`max|R1| = 2`) but is
    Lagrangian with the indefinite `g = [[−1, 1], [1, 1]]`. Only the minimum over `g` decides;
    see [`helmholtz_metric`][diffgal.lagrangian.helmholtz_metric].

    The function handles one point. For many points, vmap it with the callables held fixed:

    ```python
    import jax
    import jax.numpy as jnp
    from diffgal.lagrangian import helmholtz_residuals

    F = lambda t, q, v: jnp.stack([-q[1], q[0]])           # curl force
    g = lambda t, q, v: jnp.array([[-1.0, 1.0], [1.0, 1.0]])
    ts, qs, vs = jnp.zeros(5), jnp.ones((5, 2)), jnp.ones((5, 2))
    res = jax.vmap(helmholtz_residuals, in_axes=(None, None, 0, 0, 0))(F, g, ts, qs, vs)
    print(res.r1.shape, float(jnp.abs(res.r1).max()))      # (5, 2, 2) 0.0
    ```

    **Arguments:**

    - `F`: the force law `F(t, q, v) -> (n,)`, a function or an `eqx.Module`.
    - `g`: the multiplier `g(t, q, v) -> (n, n)`, symmetric.
    - `t`: time, a scalar.
    - `q`, `v`: position and velocity, shape `(n,)`.

    **Returns:**

    A [`HelmholtzResiduals`][diffgal.lagrangian.HelmholtzResiduals] `(r1, r2, r3)` with shapes
    `(n, n)`, `(n, n)`, `(n, n, n)`; it unpacks as a tuple.
    """
    t, q, v = _as_point("helmholtz_residuals", t, q, v)
    residuals, _ = _residuals_and_g(F, g, t, q, v)
    return residuals


def santilli_residuals(
    E: Callable[[Array, Array, Array, Array], Array],
    t: float | Float[ArrayLike, ""],
    q: Float[ArrayLike, " n"],
    v: Float[ArrayLike, " n"],
    a: Float[ArrayLike, " n"],
    jerk: Float[ArrayLike, " n"] | None = None,
) -> SantilliResiduals:
    """Santilli's self-adjointness residuals of equations given as `E(t, q, v, a) = 0`.

    `E` (for example the Euler-Lagrange expression `d/dt ∂L/∂v − ∂L/∂q` of an LNN) is an
    Euler-Lagrange expression iff, **identically** in `(t, q, v, a, jerk)`,

    - (i) `∂E_i/∂a_j = ∂E_j/∂a_i`;
    - (ii) `∂E_i/∂v_j + ∂E_j/∂v_i = 2 d/dt(∂E_j/∂a_i)`;
    - (iii) `∂E_i/∂q_j − ∂E_j/∂q_i = ½ d/dt(∂E_i/∂v_j − ∂E_j/∂v_i)`,

    with the formal total derivative `d/dt = ∂_t + v·∂_q + a·∂_v + jerk·∂_a`. Here `a = q''` and
    `jerk = q'''` are free variables, not values from a flow, so check at random `(a, jerk)` as
    well as random `(t, q, v)`. `jerk` only matters when `E` is nonlinear in `a`.

    Example: `E = a + γ v + K q` fails (ii) with `s2 = 2γ I`; `e^{γt} E` passes.

    **Arguments:**

    - `E`: the expression `E(t, q, v, a) -> (n,)`.
    - `t`: time, a scalar.
    - `q`, `v`, `a`: position, velocity and acceleration, shape `(n,)`.
    - `jerk`: the third derivative, shape `(n,)`; default zeros.

    **Returns:**

    A [`SantilliResiduals`][diffgal.lagrangian.SantilliResiduals] `(s1, s2, s3)`, each `(n, n)`.
    Vmap over points as for `helmholtz_residuals`.
    """
    t, q, v = _as_point("santilli_residuals", t, q, v)
    a = jnp.asarray(a, q.dtype)
    jerk = jnp.zeros_like(q) if jerk is None else jnp.asarray(jerk, q.dtype)
    if a.shape != q.shape or jerk.shape != q.shape:
        raise ValueError(
            f"`santilli_residuals`: `a` and `jerk` must have the shape of `q`, {q.shape}; got "
            f"{a.shape} and {jerk.shape}."
        )
    _check_output("santilli_residuals", "E", E(t, q, v, a), q.shape)

    def jacobians(t, q, v, a):
        return jax.jacfwd(E, argnums=(1, 2, 3))(t, q, v, a)

    (e_q, e_v, e_a), (_, dt_e_v, dt_e_a) = jax.jvp(
        jacobians, (t, q, v, a), (jnp.ones_like(t), v, a, jerk)
    )
    s1 = e_a - e_a.T
    s2 = e_v + e_v.T - 2.0 * dt_e_a.T
    s3 = e_q - e_q.T - 0.5 * (dt_e_v - dt_e_v.T)
    return SantilliResiduals(s1, s2, s3)


def euler_lagrange_expression(
    L: Callable[[Array, Array, Array], Array],
) -> Callable[[Array, Array, Array, Array], Array]:
    """The Euler-Lagrange expression `E = d/dt ∂L/∂v − ∂L/∂q` of a Lagrangian, as a function.

    `E(t, q, v, a) = ∂²L/∂v∂t + (∂²L/∂v∂q) v + (∂²L/∂v∂v) a − ∂L/∂q`, by autodiff.

    **Arguments:**

    - `L`: the Lagrangian `L(t, q, v) -> scalar`.

    **Returns:**

    `E(t, q, v, a) -> (n,)`, for example to pass to
    [`santilli_residuals`][diffgal.lagrangian.santilli_residuals].
    """
    dl_dq = jax.grad(L, argnums=1)
    dl_dv = jax.grad(L, argnums=2)

    def expression(t, q, v, a):
        _, total = jax.jvp(dl_dv, (t, q, v), (jnp.ones_like(t), v, a))
        return total - dl_dq(t, q, v)

    return expression


# ---------------------------------------------------------------------------------------------
# The multiplier network and the normalised metric
# ---------------------------------------------------------------------------------------------


@typing.final
class SymmetricMatrixMLP(eqx.Module):
    """A learned multiplier `g(t, q, v)`: an MLP with a sinh head, assembled as `U + Uᵀ`.

    The MLP maps `(t, q, v)` (size `2n + 1`) to `n(n+1)/2` outputs. Each output goes through
    `sinh`, so `g` can reach exponential magnitudes such as `e^{γt}`, and fills the upper
    triangle (diagonal included) of `U`; then `g = U + Uᵀ`. Symmetry (S) holds by construction.
    `g` may be indefinite; non-singularity (N) is enforced by the σ_min normalisation of the
    metric, not here.

    **Arguments:**

    - `n`: the system dimension.
    - `width`, `depth`: hidden-layer width and number of hidden layers (default 2 × 64).
    - `activation`: the hidden activation; it must be smooth (default `jax.nn.softplus`),
      because the metric differentiates g.
    - `use_time`: if False the `t` input is multiplied by 0, giving a time-independent g.
      Dissipative systems such as the damped oscillator need `use_time=True`.
    - `init`: `"identity"` (default) scales the output layer's weights by `head_scale` and sets
      its bias so that `g ≈ diag(±1)` at initialisation; `"random"` keeps equinox's default
      initialisation. With the random one the sinh head often starts far from any good `g`
      (entries of size 1–10 whose scale then runs away), and training stalls at H ~ 1–20 on
      Kepler; starting near `I` (plus a learning-rate warm-up) converges reliably.
    - `signature`: for `init="identity"`, the number of `−1` entries of the initial diagonal
      (`g ≈ diag(−1, …, −1, 1, …, 1)`). Training cannot change the signature of g, because that
      would pass through a singular g, which the σ_min normalisation forbids. An indefinite
      multiplier (the curl force) is therefore found only from an indefinite start; see
      `signatures` in [`fit_multiplier`][diffgal.lagrangian.fit_multiplier].
    - `head_scale`: the output-layer weight scale for `init="identity"`.
    - `dtype`: the parameter dtype (default: JAX's default float).
    - `key`: a `jax.random.key` for the initialisation.
    """

    mlp: eqx.nn.MLP
    n: int = eqx.field(static=True)
    use_time: bool = eqx.field(static=True)

    def __init__(
        self,
        n: int,
        *,
        width: int = 64,
        depth: int = 2,
        activation: Callable[[Array], Array] = jax.nn.softplus,
        use_time: bool = True,
        init: str = "identity",
        signature: int = 0,
        head_scale: float = 1e-2,
        dtype: Any = None,
        key: PRNGKeyArray,
    ):
        if not isinstance(n, int | np.integer) or n < 1:
            raise ValueError(f"`SymmetricMatrixMLP`: `n` must be a positive integer; got {n!r}.")
        if init not in ("identity", "random"):
            raise ValueError(
                f"`SymmetricMatrixMLP`: `init` must be 'identity' or 'random'; got {init!r}."
            )
        if not isinstance(signature, int | np.integer) or not 0 <= signature <= n:
            raise ValueError(
                f"`SymmetricMatrixMLP`: `signature` (the number of negative eigenvalues of the "
                f"initial g) must be an integer in [0, n] = [0, {n}]; got {signature!r}."
            )
        self.n = int(n)
        self.use_time = bool(use_time)
        mlp = eqx.nn.MLP(
            in_size=2 * self.n + 1,
            out_size=self.n * (self.n + 1) // 2,
            width_size=width,
            depth=depth,
            activation=activation,
            dtype=dtype,
            key=key,
        )
        if init == "identity":
            head = mlp.layers[-1]
            rows, cols = np.triu_indices(self.n)
            # g = U + Uᵀ with diagonal entries 2 sinh(±b) = ±1 and off-diagonal sinh(0) = 0:
            # g ≈ diag(−1, ..., −1, 1, ..., 1) with `signature` negative entries.
            sign = np.where(rows < signature, -1.0, 1.0)
            bias = np.where(rows == cols, sign * np.arcsinh(0.5), 0.0)
            mlp = eqx.tree_at(
                lambda m: (m.layers[-1].weight, m.layers[-1].bias),
                mlp,
                (head.weight * head_scale, jnp.asarray(bias, head.bias.dtype)),
            )
        self.mlp = mlp

    def __call__(
        self, t: Float[ArrayLike, ""], q: Float[Array, " n"], v: Float[Array, " n"]
    ) -> Float[Array, "n n"]:
        """`g(t, q, v)`, a symmetric `(n, n)` matrix."""
        q = jnp.asarray(q)
        if q.shape != (self.n,) or jnp.shape(v) != (self.n,) or jnp.ndim(t) != 0:
            raise ValueError(
                f"`SymmetricMatrixMLP`: expected a scalar t and q, v of shape ({self.n},); got "
                f"t {jnp.shape(t)}, q {q.shape}, v {jnp.shape(v)}. Use jax.vmap for batches."
            )
        t = jnp.asarray(t, q.dtype)
        t_in = t if self.use_time else 0.0 * t
        x = jnp.concatenate([t_in[None], q, jnp.asarray(v, q.dtype)])
        out = jnp.sinh(self.mlp(x))
        rows, cols = np.triu_indices(self.n)
        upper = jnp.zeros((self.n, self.n), out.dtype).at[rows, cols].set(out)
        return upper + upper.T


def sigma_min(g: Float[Array, "*batch n n"]) -> Float[Array, "*batch"]:
    """The smallest singular value of a symmetric matrix, `min |eigvalsh(g)|`.

    Its gradient is finite at `g ∝ I` (degenerate eigenvalues).
    """
    return jnp.min(jnp.abs(jnp.linalg.eigvalsh(g)), axis=-1)


def soft_clip(x: ArrayLike, clip: float | None = 10.0) -> Array:
    """`clip · tanh(x / clip)`: identity near 0, bounded by `clip`; `clip=None` disables it."""
    x = jnp.asarray(x)
    return x if clip is None else clip * jnp.tanh(x / clip)


def normalised_residuals(
    residuals: HelmholtzResiduals,
    g_value: Float[Array, "n n"],
    *,
    eps: float = 1e-6,
    clip: float | None = 10.0,
) -> HelmholtzResiduals:
    """Residuals divided by `σ_min(g) + eps` and soft-clipped by `clip · tanh(x / clip)`.

    The division makes the metric invariant to `g → c g` and blows up as `g` becomes singular,
    which enforces (N) and rules out `g = 0`. The clip bounds each entry by `clip` (so each
    squared entry by `clip²`).

    **Arguments:**

    - `residuals`: the output of `helmholtz_residuals` at one point.
    - `g_value`: `g(t, q, v)` at the same point.
    - `eps`: added to `σ_min`.
    - `clip`: the soft-clip level; `None` disables the clip.

    **Returns:**

    The normalised, clipped [`HelmholtzResiduals`][diffgal.lagrangian.HelmholtzResiduals].
    """
    scale = 1.0 / (sigma_min(g_value) + eps)
    return HelmholtzResiduals(*(soft_clip(r * scale, clip) for r in residuals))


def _parts_from_terms(terms, g, t, q, v, eps, clip):
    residuals, gv = _residuals_from_terms(terms, g, t, q, v)
    r1, r2, r3 = normalised_residuals(residuals, gv, eps=eps, clip=clip)
    return jnp.mean(r1**2), jnp.mean(r2**2), jnp.mean(r3**2)


def _point_parts(force, g, t, q, v, eps, clip):
    return _parts_from_terms(_force_terms(force, t, q, v), g, t, q, v, eps, clip)


def _as_points(name: str, ts, qs, vs):
    ts, qs, vs = jnp.asarray(ts), jnp.asarray(qs), jnp.asarray(vs)
    if qs.ndim < 1 or vs.shape != qs.shape or ts.shape != qs.shape[:-1]:
        raise ValueError(
            f"`{name}`: expected ts (m,), qs (m, n), vs (m, n) (or any common leading axes); "
            f"got ts {ts.shape}, qs {qs.shape}, vs {vs.shape}. `vs` must match `qs`, and `ts` "
            "must have the shape of `qs` without its last axis."
        )
    n = qs.shape[-1]
    if n == 1:
        raise ValueError(f"`{name}`: the system dimension is 1; {_ONE_D_MESSAGE}.")
    dtype = jnp.result_type(qs, vs, ts, float)
    return (
        ts.reshape(-1).astype(dtype),
        qs.reshape(-1, n).astype(dtype),
        vs.reshape(-1, n).astype(dtype),
    )


def _check_weights(name: str, weights) -> tuple[float, float, float]:
    if len(weights) != 3:
        raise ValueError(
            f"`{name}`: `weights` must be three numbers (w1, w2, w3) for H1, H2, H3; got "
            f"{weights!r}."
        )
    return tuple(weights)


def helmholtz_loss(
    F: Force,
    g: Multiplier,
    ts: Float[ArrayLike, " m"],
    qs: Float[ArrayLike, "m n"],
    vs: Float[ArrayLike, "m n"],
    *,
    weights: Sequence[float] = (1.0, 1.0, 1.0),
    clip: float | None = 10.0,
    eps: float = 1e-6,
    pointwise: bool = False,
) -> HelmholtzLoss:
    """The Helmholtz metric of `q'' = F(t, q, v)` for a multiplier `g`, on sample points.

    At each point the residuals are normalised by `σ_min(g) + eps` and soft-clipped with
    `c(x) = clip · tanh(x / clip)` (see
    [`normalised_residuals`][diffgal.lagrangian.normalised_residuals]). `H_k` is the mean of
    `c(R̃_k)²` over all entries and points, and `H = w1 H1 + w2 H2 + w3 H3`.

    This is a pure function of its callables: it jits, and it is differentiable with respect to
    the arrays of `F` and of `g` when they are `eqx.Module`s (the LNODE regulariser and
    [`fit_multiplier`][diffgal.lagrangian.fit_multiplier] both call it). All points are
    processed in one `vmap`; split very large sets yourself.

    The value certifies Euler-Lagrange-ness **only on the points given**: report the sampling
    box or trajectory set with it.

    **Arguments:**

    - `F`: the force law `F(t, q, v) -> (n,)`.
    - `g`: the multiplier `g(t, q, v) -> (n, n)`, for example a
      [`SymmetricMatrixMLP`][diffgal.lagrangian.SymmetricMatrixMLP].
    - `ts`, `qs`, `vs`: points of shapes `(m,)`, `(m, n)`, `(m, n)`; common leading axes such as
      `(n_traj, n_time)` are flattened.
    - `weights`: `(w1, w2, w3)`; the spec fixes `w1 = 1`.
    - `clip`: the soft-clip level (`None`: no clip).
    - `eps`: added to `σ_min(g)`.
    - `pointwise`: return per-point values (shape `(m,)`, or the leading axes of `qs`) instead
      of means.

    **Returns:**

    A [`HelmholtzLoss`][diffgal.lagrangian.HelmholtzLoss] `(H, H1, H2, H3)` (parts unweighted).
    """
    w1, w2, w3 = _check_weights("helmholtz_loss", weights)
    leading = jnp.shape(qs)[:-1]
    ts, qs, vs = _as_points("helmholtz_loss", ts, qs, vs)
    h1, h2, h3 = jax.vmap(lambda t, q, v: _point_parts(F, g, t, q, v, eps, clip))(ts, qs, vs)
    if pointwise:
        h1, h2, h3 = h1.reshape(leading), h2.reshape(leading), h3.reshape(leading)
    else:
        h1, h2, h3 = jnp.mean(h1), jnp.mean(h2), jnp.mean(h3)
    return HelmholtzLoss(H=w1 * h1 + w2 * h2 + w3 * h3, H1=h1, H2=h2, H3=h3)


# ---------------------------------------------------------------------------------------------
# Fitting g to a fixed force
# ---------------------------------------------------------------------------------------------


class MultiplierFit(NamedTuple):
    """The result of [`fit_multiplier`][diffgal.lagrangian.fit_multiplier].

    **Fields:**

    - `g`: the trained [`SymmetricMatrixMLP`][diffgal.lagrangian.SymmetricMatrixMLP] with the
      lowest final `H` over the signatures tried.
    - `metric`: the [`HelmholtzLoss`][diffgal.lagrangian.HelmholtzLoss] of that `g` on **all**
      points (scalars).
    - `history`: its mini-batch `H` at every step, a NumPy array of shape `(steps,)`.
    - `initial`: the `HelmholtzLoss` of its initial `g` on all points.
    - `signature`: the initial signature (number of negative eigenvalues) of the best `g`, or
      `None` when a starting `g` was given.
    - `by_signature`: `{signature: final H}` for every signature tried.
    """

    g: SymmetricMatrixMLP
    metric: HelmholtzLoss
    history: np.ndarray
    initial: HelmholtzLoss
    signature: int | None
    by_signature: dict[int, float]


@eqx.filter_jit
def _precompute_force_terms(force, ts, qs, vs, batch_size):
    one = lambda point: _force_terms(force, *point)
    return jax.lax.map(one, (ts, qs, vs), batch_size=min(batch_size, ts.shape[0]))


@eqx.filter_jit
def _evaluate_from_terms(g, data, weights, clip, eps, batch_size):
    ts, qs, vs, terms = data
    one = lambda point: _parts_from_terms(point[3], g, *point[:3], eps, clip)
    h1, h2, h3 = jax.lax.map(one, (ts, qs, vs, terms), batch_size=min(batch_size, ts.shape[0]))
    h1, h2, h3 = jnp.mean(h1), jnp.mean(h2), jnp.mean(h3)
    w1, w2, w3 = weights
    return HelmholtzLoss(H=w1 * h1 + w2 * h2 + w3 * h3, H1=h1, H2=h2, H3=h3)


def _make_optimiser(steps, lr, lr_end, warmup_steps):
    if warmup_steps > 0:
        schedule = optax.warmup_cosine_decay_schedule(
            0.0, lr, warmup_steps, steps, end_value=lr_end
        )
    else:
        schedule = optax.cosine_decay_schedule(lr, steps, alpha=lr_end / lr)
    return optax.adam(schedule)


@eqx.filter_jit
def _train_chunk(params, opt_state, first_step, keys, static, data, config):
    """`keys.shape[0]` Adam steps of g in one `lax.scan`; steps past `config["steps"]` are skipped.

    `params` and `opt_state` carry a leading ensemble axis (one member per initial signature).
    Module-level, with F entering only through the precomputed force terms in `data`, so one
    compilation serves every force with the same shapes and configuration.
    """
    ts, qs, vs, terms = data
    steps, batch_size, weights = config["steps"], config["batch_size"], config["weights"]
    clip, eps = config["clip"], config["eps"]
    optimiser = _make_optimiser(steps, config["lr"], config["lr_end"], config["warmup"])
    m = ts.shape[0]

    def loss_fn(params, idx):
        g = eqx.combine(params, static)
        batch = jax.tree_util.tree_map(lambda x: x[idx], (ts, qs, vs, terms))
        one = lambda t, q, v, tm: _parts_from_terms(tm, g, t, q, v, eps, clip)
        h1, h2, h3 = jax.vmap(one)(*batch)
        w1, w2, w3 = weights
        return w1 * jnp.mean(h1) + w2 * jnp.mean(h2) + w3 * jnp.mean(h3)

    def member_update(params, opt_state, idx):
        value, grads = jax.value_and_grad(loss_fn)(params, idx)
        updates, opt_state = optimiser.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    n_members = jax.tree_util.tree_leaves(params)[0].shape[0]
    if n_members == 1:
        # No vmap for a single member: a size-1 batch axis makes XLA's CPU matmuls ~2x slower.
        def members_update(params, opt_state, idx):
            squeeze = lambda tree: jax.tree_util.tree_map(lambda x: x[0], tree)
            out = member_update(squeeze(params), squeeze(opt_state), idx)
            return jax.tree_util.tree_map(lambda x: x[None], out)
    else:
        members_update = jax.vmap(member_update, in_axes=(0, 0, None))

    def step(carry, xs):
        params, opt_state = carry
        index, k = xs

        def update(params, opt_state):
            # All ensemble members (one per initial signature) see the same mini-batch.
            idx = jax.random.randint(k, (batch_size,), 0, m)
            return members_update(params, opt_state, idx)

        def skip(params, opt_state):
            return params, opt_state, jnp.full((n_members,), jnp.nan, qs.dtype)

        params, opt_state, value = jax.lax.cond(index < steps, update, skip, params, opt_state)
        return (params, opt_state), value

    indices = first_step + jnp.arange(keys.shape[0])
    (params, opt_state), values = jax.lax.scan(step, (params, opt_state), (indices, keys))
    return params, opt_state, values


def fit_multiplier(
    key: PRNGKeyArray,
    F: Force,
    points: Points,
    *,
    steps: int = 15_000,
    lr: float = 1e-2,
    lr_end: float = 1e-4,
    warmup: int | None = None,
    batch_size: int = 256,
    use_time: bool = True,
    width: int = 64,
    depth: int = 2,
    weights: Sequence[float] = (1.0, 1.0, 1.0),
    clip: float | None = 10.0,
    eps: float = 1e-6,
    g: SymmetricMatrixMLP | None = None,
    signatures: Sequence[int] | str = (0,),
    chunk_size: int = 1000,
    eval_batch_size: int = 4096,
    show_progress: bool = False,
) -> MultiplierFit:
    """Train a multiplier network `g` alone, with `F` frozen, to minimise the Helmholtz metric.

    This is the reference's `DouglasOnFixedODE`. No ODE is integrated: `g` is fitted on the
    given `(t, q, v)` points. Because F is frozen, F, J_q, J_v and D_t J_v are computed once
    per point, and training differentiates g only. Each step draws `batch_size` points uniformly
    (with replacement) and takes one Adam step. The learning rate warms up linearly to `lr`,
    then decays by a cosine to `lr_end`. Steps run in `lax.scan` chunks of `chunk_size` inside
    one module-level compiled function, so forces with the same shapes and settings share one
    compilation.

    A small converged `H` means the system is Euler-Lagrange-like on these points. `H` staying
    O(0.1–1) means no Lagrangian on that domain. Measured on 4096 box points (2-core CPU):

    - after 4000 steps in float32: Kepler 3.9e-5, spec §6 damped oscillator 2.9e-4,
      Douglas case IV 1.07 (about 5 s each once compiled);
    - after the default 15k steps in float64: 4.8e-6, 9.2e-6 and 1.06.

    **Arguments:**

    - `key`: a `jax.random.key`; it seeds the network and the mini-batches.
    - `F`: the force law `F(t, q, v) -> (n,)`, held fixed (no gradient flows to it).
    - `points`: `(ts, qs, vs)` of shapes `(m,)`, `(m, n)`, `(m, n)`; common leading axes are
      flattened.
    - `steps`: the number of Adam steps.
    - `lr`, `lr_end`: the peak and final learning rate of the cosine schedule.
    - `warmup`: steps of linear warm-up from 0 to `lr` (default `min(500, steps // 10)`). Without
      it the first Adam steps at lr 1e-2 throw g far from I and training stalls.
    - `batch_size`: points per step.
    - `use_time`: whether `g` sees `t` (needed for dissipative systems).
    - `width`, `depth`: the `SymmetricMatrixMLP` size.
    - `weights`, `clip`, `eps`: as in [`helmholtz_loss`][diffgal.lagrangian.helmholtz_loss].
    - `g`: a network to start from instead of fresh ones (`width`, `depth`, `use_time` and
      `signatures` are then ignored).
    - `signatures`: the initial signatures to try, each the number of negative eigenvalues of a
      fresh `g ≈ diag(−1, …, 1)`. Training cannot change the signature of g (it would pass
      through a singular g, which the σ_min normalisation forbids). The default `(0,)` starts
      from `g ≈ I` and so asks for a Lagrangian with a positive-definite velocity Hessian, as
      every mechanical `L = T − V` has. `"all"` tries `range(n // 2 + 1)` (every class, since
      `g → −g` is a symmetry), one network per signature, trained in the same vmapped loop on
      the same mini-batches (cost × the number of signatures), and returns the lowest final
      `H`. Measured at 4000 steps: the Lagrangian curl force (indefinite g) scores 1.95 with
      `(0,)` and 3e-9 with `"all"`. But the non-variational Douglas case IV also drops, from
      1.07 to 0.04 (0.03 after 15k steps), because an indefinite g can satisfy H1 exactly there.
    - `chunk_size`: steps per compiled `lax.scan` chunk (the progress bar updates per chunk).
    - `eval_batch_size`: points per batch when evaluating the metric on all points.
    - `show_progress`: show a tqdm progress bar.

    **Returns:**

    A [`MultiplierFit`][diffgal.lagrangian.MultiplierFit] `(g, metric, history, initial)`.
    """
    w = _check_weights("fit_multiplier", weights)
    ts, qs, vs = _as_points("fit_multiplier", *points)
    m, n = qs.shape
    for name, value in (("steps", steps), ("batch_size", batch_size), ("chunk_size", chunk_size)):
        if not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(
                f"`fit_multiplier`: `{name}` must be a positive integer; got {value!r}."
            )
    if not 0 < lr_end <= lr:
        raise ValueError(
            f"`fit_multiplier`: need 0 < lr_end <= lr; got lr={lr!r}, lr_end={lr_end!r}."
        )
    if _all_concrete(ts, qs, vs) and not bool(
        jnp.all(jnp.isfinite(ts)) & jnp.all(jnp.isfinite(qs)) & jnp.all(jnp.isfinite(vs))
    ):
        raise ValueError(
            "`fit_multiplier`: `points` contain NaN or inf; drop failed trajectories (for "
            "example those whose diffrax result is not successful) before scoring."
        )

    key_init, key_batches = jax.random.split(key)
    if g is None:
        if isinstance(signatures, str):
            if signatures != "all":
                raise ValueError(
                    "`fit_multiplier`: `signatures` must be a sequence of integers or 'all'; "
                    f"got {signatures!r}."
                )
            signatures = tuple(range(n // 2 + 1))
        signatures = tuple(signatures)
        if not signatures or any(
            not isinstance(p, int | np.integer) or not 0 <= p <= n for p in signatures
        ):
            raise ValueError(
                f"`fit_multiplier`: `signatures` must be a non-empty sequence of integers in "
                f"[0, n] = [0, {n}]; got {signatures!r}."
            )
        members = [
            SymmetricMatrixMLP(
                n,
                width=width,
                depth=depth,
                use_time=use_time,
                signature=int(p),
                dtype=qs.dtype,
                key=key_init,
            )
            for p in signatures
        ]
    elif not isinstance(g, SymmetricMatrixMLP) or g.n != n:
        raise ValueError(
            "`fit_multiplier`: `g` must be a SymmetricMatrixMLP for the points' dimension "
            f"n = {n}; got {type(g).__name__}"
            + (f" with n = {g.n}." if isinstance(g, SymmetricMatrixMLP) else ".")
        )
    else:
        signatures = (None,)
        members = [g]

    warmup_steps = min(500, steps // 10) if warmup is None else min(int(warmup), steps - 1)
    config = dict(
        steps=int(steps),
        batch_size=int(batch_size),
        weights=tuple(float(x) for x in w),
        clip=None if clip is None else float(clip),
        eps=float(eps),
        lr=float(lr),
        lr_end=float(lr_end),
        warmup=int(warmup_steps),
    )
    parts = [eqx.partition(member, eqx.is_inexact_array) for member in members]
    static = parts[0][1]
    params = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *(p for p, _ in parts))
    opt_state = jax.vmap(_make_optimiser(steps, lr, lr_end, warmup_steps).init)(params)
    chunk = min(int(chunk_size), int(steps))
    n_chunks = math.ceil(steps / chunk)
    step_keys = jax.random.split(key_batches, n_chunks * chunk).reshape(n_chunks, chunk)

    # F is frozen: F, J_q, J_v and D_t J_v are computed once per point, and training touches g only.
    terms = _precompute_force_terms(F, ts, qs, vs, eval_batch_size)
    data = (ts, qs, vs, terms)
    weights_t = config["weights"]
    evaluate = lambda g: _evaluate_from_terms(g, data, weights_t, clip, eps, eval_batch_size)
    member = lambda params, i: eqx.combine(jax.tree_util.tree_map(lambda x: x[i], params), static)
    initial = [evaluate(member(params, i)) for i in range(len(members))]
    history = []
    from tqdm.auto import tqdm

    with tqdm(total=steps, disable=not show_progress, desc="fit_multiplier") as bar:
        for i in range(n_chunks):
            params, opt_state, values = _train_chunk(
                params, opt_state, jnp.asarray(i * chunk), step_keys[i], static, data, config
            )
            values = np.asarray(values)
            history.append(values)
            done = min(chunk, steps - i * chunk)
            bar.update(done)
            bar.set_postfix(H=f"{float(np.nanmin(np.nanmean(values[:done][-50:], axis=0))):.3g}")
    history = np.concatenate(history)[:steps]
    final = [evaluate(member(params, i)) for i in range(len(members))]
    totals = np.array([float(f.H) for f in final])
    best = int(np.nanargmin(totals)) if np.any(np.isfinite(totals)) else 0
    return MultiplierFit(
        g=member(params, best),
        metric=final[best],
        history=history[:, best],
        initial=initial[best],
        signature=signatures[best],
        by_signature={
            p: float(t) for p, t in zip(signatures, totals, strict=True) if p is not None
        },
    )


@eqx.filter_jit
def _rate_moments(force, ts, qs, vs):
    def one(point):
        jq, jv = jax.jacfwd(force, argnums=(1, 2))(*point)
        return jnp.sum(jq**2), jnp.sum(jv**2)

    jq2, jv2 = jax.lax.map(one, (ts, qs, vs), batch_size=min(1024, ts.shape[0]))
    return jnp.mean(jq2), jnp.mean(jv2)


def dynamical_time(
    F: Force,
    ts: Float[ArrayLike, " m"],
    qs: Float[ArrayLike, "m n"],
    vs: Float[ArrayLike, "m n"],
) -> float:
    """The force law's own time unit τ on the points: τ = 1/ω with
    ω² = (mean ‖J_q‖²_F / n)^{1/2} + mean ‖J_v‖²_F / (4n).

    ω² is the root-mean-square size of the terms of Φ = ½ D_t J_v − J_q − ¼ J_v², per dimension:
    for the oscillator F = −ω₀² q it is ω₀², for the damped oscillator F = −k q − c v it is
    about k + c²/4. Measuring time in units of τ makes the Helmholtz metric comparable between
    systems with different time scales (see `helmholtz_metric(..., time_unit="dynamical")`).
    """
    ts, qs, vs = _as_points("dynamical_time", ts, qs, vs)
    n = qs.shape[-1]
    jq2, jv2 = _rate_moments(F, ts, qs, vs)
    omega2 = float(jnp.sqrt(jq2 / n) + jv2 / (4 * n))
    if not (np.isfinite(omega2) and omega2 > 0):
        raise ValueError(
            "`dynamical_time`: the force has zero (or non-finite) Jacobians on every point, so it "
            f"defines no time scale (ω² = {omega2}); pass a number as `time_unit` instead."
        )
    return 1.0 / math.sqrt(omega2)


def rescale_time(F: Force, points: Points, tau: float) -> tuple[Force, Points]:
    """The force law and points in the time unit `tau`: t = τ t̃, so ṽ = τ v and
    F̃(t̃, q, ṽ) = τ² F(τ t̃, q, ṽ/τ). The Helmholtz conditions are covariant under this map
    (g̃ = g/τ), the metric's value is not (pitfall 5): H1 scales by τ⁴, H2 by τ², H3 by τ⁻²
    before the soft clip."""
    ts, qs, vs = points
    tau = float(tau)

    def scaled(t, q, v):
        return tau**2 * F(tau * t, q, v / tau)

    return scaled, (jnp.asarray(ts) / tau, jnp.asarray(qs), jnp.asarray(vs) * tau)


def _all_concrete(*xs) -> bool:
    return not any(isinstance(x, jax.core.Tracer) for x in xs)


@dataclasses.dataclass(frozen=True)
class HelmholtzMetricResult(Mapping):
    """The learned-g Helmholtz metric of a fixed force, as Python floats.

    It is also a read-only mapping, so `result["H"]` and `dict(result)` work.

    **Fields:**

    - `H`, `H1`, `H2`, `H3`: the final metric and its parts on all points.
    - `H_initial`: `H` of the untrained `g` on all points.
    - `g`: the trained [`SymmetricMatrixMLP`][diffgal.lagrangian.SymmetricMatrixMLP].
    - `history`: the mini-batch `H` per step, shape `(steps,)`.
    - `signature`: the initial signature (number of negative eigenvalues) of the best `g`.
    - `by_signature`: `{signature: final H}` for every initial signature tried.
    - `steps`, `n_points`: the number of steps and of points scored.
    - `domain`: the box spanned by the points, `{"t": (lo, hi), "q": (lo, hi), "v": (lo, hi)}`
      with per-component tuples for `q` and `v`, in the units given. Report it with the value:
      the metric certifies Euler-Lagrange-ness only there.
    - `time_unit`: the time unit τ the metric was computed in (1.0: the units given; `g` then
      takes (t/τ, q, τ v)).
    """

    H: float
    H1: float
    H2: float
    H3: float
    H_initial: float
    g: SymmetricMatrixMLP
    history: np.ndarray
    signature: int | None
    by_signature: dict
    steps: int
    n_points: int
    domain: dict
    time_unit: float = 1.0

    def __getitem__(self, key: str):
        if key not in self._keys():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())

    def _keys(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(self))

    def __repr__(self) -> str:
        return (
            f"HelmholtzMetricResult(H={self.H:.3g}, H1={self.H1:.3g}, H2={self.H2:.3g}, "
            f"H3={self.H3:.3g}, H_initial={self.H_initial:.3g}, signature={self.signature}, "
            f"steps={self.steps}, n_points={self.n_points}"
            + (")" if self.time_unit == 1.0 else f", time_unit={self.time_unit:.3g})")
        )


def helmholtz_metric(
    F: Force,
    ts: Float[ArrayLike, " m"],
    qs: Float[ArrayLike, "m n"],
    vs: Float[ArrayLike, "m n"],
    *,
    key: PRNGKeyArray,
    steps: int = 15_000,
    lr: float = 1e-2,
    lr_end: float = 1e-4,
    batch_size: int = 256,
    use_time: bool = True,
    width: int = 64,
    depth: int = 2,
    weights: Sequence[float] = (1.0, 1.0, 1.0),
    clip: float | None = 10.0,
    signatures: Sequence[int] | str = (0,),
    time_unit: float | str | None = None,
    show_progress: bool = False,
) -> HelmholtzMetricResult:
    """The learned-multiplier Helmholtz metric of a fixed force law on sample points.

    A thin wrapper around [`fit_multiplier`][diffgal.lagrangian.fit_multiplier]: it trains a
    [`SymmetricMatrixMLP`][diffgal.lagrangian.SymmetricMatrixMLP] `g` alone (F frozen) with
    Adam, a cosine learning rate `lr → lr_end` and mini-batches of `batch_size` points, then
    evaluates `H = H1 + H2 + H3` of the final `g` on all points.

    Small `H` (for example ≤ 1e-3) means an Euler-Lagrange system on these points; `H` staying
    O(0.1–1) means none exists there (Douglas case IV gives ~1.07). Pitfalls: the value holds only
    on the sampled domain (see `domain` in the result), it is not invariant under rescaling of
    `t` or `q`, and at n = 1 every ODE is variational, so n = 1 raises.

    ```python
    import jax
    from diffgal.lagrangian import KeplerPolar, helmholtz_metric

    system = KeplerPolar()
    ts, qs, vs = system.sample_points(jax.random.key(0), 4096)
    result = helmholtz_metric(system.force, ts, qs, vs, key=jax.random.key(1), steps=2000)
    print(result["H"], result.H1, result.domain["t"])
    ```

    **Arguments:**

    - `F`: the force law `F(t, q, v) -> (n,)`, a plain function or an `eqx.Module`.
    - `ts`, `qs`, `vs`: the points, shapes `(m,)`, `(m, n)`, `(m, n)` (common leading axes such
      as `(n_traj, n_time)` are flattened).
    - `key`: a `jax.random.key` for the network and the mini-batches.
    - `steps`: Adam steps. The default 15k reaches the spec §8 reference values. 4000 already
      give ≤ 3e-4 on the Lagrangian test systems; fewer steps give an upper bound.
    - `lr`, `lr_end`, `batch_size`, `use_time`, `width`, `depth`, `weights`, `clip`,
      `signatures`: as in `fit_multiplier`. The default searches positive-definite g only;
      `signatures="all"` also searches indefinite multipliers (needed for the curl force, but
      it lowers case IV to ~0.04).
    - `time_unit`: the unit of time the metric is computed in. `None` (default): the units of
      `ts` as given (the spec's convention and the thresholds above). A number τ: time in units
      of τ (`rescale_time`). `"dynamical"`: τ = `dynamical_time(F, ...)`, the force's own time
      unit on these points, which makes values comparable between systems of different
      frequencies: in the given units H1 grows like ω⁴, so a 1 % error in the Jacobian of a fast
      oscillator (ω ≈ 5) scores like a 25 % error at ω = 1. The result's `time_unit` says which
      τ was used; its `domain` is in the units given and its `g` is the multiplier of the
      rescaled system (it takes (t/τ, q, τ v)).
    - `show_progress`: show a tqdm progress bar.

    **Returns:**

    A [`HelmholtzMetricResult`][diffgal.lagrangian.HelmholtzMetricResult] with `H`, `H1`, `H2`,
    `H3` as floats, the trained `g`, the loss `history` and the `domain`.
    """
    ts, qs, vs = _as_points("helmholtz_metric", ts, qs, vs)
    points = (ts, qs, vs)
    force = F
    tau = 1.0
    if time_unit is not None:
        if isinstance(time_unit, str):
            if time_unit != "dynamical":
                raise ValueError(
                    "`helmholtz_metric`: `time_unit` must be None, a positive number or "
                    f"'dynamical'; got {time_unit!r}."
                )
            tau = dynamical_time(F, ts, qs, vs)
        else:
            tau = float(time_unit)
            if not (math.isfinite(tau) and tau > 0):
                raise ValueError(
                    f"`helmholtz_metric`: a numeric `time_unit` must be finite and > 0; got {tau}."
                )
        force, points = rescale_time(F, points, tau)
    fit = fit_multiplier(
        key,
        force,
        points,
        steps=steps,
        lr=lr,
        lr_end=lr_end,
        batch_size=batch_size,
        use_time=use_time,
        width=width,
        depth=depth,
        weights=weights,
        clip=clip,
        signatures=signatures,
        show_progress=show_progress,
    )
    q_np, v_np, t_np = np.asarray(qs), np.asarray(vs), np.asarray(ts)
    domain = {
        "t": (float(t_np.min()), float(t_np.max())),
        "q": (tuple(q_np.min(0).tolist()), tuple(q_np.max(0).tolist())),
        "v": (tuple(v_np.min(0).tolist()), tuple(v_np.max(0).tolist())),
    }
    return HelmholtzMetricResult(
        H=float(fit.metric.H),
        H1=float(fit.metric.H1),
        H2=float(fit.metric.H2),
        H3=float(fit.metric.H3),
        H_initial=float(fit.initial.H),
        g=fit.g,
        history=fit.history,
        signature=fit.signature,
        by_signature=fit.by_signature,
        steps=int(steps),
        n_points=int(ts.shape[0]),
        domain=domain,
        time_unit=tau,
    )


# ---------------------------------------------------------------------------------------------
# Comparing a learned multiplier with an analytic one
# ---------------------------------------------------------------------------------------------


class MultiplierComparison(NamedTuple):
    """Errors of a learned multiplier against an analytic one, after scale alignment.

    **Fields:**

    - `scale`: the constant `c` applied to the learned g (`c g_learned ≈ g_true`).
    - `errors`: per point, shape `(m, n, n)`: `|c g_learned − g_true| / |g_true|` on the
      diagonal (relative) and `|c g_learned − g_true|` off the diagonal (absolute).
    - `mean`, `median`: shape `(n, n)`, over points.
    - `percentiles`: `{p: (n, n) array}` for `p` in 5, 16, 84, 95.
    """

    scale: float
    errors: np.ndarray
    mean: np.ndarray
    median: np.ndarray
    percentiles: dict[int, np.ndarray]


def compare_multiplier(
    g_learned: Multiplier,
    g_true: Multiplier,
    points: Points,
    *,
    percentiles: Sequence[int] = (5, 16, 84, 95),
) -> MultiplierComparison:
    """Compare a learned multiplier with a known analytic one, up to an overall constant.

    `g` is defined only up to a constant factor, so the learned g is first rescaled by the `c`
    that minimises `Σ_points ‖c g_learned − g_true‖² / ‖g_true‖²` (every point weighs the same
    in relative terms, even where `g_true` grows like `e^{γt}`). Then the error matrix is the
    relative error on the diagonal and the absolute error off it. Remember that a system may
    admit genuinely different multipliers (Kepler, decoupled oscillators with independent
    constants per component); a large error then need not mean a bad metric.

    **Arguments:**

    - `g_learned`, `g_true`: multipliers `g(t, q, v) -> (n, n)`.
    - `points`: `(ts, qs, vs)` of shapes `(m,)`, `(m, n)`, `(m, n)`.
    - `percentiles`: which percentiles to report.

    **Returns:**

    A [`MultiplierComparison`][diffgal.lagrangian.MultiplierComparison]; `errors` feeds
    histograms.
    """
    ts, qs, vs = _as_points("compare_multiplier", *points)
    learned = jax.vmap(g_learned)(ts, qs, vs)
    true = jax.vmap(g_true)(ts, qs, vs)
    n = qs.shape[-1]
    _check_output("compare_multiplier", "g_learned", learned[0], (n, n))
    _check_output("compare_multiplier", "g_true", true[0], (n, n))
    norm2 = jnp.sum(true**2, axis=(-2, -1))
    scale = jnp.sum(jnp.sum(learned * true, axis=(-2, -1)) / norm2) / jnp.sum(
        jnp.sum(learned**2, axis=(-2, -1)) / norm2
    )
    diff = jnp.abs(scale * learned - true)
    eye = jnp.eye(n, dtype=bool)
    errors = np.asarray(jnp.where(eye, diff / jnp.abs(true), diff))
    return MultiplierComparison(
        scale=float(scale),
        errors=errors,
        mean=errors.mean(axis=0),
        median=np.median(errors, axis=0),
        percentiles={int(p): np.percentile(errors, p, axis=0) for p in percentiles},
    )
