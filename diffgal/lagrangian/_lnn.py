"""Lagrangian neural network (LNN) baseline, for comparisons only (spec §7).

An LNN (Cranmer et al. 2020, arXiv:2003.04630) learns a scalar L_θ(t, q, v). The Euler-Lagrange
equations d/dt ∂L/∂v = ∂L/∂q give, at every right-hand-side evaluation,

    a = H_vv⁻¹ [∇_q L − H_vq v − ∂_t ∇_v L],   (H_vv)_ij = ∂²L/∂v_i∂v_j, (H_vq)_ij = ∂²L/∂v_i∂q_j,

about 2n + 2 passes through L plus an O(n³) solve, against one MLP forward for a second-order
neural ODE. `LNNBaseline` adds ½|v|² to L_θ to keep H_vv well conditioned (Liu et al. 2021,
arXiv:2106.00026, as the reference does) and is callable as a force law F(t, q, v), so it plugs
into `solve_second_order`. It is Euler-Lagrange by construction but gives no diagnostic of
whether the data are; see `LagrangianNeuralODE` for the regularised alternative.
"""

from __future__ import annotations

import typing
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

__all__ = ["LNNBaseline", "euler_lagrange_acceleration"]


def euler_lagrange_acceleration(
    lagrangian: Callable[[Array, Array, Array], Array],
    t: Float[Array, ""],
    q: Float[Array, " n"],
    v: Float[Array, " n"],
    *,
    method: str = "solve",
    rcond: float = 1e-4,
) -> Float[Array, " n"]:
    """The acceleration of the Euler-Lagrange equations of a scalar `lagrangian(t, q, v)`.

    a = H_vv⁻¹ [∇_q L − H_vq v − ∂_t ∇_v L]. `∇_v L` comes from `jax.grad`; H_vq v + ∂_t ∇_v L
    is one `jax.jvp` of it with tangent (1, v, 0), and H_vv one `jax.jacfwd` (n tangents).

    **Arguments:**

    - `lagrangian`: `L(t, q, v) -> scalar`.
    - `t`, `q`, `v`: one point (scalar, `(n,)`, `(n,)`).
    - `method`: `"solve"` (`jnp.linalg.solve`) or `"lstsq"` (least squares with `rcond`, the
      reference's `EulerLagrangeNeuralODE`, tolerant of a singular H_vv).
    - `rcond`: cut-off for `"lstsq"`.

    **Returns:**

    q'' at the point, shape `(n,)`.
    """
    if method not in ("solve", "lstsq"):
        raise ValueError(
            f"`euler_lagrange_acceleration`: `method` must be 'solve' or 'lstsq'; got {method!r}."
        )
    q = jnp.asarray(q)
    v = jnp.asarray(v, q.dtype)
    t = jnp.asarray(t, q.dtype)
    if q.ndim != 1 or v.shape != q.shape or t.ndim != 0:
        raise ValueError(
            "`euler_lagrange_acceleration`: expected a scalar `t` and `q`, `v` of shape (n,); "
            f"got {t.shape}, {q.shape}, {v.shape}. Use jax.vmap for batches."
        )
    grad_q = jax.grad(lagrangian, argnums=1)
    grad_v = jax.grad(lagrangian, argnums=2)
    _, mixed = jax.jvp(grad_v, (t, q, v), (jnp.ones_like(t), v, jnp.zeros_like(v)))
    h_vv = jax.jacfwd(grad_v, argnums=2)(t, q, v)
    rhs = grad_q(t, q, v) - mixed
    if method == "solve":
        return jnp.linalg.solve(h_vv, rhs)
    return jnp.linalg.lstsq(h_vv, rhs, rcond=rcond)[0]


@typing.final
class LNNBaseline(eqx.Module):
    """A Lagrangian neural network L_θ(t, q, v) + ½|v|², usable as a force law F(t, q, v).

    **Arguments:**

    - `n`: the configuration dimension.
    - `width`, `depth`, `activation`: the scalar MLP (default 2 × 128 softplus, as in the
      spec's cost benchmark). The activation must be smooth (the force needs ∂²L).
    - `use_time`: feed t to L (default False: t is multiplied by 0).
    - `method`, `rcond`: the linear solve, see `euler_lagrange_acceleration`.
    - `key`: a JAX PRNG key.

    The MLP is initialised layer by layer with weights ~ N(0, 1/fan_in) and zero biases
    (LeCun-normal, a layer-wise scaled initialisation that keeps the Hessian of L O(1)).

    `lnn(t, q, v)` returns q''; `lnn.lagrangian(t, q, v)` returns L.
    """

    mlp: eqx.nn.MLP
    n: int = eqx.field(static=True)
    use_time: bool = eqx.field(static=True)
    method: str = eqx.field(static=True)
    rcond: float = eqx.field(static=True)

    def __init__(
        self,
        n: int,
        *,
        width: int = 128,
        depth: int = 2,
        activation: Callable = jax.nn.softplus,
        use_time: bool = False,
        method: str = "solve",
        rcond: float = 1e-4,
        key: PRNGKeyArray,
    ):
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"`LNNBaseline`: `n` must be a positive int; got {n!r}.")
        if method not in ("solve", "lstsq"):
            raise ValueError(f"`LNNBaseline`: `method` must be 'solve' or 'lstsq'; got {method!r}.")
        mkey, ikey = jax.random.split(key)
        mlp = eqx.nn.MLP(2 * n + 1, "scalar", width, depth, activation=activation, key=mkey)
        keys = jax.random.split(ikey, len(mlp.layers))
        layers = []
        for k, layer in zip(keys, mlp.layers, strict=True):
            fan_in = layer.weight.shape[1]
            weight = jax.random.normal(k, layer.weight.shape, layer.weight.dtype) / fan_in**0.5
            layer = eqx.tree_at(lambda lin: lin.weight, layer, weight)
            layer = eqx.tree_at(lambda lin: lin.bias, layer, jnp.zeros_like(layer.bias))
            layers.append(layer)
        self.mlp = eqx.tree_at(lambda m: m.layers, mlp, tuple(layers))
        self.n = n
        self.use_time = use_time
        self.method = method
        self.rcond = float(rcond)

    def lagrangian(self, t, q, v) -> Float[Array, ""]:
        """L(t, q, v) = MLP(t, q, v) + ½|v|²."""
        t = jnp.asarray(t, q.dtype)
        t = t if self.use_time else 0.0 * t
        return self.mlp(jnp.concatenate([t[None], q, v])) + 0.5 * jnp.sum(v**2)

    def __call__(self, t, q, v) -> Float[Array, " n"]:
        """The force law q'' = F(t, q, v) from the Euler-Lagrange equations of L."""
        return euler_lagrange_acceleration(
            self.lagrangian, t, q, v, method=self.method, rcond=self.rcond
        )
