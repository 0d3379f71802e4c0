"""Second-order ODE solves q'' = F(t, q, v) with diffrax.

The state is the PyTree `(q, v)` and one `diffrax.ODETerm` returns `(v, F(t, q, v))`, so any
diffrax solver, step-size controller and adjoint can be used. The force is passed to diffrax as
`args`, so its array leaves (for an `eqx.Module` force) are differentiated by every adjoint,
`BacksolveAdjoint` included.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

#: A force law `F(t, q, v) -> q''` with scalar `t` and `q`, `v`, `q''` of shape `(n,)`.
Force = Callable[[Array, Array, Array], Array]


class SecondOrderSolution(NamedTuple):
    """Positions and velocities at the save times, and the diffrax outcome.

    **Fields:**

    - `qs`: positions, shape `(n_time, n)`.
    - `vs`: velocities, shape `(n_time, n)`.
    - `result`: the `diffrax.RESULTS` of the solve (`diffrax.RESULTS.successful` on success).
      Check it when solving with `throw=False`.
    """

    qs: Float[Array, "n_time n"]
    vs: Float[Array, "n_time n"]
    result: diffrax.RESULTS


def _vector_field(t, y, force):
    q, v = y
    return v, force(t, q, v)


def _drift(t, v, force):
    del t, force
    return v


def _separable_kick(t, q, force):
    # SemiImplicitEuler hands the second term only the updated q (diffrax 0.7.2); a separable
    # force does not read v, so zeros stand in for it.
    return force(t, q, jnp.zeros_like(q))


def _max_abs_dforce_dv(force: Force, t, q, v) -> Array:
    return jnp.max(jnp.abs(jax.jacfwd(force, argnums=2)(t, q, v)))


def _is_concrete(*xs) -> bool:
    return not any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(xs))


def semi_implicit_euler_ok(
    force: Force,
    points: tuple[ArrayLike, ArrayLike, ArrayLike],
    *,
    atol: float = 0.0,
) -> Array:
    """Check that `diffrax.SemiImplicitEuler` may integrate `q'' = force(t, q, v)`.

    `SemiImplicitEuler` updates `q` with the old `v` and then `v` with the **new `q` only**: its
    second term never sees `v` (diffrax 0.7.2). It is valid only for separable systems with
    `∂F/∂v = 0`, and wrong for damping, Coriolis terms and Kepler in polar coordinates (spec §5).
    This check evaluates `∂F/∂v` with `jax.jacfwd` at the given points.

    **Arguments:**

    - `force`: the force law `F(t, q, v)`.
    - `points`: `(ts, qs, vs)` of shapes `(m,)`, `(m, n)`, `(m, n)`.
    - `atol`: the largest `|∂F/∂v|` entry that counts as zero.

    **Returns:**

    The largest `|∂F/∂v|` entry found (a scalar array). Outside `jit` a violation raises
    `ValueError` at once. Under `jit` the check is an `eqx.error_if` on the returned value, so use
    the result, or the check is dropped.
    """
    ts, qs, vs = (jnp.asarray(x) for x in points)
    if ts.ndim != 1 or qs.ndim != 2 or vs.shape != qs.shape or ts.shape[0] != qs.shape[0]:
        raise ValueError(
            "`semi_implicit_euler_ok`: `points` must be (ts, qs, vs) with shapes (m,), (m, n), "
            f"(m, n); got {ts.shape}, {qs.shape}, {vs.shape}. Stack single points with "
            "`x[None]`."
        )
    dtype = jnp.result_type(qs, vs, float)
    worst = jnp.max(
        jax.vmap(lambda t, q, v: _max_abs_dforce_dv(force, t, q, v))(
            ts.astype(dtype), qs.astype(dtype), vs.astype(dtype)
        )
    )
    msg = (
        "`semi_implicit_euler_ok`: diffrax.SemiImplicitEuler passes only the updated q to the "
        "velocity update, so it needs a separable force with ∂F/∂v = 0; found max|∂F/∂v| = "
        "{worst} > atol = {atol} (damping, Coriolis or polar-coordinate terms). Use "
        "diffrax.Tsit5(), diffrax.Dopri5() or diffrax.ReversibleHeun() instead."
    )
    if _is_concrete(worst):
        if float(worst) > atol:
            raise ValueError(msg.format(worst=float(worst), atol=atol))
        return worst
    return eqx.error_if(worst, worst > atol, msg.format(worst="(traced)", atol=atol))


def solve_second_order(
    force: Force,
    ts: Float[ArrayLike, " n_time"],
    q0: Float[ArrayLike, " n"],
    v0: Float[ArrayLike, " n"],
    *,
    solver: diffrax.AbstractSolver = diffrax.Tsit5(),
    t0: float | Array | None = None,
    dt0: float | None = None,
    rtol: float = 1e-6,
    atol: float = 1e-6,
    stepsize_controller: diffrax.AbstractStepSizeController | None = None,
    max_steps: int = 4096,
    adjoint: diffrax.AbstractAdjoint = diffrax.RecursiveCheckpointAdjoint(),
    throw: bool = True,
) -> SecondOrderSolution:
    """Integrate `q'' = force(t, q, v)` from `(q0, v0)` and save at the times `ts`.

    One `diffrax.ODETerm` carries the state `(q, v)` and returns `(v, force(t, q, v))`. The
    solve starts at `t0` (default `ts[0]`) and saves with `diffrax.SaveAt(ts=ts)`. For one
    trajectory per call, `jax.vmap` over `q0` and `v0` batches them.

    With `solver=diffrax.SemiImplicitEuler()` the terms are split into a drift `q' = v` and a
    kick `v' = F(t, q)`. That is valid only when `∂F/∂v = 0`, which is checked at `(t0, q0, v0)`
    (see [`semi_implicit_euler_ok`][diffgal.lagrangian.semi_implicit_euler_ok]); `dt0` is then
    required.

    **Arguments:**

    - `force`: the force law `F(t, q, v)`, a function or an `eqx.Module`. It is passed to diffrax
      as `args`, so gradients with respect to its arrays flow through every adjoint.
    - `ts`: save times, shape `(n_time,)`, strictly increasing.
    - `q0`, `v0`: initial position and velocity, shape `(n,)` each.
    - `solver`: any diffrax solver. Default `diffrax.Tsit5()`; the reference uses `Dopri5()`.
    - `t0`: start time; default `ts[0]`. It must not exceed `ts[0]`.
    - `dt0`: initial step. Optional for adaptive solvers (diffrax then picks one) and required
      for fixed-step solvers.
    - `rtol`, `atol`: tolerances of the default `diffrax.PIDController` (adaptive solvers only).
    - `stepsize_controller`: overrides the default controller (`PIDController(rtol, atol)` for
      adaptive solvers, `ConstantStepSize()` otherwise).
    - `max_steps`: the diffrax step limit; raise it for long orbits.
    - `adjoint`: the diffrax adjoint (default `RecursiveCheckpointAdjoint()`).
    - `throw`: raise when the solve fails. In training loops pass `throw=False` and drop the
      trajectories whose `result` is not `diffrax.RESULTS.successful`.

    **Returns:**

    A [`SecondOrderSolution`][diffgal.lagrangian.SecondOrderSolution] `(qs, vs, result)` with
    `qs`, `vs` of shape `(n_time, n)`.
    """
    ts = jnp.asarray(ts)
    q0 = jnp.asarray(q0)
    v0 = jnp.asarray(v0)
    if ts.ndim != 1 or ts.shape[0] < 1:
        raise ValueError(
            f"`solve_second_order`: `ts` must be a 1-D array of save times; got shape {ts.shape}. "
            "Pass one shared time grid and vmap over initial conditions."
        )
    if q0.ndim != 1 or v0.shape != q0.shape:
        raise ValueError(
            "`solve_second_order`: `q0` and `v0` must both have shape (n,); got "
            f"{q0.shape} and {v0.shape}. Use jax.vmap for a batch of initial conditions."
        )
    dtype = jnp.result_type(q0, v0, ts, float)
    ts, q0, v0 = ts.astype(dtype), q0.astype(dtype), v0.astype(dtype)
    t_start = ts[0] if t0 is None else jnp.asarray(t0, dtype)
    checks = (
        (
            "ts",
            jnp.any(jnp.diff(ts) <= 0),
            "`solve_second_order`: `ts` must be strictly increasing; got repeated or decreasing "
            "save times. Sort them and drop duplicates.",
        ),
        (
            "ts",
            t_start > ts[0],
            "`solve_second_order`: `t0` must not exceed the first save time `ts[0]`; pass "
            "t0 <= ts[0] or leave t0=None.",
        ),
        (
            "q0",
            ~(jnp.all(jnp.isfinite(q0)) & jnp.all(jnp.isfinite(v0))),
            "`solve_second_order`: `q0` and `v0` must be finite; got NaN or inf. Drop or repair "
            "those initial conditions.",
        ),
    )
    for name, bad, msg in checks:
        if _is_concrete(bad):
            if bool(bad):
                raise ValueError(msg)
        elif name == "ts":
            ts = eqx.error_if(ts, bad, msg)
        else:
            q0 = eqx.error_if(q0, bad, msg)

    adaptive = isinstance(solver, diffrax.AbstractAdaptiveSolver)
    if stepsize_controller is None:
        stepsize_controller = (
            diffrax.PIDController(rtol=rtol, atol=atol) if adaptive else diffrax.ConstantStepSize()
        )
    if dt0 is None and not isinstance(stepsize_controller, diffrax.PIDController):
        raise ValueError(
            f"`solve_second_order`: the fixed-step solver {type(solver).__name__} needs `dt0`; "
            "got None. Pass dt0=..., or use an adaptive solver such as diffrax.Tsit5()."
        )

    if isinstance(solver, diffrax.SemiImplicitEuler):
        worst = _max_abs_dforce_dv(force, t_start, q0, v0)
        msg = (
            "`solve_second_order`: diffrax.SemiImplicitEuler needs a separable force with "
            "∂F/∂v = 0, but ∂F/∂v ≠ 0 at (t0, q0, v0) (damping, Coriolis or polar-coordinate "
            "terms). Use diffrax.Tsit5() or diffrax.ReversibleHeun() instead."
        )
        if _is_concrete(worst):
            if float(worst) > 0:
                raise ValueError(msg)
        else:
            q0 = eqx.error_if(q0, worst > 0, msg)
        terms = (diffrax.ODETerm(_drift), diffrax.ODETerm(_separable_kick))
    else:
        terms = diffrax.ODETerm(_vector_field)

    sol = diffrax.diffeqsolve(
        terms,
        solver,
        t0=t_start,
        t1=ts[-1],
        dt0=dt0,
        y0=(q0, v0),
        args=force,
        saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=stepsize_controller,
        max_steps=max_steps,
        adjoint=adjoint,
        throw=throw,
    )
    qs, vs = sol.ys
    return SecondOrderSolution(qs=qs, vs=vs, result=sol.result)


def default_tolerance(dtype) -> float:
    """`1e-8` for float64 and `1e-6` otherwise: the tolerances used to simulate data."""
    return 1e-8 if np.dtype(dtype) == np.float64 else 1e-6
