"""Score a named test system with the learned-multiplier Helmholtz metric.

`score_system("kepler")` samples points in the system's default box, fits a multiplier network
g to the true force (`helmholtz_metric`) and, where the system has an analytic multiplier, also
reports that multiplier's exact residuals and the learned g's agreement with it (up to scale).
`diffgal lagrangian score --system NAME` prints the result.
"""

from __future__ import annotations

import time
import typing
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PRNGKeyArray

from ._helmholtz import compare_multiplier, helmholtz_metric, helmholtz_residuals
from ._systems import (
    AbstractSystem,
    CurlForce,
    DampedOscillator,
    DoublePendulum,
    DouglasCaseIIIb,
    DouglasCaseIV,
    HarmonicOscillator,
    KeplerPolar,
    RotatingFrame,
)

__all__ = ["SYSTEMS", "get_system", "score_system"]

#: The named test systems: name -> (constructor, one-line description).
SYSTEMS: dict[str, tuple[Callable[[], AbstractSystem], str]] = {
    "kepler": (KeplerPolar, "Kepler problem in polar coordinates (Lagrangian, g = diag(1, r^2))"),
    "damped": (DampedOscillator, "2-D damped oscillator (Lagrangian, g = diag(exp(c_i t)))"),
    "harmonic": (HarmonicOscillator, "2-D harmonic oscillator (Lagrangian, g = I)"),
    "pendulum": (DoublePendulum, "double pendulum (Lagrangian, g = M(theta))"),
    "rotating": (RotatingFrame, "orbit in a rotating frame (Lagrangian, g = I)"),
    "curl": (CurlForce, "curl force (Lagrangian with an indefinite g only)"),
    "case3b": (DouglasCaseIIIb, "Douglas case IIIb (not Lagrangian)"),
    "case4": (DouglasCaseIV, "Douglas case IV (not Lagrangian)"),
}


def get_system(name: str) -> AbstractSystem:
    """The test system called `name` (see `SYSTEMS`), with its default parameters."""
    try:
        make, _ = SYSTEMS[name]
    except KeyError:
        raise ValueError(
            f"`system`: unknown test system {name!r}; expected one of {', '.join(SYSTEMS)}."
        ) from None
    return make()


def score_system(
    system: str | AbstractSystem,
    *,
    key: PRNGKeyArray,
    n_points: int = 4096,
    steps: int = 4000,
    signatures: typing.Sequence[int] | str = (0,),
    dtype=None,
    time_unit: float | str | None = None,
    show_progress: bool = False,
) -> dict:
    """The learned-g Helmholtz metric of a test system's true force on its default box.

    **Arguments:**

    - `system`: a name from `SYSTEMS` or an `AbstractSystem`.
    - `key`: a `jax.random.key` (points, network initialisation, mini-batches).
    - `n_points`: points drawn uniformly in `system.box`.
    - `steps`: Adam steps of the multiplier fit (4000 reach <= 3e-4 on the Lagrangian systems;
      15 000 are the spec's reference).
    - `signatures`: as in `fit_multiplier`: `(0,)` searches positive-definite g only, `"all"`
      every signature (needed for the curl force).
    - `dtype`: the floating dtype of the points (default: JAX's default float).
    - `time_unit`: as in `helmholtz_metric` (`None`: the system's units; `"dynamical"`: the
      force's dynamical time).
    - `show_progress`: show a tqdm progress bar.

    **Returns:**

    A JSON-able dict: `system`, `lagrangian` (whether a multiplier is known), `H`, `H1`, `H2`,
    `H3`, `H_initial`, `steps`, `n_points`, `signatures`, `domain`, `time_unit`, `wall_s`, the
    g fit's `history` (a NumPy array), and for systems with
    an analytic multiplier `analytic_max_residual` (max |R1|, |R2|, |R3| of that g on the
    points) and `learned_vs_analytic_median` (median error matrix of the learned g after scale
    alignment; see `compare_multiplier`).
    """
    name = system if isinstance(system, str) else type(system).__name__
    system = get_system(system) if isinstance(system, str) else system
    if not isinstance(system, AbstractSystem):
        raise TypeError(
            f"`system`: expected a name or an AbstractSystem; got {type(system).__name__}."
        )
    if n_points < 1 or steps < 0:
        raise ValueError(f"need n_points >= 1 and steps >= 0; got {n_points} and {steps}.")
    point_key, fit_key = jax.random.split(key)
    ts, qs, vs = system.sample_points(point_key, n_points)
    if dtype is not None:
        ts, qs, vs = (x.astype(dtype) for x in (ts, qs, vs))
    start = time.perf_counter()
    result = helmholtz_metric(
        system.force,
        ts,
        qs,
        vs,
        key=fit_key,
        steps=steps,
        signatures=signatures,
        time_unit=time_unit,
        show_progress=show_progress,
    )
    out = {
        "system": name,
        "class": type(system).__name__,
        "lagrangian": system.multiplier is not None,
        "H": result.H,
        "H1": result.H1,
        "H2": result.H2,
        "H3": result.H3,
        "H_initial": result.H_initial,
        "steps": result.steps,
        "n_points": result.n_points,
        "signatures": signatures if isinstance(signatures, str) else list(signatures),
        "best_signature": result.signature,
        "domain": result.domain,
        "time_unit": result.time_unit,
        "dtype": str(qs.dtype),
        "wall_s": time.perf_counter() - start,
        "history": np.asarray(result.history),
    }
    if system.multiplier is not None:
        residuals = jax.jit(jax.vmap(helmholtz_residuals, in_axes=(None, None, 0, 0, 0)))
        r1, r2, r3 = residuals(system.force, system.multiplier, ts, qs, vs)
        out["analytic_max_residual"] = [float(jnp.max(jnp.abs(r))) for r in (r1, r2, r3)]
        tau = result.time_unit  # the learned g takes the rescaled point (t/τ, q, τ v)
        g_learned = lambda t, q, v: result.g(t / tau, q, tau * v)
        comparison = compare_multiplier(g_learned, system.multiplier, (ts, qs, vs))
        out["learned_vs_analytic_median"] = comparison.median.tolist()
    return out
