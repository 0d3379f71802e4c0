"""Test systems q'' = F(t, q, v) with analytic forces and, where one exists, a known multiplier.

| system | Lagrangian? | multiplier g |
|---|---|---|
| `HarmonicOscillator` | yes | `I` |
| `DampedOscillator` | yes (with explicit t) | `diag(exp(c_i t))` |
| `KeplerPolar` | yes | `diag(1, r²)` |
| `DoublePendulum` | yes | `M(θ)` |
| `CurlForce` | yes (indefinite g) | `[[−1, 1], [1, 1]]` |
| `RotatingFrame` | yes | `I` |
| `DouglasCaseIIIb`, `DouglasCaseIV` | no | `None` |

Every system has `force(t, q, v)`, `multiplier` (a method, or `None` when no Lagrangian exists),
a default sampling `box` for the metric (spec §8), `sample_points(key, m)` in that box,
`sample_initial_conditions(key, n_traj)` and default observation `times()`.
"""

from __future__ import annotations

import abc
import math
import typing
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ._ode import default_tolerance, solve_second_order


@typing.final
class SamplingBox(eqx.Module):
    """An axis-aligned box in `(t, q, v)`, sampled uniformly.

    **Arguments:**

    - `t`: `(t_low, t_high)`.
    - `q_low`, `q_high`, `v_low`, `v_high`: per-component bounds, tuples of length `n`.
    """

    t: tuple[float, float] = eqx.field(static=True)
    q_low: tuple[float, ...] = eqx.field(static=True)
    q_high: tuple[float, ...] = eqx.field(static=True)
    v_low: tuple[float, ...] = eqx.field(static=True)
    v_high: tuple[float, ...] = eqx.field(static=True)

    def __init__(self, t, q_low, q_high, v_low, v_high):
        self.t = (float(t[0]), float(t[1]))
        self.q_low = tuple(float(x) for x in q_low)
        self.q_high = tuple(float(x) for x in q_high)
        self.v_low = tuple(float(x) for x in v_low)
        self.v_high = tuple(float(x) for x in v_high)

    def __check_init__(self):
        n = len(self.q_low)
        if not (len(self.q_high) == len(self.v_low) == len(self.v_high) == n):
            raise ValueError(
                "`SamplingBox`: `q_low`, `q_high`, `v_low`, `v_high` must have the same length "
                f"n; got {len(self.q_low)}, {len(self.q_high)}, {len(self.v_low)}, "
                f"{len(self.v_high)}."
            )
        pairs = [
            self.t,
            *zip(self.q_low, self.q_high, strict=True),
            *zip(self.v_low, self.v_high, strict=True),
        ]
        if any(not lo < hi for lo, hi in pairs):
            raise ValueError(
                "`SamplingBox`: every lower bound must be below its upper bound; got t "
                f"{self.t}, q {self.q_low}..{self.q_high}, v {self.v_low}..{self.v_high}."
            )

    @property
    def n(self) -> int:
        """The system dimension."""
        return len(self.q_low)

    def sample(
        self, key: PRNGKeyArray, m: int
    ) -> tuple[Float[Array, " m"], Float[Array, "m n"], Float[Array, "m n"]]:
        """`m` uniform points `(ts, qs, vs)` in the box, shapes `(m,)`, `(m, n)`, `(m, n)`."""
        key_t, key_q, key_v = jax.random.split(key, 3)
        ts = jax.random.uniform(key_t, (m,), minval=self.t[0], maxval=self.t[1])
        qs = jax.random.uniform(
            key_q, (m, self.n), minval=jnp.asarray(self.q_low), maxval=jnp.asarray(self.q_high)
        )
        vs = jax.random.uniform(
            key_v, (m, self.n), minval=jnp.asarray(self.v_low), maxval=jnp.asarray(self.v_high)
        )
        return ts, qs, vs


def _box(t, q, v, n=2) -> SamplingBox:
    """A box with the same `q` and `v` interval in every component."""
    return SamplingBox(t, (q[0],) * n, (q[1],) * n, (v[0],) * n, (v[1],) * n)


class AbstractSystem(eqx.Module):
    """A second-order system `q'' = F(t, q, v)` for tests and experiments.

    Concrete systems implement `force`, `sample_initial_conditions` and either a `multiplier`
    method (a known `g`) or `multiplier = None` (no Lagrangian exists). They carry a default
    metric sampling `box` and observation `time_grid = (t0, t1, n_time)`.
    """

    box: eqx.AbstractVar[SamplingBox]
    time_grid: eqx.AbstractVar[tuple[float, float, int]]

    @abc.abstractmethod
    def force(
        self, t: Float[ArrayLike, ""], q: Float[Array, " n"], v: Float[Array, " n"]
    ) -> Float[Array, " n"]:
        """`q'' = F(t, q, v)` at one point."""

    @abc.abstractmethod
    def sample_initial_conditions(
        self, key: PRNGKeyArray, n_traj: int
    ) -> tuple[Float[Array, "n_traj n"], Float[Array, "n_traj n"]]:
        """`(q0, v0)`, each of shape `(n_traj, n)`, from the experiment's distribution."""

    @property
    def n(self) -> int:
        """The system dimension."""
        return self.box.n

    def sample_points(
        self, key: PRNGKeyArray, m: int
    ) -> tuple[Float[Array, " m"], Float[Array, "m n"], Float[Array, "m n"]]:
        """`m` points `(ts, qs, vs)` drawn uniformly in `box`."""
        return self.box.sample(key, m)

    def times(self, n_time: int | None = None) -> Float[Array, " n_time"]:
        """The default observation times, `linspace(t0, t1, n_time)` from `time_grid`."""
        t0, t1, default = self.time_grid
        return jnp.linspace(t0, t1, default if n_time is None else n_time)


# ---------------------------------------------------------------------------------------------
# Lagrangian systems
# ---------------------------------------------------------------------------------------------


def _as_float_vector(name: str, x, n: int | None = None) -> Array:
    x = jnp.atleast_1d(jnp.asarray(x, dtype=float))
    if n is not None:
        x = jnp.broadcast_to(x, (n,)) if x.shape == (1,) else x
    if x.ndim != 1 or (n is not None and x.shape != (n,)):
        raise ValueError(f"`{name}`: expected a scalar or a vector of length {n}; got {x.shape}.")
    return x


@typing.final
class HarmonicOscillator(AbstractSystem):
    """The undamped oscillator `q'' = −ω² q` (per component), with `g = I`.

    Defaults follow the spec's LNODE experiment: `ω = 2π·6`, `q0 = 1 + N(0, 0.1²)`,
    `v0 = |q0| / 10`, 150 observations on `[0, 1]`.

    **Arguments:**

    - `omega`: angular frequencies, a scalar or one per component.
    - `n`: the dimension (default 2).
    - `box`: the metric sampling box; default `q ∈ [−1.5, 1.5]`, `v ∈ [−1.5ω, 1.5ω]`,
      `t ∈ [0, 1]`.
    """

    omega: Float[Array, " n"]
    box: SamplingBox
    time_grid: tuple[float, float, int] = eqx.field(static=True)

    def __init__(
        self,
        omega: float | Float[ArrayLike, " n"] = 2 * math.pi * 6,
        n: int = 2,
        box: SamplingBox | None = None,
    ):
        self.omega = _as_float_vector("HarmonicOscillator", omega, n)
        if box is None:
            if isinstance(self.omega, jax.core.Tracer):
                raise ValueError(
                    "`HarmonicOscillator`: the default box scales with `omega`, which is traced "
                    "here; pass `box=SamplingBox(...)` or build the system outside jit/grad."
                )
            w = [abs(float(x)) for x in self.omega]
            box = SamplingBox(
                (0.0, 1.0), (-1.5,) * n, (1.5,) * n, [-1.5 * x for x in w], [1.5 * x for x in w]
            )
        self.box = box
        self.time_grid = (0.0, 1.0, 150)

    def force(self, t, q, v):
        return (-(self.omega**2) * q).astype(q.dtype)

    def multiplier(self, t, q, v):
        """`g = I`."""
        return jnp.eye(q.shape[-1], dtype=q.dtype)

    def sample_initial_conditions(self, key, n_traj):
        q0 = 1.0 + 0.1 * jax.random.normal(key, (n_traj, self.n))
        return q0, jnp.abs(q0) / 10.0


_OMEGA_DAMPED = 2 * math.pi * 3 / 4


@typing.final
class DampedOscillator(AbstractSystem):
    """Linear damping with diagonal stiffness and damping: `q'' = −k q − c v` (per component).

    Each component is a 1-D Caldirola-Kanai system, `L = Σ_i e^{c_i t}(½ v_i² − ½ k_i q_i²)`,
    so `g = diag(e^{c_i t})` (the sign is `+c_i t`: `e^{−c t}` fails H2). It needs a `g` with an
    explicit `t` input. Defaults are the spec's metric experiment: `ω = 2π·3/4`,
    `k = ((0.8ω)², ω²)`, `c = (0.4ω, 0.5ω)`, `q0 = 1 + N(0, 1)`, `v0 = N(0, 1)`, 150
    observations on `[0, 4]`, box `q, v ∈ [−2, 2]²`, `t ∈ [0, 4]`. Pass equal entries for the
    isotropic oscillator `q'' = −K q − γ v`, where `g = e^{γt} I`.

    **Arguments:**

    - `stiffness`: `k`, a scalar or one per component.
    - `damping`: `c`, a scalar or one per component.
    - `n`: the dimension, used to broadcast scalars (default 2).
    """

    stiffness: Float[Array, " n"]
    damping: Float[Array, " n"]
    box: SamplingBox
    time_grid: tuple[float, float, int] = eqx.field(static=True)

    def __init__(
        self,
        stiffness: float | Float[ArrayLike, " n"] = ((0.8 * _OMEGA_DAMPED) ** 2, _OMEGA_DAMPED**2),
        damping: float | Float[ArrayLike, " n"] = (0.4 * _OMEGA_DAMPED, 0.5 * _OMEGA_DAMPED),
        n: int = 2,
    ):
        self.stiffness = _as_float_vector("DampedOscillator", stiffness, n)
        self.damping = _as_float_vector("DampedOscillator", damping, n)
        self.box = _box((0.0, 4.0), (-2.0, 2.0), (-2.0, 2.0), n)
        self.time_grid = (0.0, 4.0, 150)

    def force(self, t, q, v):
        return (-self.stiffness * q - self.damping * v).astype(q.dtype)

    def multiplier(self, t, q, v):
        """`g = diag(exp(c_i t))`."""
        return jnp.diag(jnp.exp(self.damping * t)).astype(q.dtype)

    def sample_initial_conditions(self, key, n_traj):
        key_q, key_v = jax.random.split(key)
        return (
            1.0 + jax.random.normal(key_q, (n_traj, self.n)),
            jax.random.normal(key_v, (n_traj, self.n)),
        )


@typing.final
class KeplerPolar(AbstractSystem):
    """The Kepler problem in polar coordinates `q = (r, φ)`, with `g = diag(1, r²)`.

    `F = (r φ'² − GM/r², −2 r' φ' / r)` from `L = ½(r'² + r² φ'²) + GM/r`. The default
    `GM = π²/4` gives period 4 for semi-major axis 1. Initial conditions follow the spec: `e ~
    N(0.5, 0.2)` clipped to `[0, 0.8]`, semi-latus rectum `p ~ N(1, 0.1)`, and a uniform true
    anomaly (which is also `φ0`); 500 observations on `[0, 8]`. The default metric box is the
    spec's `r ∈ [0.5, 2]`, `φ ∈ [−π, π]`, `r' ∈ [−0.5, 0.5]`, `φ' ∈ [0.2, 1.5]`, `t ∈ [0, 8]`
    (calibrated at GM = 1; the force is Lagrangian for every r > 0 whatever GM).

    **Arguments:**

    - `gm`: the gravitational parameter GM.
    - `eccentricity`: `(mean, std, max)` of the clipped normal the initial eccentricities are
      drawn from (the spec's `(0.5, 0.2, 0.8)` by default; `(0.05, 0.02, 0.1)` is its
      near-circular LNODE experiment).
    - `semi_latus_rectum`: `(mean, std)` of the normal the semi-latus rectum p is drawn from (its
      absolute value; the spec's `(1, 0.1)` by default). p fixes the angular momentum
      sqrt(GM p): with a narrow spread, φ' is nearly a function of r on every orbit, so data
      barely constrain ∂F/∂φ' at fixed r, which the Helmholtz conditions need.
    """

    gm: Float[Array, ""]
    box: SamplingBox
    eccentricity: tuple[float, float, float] = eqx.field(static=True)
    semi_latus_rectum: tuple[float, float] = eqx.field(static=True)
    time_grid: tuple[float, float, int] = eqx.field(static=True)

    def __init__(
        self,
        gm: float | Float[ArrayLike, ""] = math.pi**2 / 4,
        eccentricity: tuple[float, float, float] = (0.5, 0.2, 0.8),
        semi_latus_rectum: tuple[float, float] = (1.0, 0.1),
    ):
        p_mean, p_std = (float(x) for x in semi_latus_rectum)
        if not (p_mean > 0 and p_std >= 0):
            raise ValueError(
                "`KeplerPolar`: `semi_latus_rectum` must be (mean, std) with mean > 0 and "
                f"std >= 0; got {semi_latus_rectum!r}."
            )
        self.semi_latus_rectum = (p_mean, p_std)
        mean, std, e_max = (float(x) for x in eccentricity)
        if not (0.0 <= mean <= e_max < 1.0 and std >= 0.0):
            raise ValueError(
                "`KeplerPolar`: `eccentricity` must be (mean, std, max) with 0 <= mean <= max < 1 "
                f"and std >= 0 (bound orbits); got {eccentricity!r}."
            )
        self.eccentricity = (mean, std, e_max)
        self.gm = jnp.asarray(gm, dtype=float)
        self.box = SamplingBox((0.0, 8.0), (0.5, -math.pi), (2.0, math.pi), (-0.5, 0.2), (0.5, 1.5))
        self.time_grid = (0.0, 8.0, 500)

    def force(self, t, q, v):
        r, dr, dphi = q[0], v[0], v[1]
        return jnp.stack([r * dphi**2 - self.gm / r**2, -2.0 * dr * dphi / r]).astype(q.dtype)

    def multiplier(self, t, q, v):
        """`g = diag(1, r²)`."""
        return jnp.diag(jnp.stack([jnp.ones_like(q[0]), q[0] ** 2]))

    def sample_initial_conditions(self, key, n_traj):
        key_e, key_p, key_f = jax.random.split(key, 3)
        mean, std, e_max = self.eccentricity
        e = jnp.clip(mean + std * jax.random.normal(key_e, (n_traj,)), 0.0, e_max)
        p_mean, p_std = self.semi_latus_rectum
        p = jnp.abs(p_mean + p_std * jax.random.normal(key_p, (n_traj,)))
        f = jax.random.uniform(key_f, (n_traj,), minval=-math.pi, maxval=math.pi)
        r = p / (1.0 + e * jnp.cos(f))
        dr = jnp.sqrt(self.gm / p) * e * jnp.sin(f)
        dphi = jnp.sqrt(self.gm * p) / r**2
        return jnp.stack([r, f], axis=-1), jnp.stack([dr, dphi], axis=-1)


@typing.final
class DoublePendulum(AbstractSystem):
    """The double pendulum with unit masses and lengths, `q = (θ1, θ2)`; `g = M(θ)`.

    With `Δ = θ1 − θ2`, `M = [[2, cos Δ], [cos Δ, 1]]` and
    `M θ'' = (−θ2'² sin Δ − 2 g sin θ1, θ1'² sin Δ − g sin θ2)`; the multiplier is the velocity
    Hessian of the Lagrangian, `M(θ)`. Initial angles `~ N(π/6, 0.2)` at rest, 100 observations
    on `[0, 6]`; box `θ ∈ [−1, 1]²`, `θ' ∈ [−3, 3]²`, `t ∈ [0, 6]`.

    **Arguments:**

    - `gravity`: the gravitational acceleration `g` (default 9.81).
    """

    gravity: Float[Array, ""]
    box: SamplingBox
    time_grid: tuple[float, float, int] = eqx.field(static=True)

    def __init__(self, gravity: float | Float[ArrayLike, ""] = 9.81):
        self.gravity = jnp.asarray(gravity, dtype=float)
        self.box = _box((0.0, 6.0), (-1.0, 1.0), (-3.0, 3.0))
        self.time_grid = (0.0, 6.0, 100)

    def force(self, t, q, v):
        delta = q[0] - q[1]
        c, s = jnp.cos(delta), jnp.sin(delta)
        rhs1 = -(v[1] ** 2) * s - 2.0 * self.gravity * jnp.sin(q[0])
        rhs2 = v[0] ** 2 * s - self.gravity * jnp.sin(q[1])
        det = 2.0 - c**2
        return jnp.stack([(rhs1 - c * rhs2) / det, (2.0 * rhs2 - c * rhs1) / det]).astype(q.dtype)

    def multiplier(self, t, q, v):
        """`g = M(θ) = [[2, cos Δ], [cos Δ, 1]]`."""
        c = jnp.cos(q[0] - q[1])
        return jnp.stack([jnp.stack([2.0 + 0.0 * c, c]), jnp.stack([c, 1.0 + 0.0 * c])])

    def sample_initial_conditions(self, key, n_traj):
        q0 = math.pi / 6 + 0.2 * jax.random.normal(key, (n_traj, 2))
        return q0, jnp.zeros_like(q0)


@typing.final
class CurlForce(AbstractSystem):
    """The curl force `F = −A q = (−q2, q1)`, `A = [[0, 1], [−1, 0]]`: Lagrangian, indefinite g.

    `g = I` fails (`max|R1| = 2`), yet `g = [[−1, 1], [1, 1]]` (or `diag(1, −1)`,
    `L = ½(v1² − v2²) − q1 q2`) satisfies every condition: **one failing guess proves nothing**.
    Initial conditions `N(0, 0.5²)`, 100 observations on `[0, 2]`; box `q, v ∈ [−1, 1]²`,
    `t ∈ [0, 1]`.
    """

    box: SamplingBox
    time_grid: tuple[float, float, int] = eqx.field(static=True)

    def __init__(self):
        self.box = _box((0.0, 1.0), (-1.0, 1.0), (-1.0, 1.0))
        self.time_grid = (0.0, 2.0, 100)

    def force(self, t, q, v):
        return jnp.stack([-q[1], q[0]]).astype(q.dtype)

    def multiplier(self, t, q, v):
        """`g = [[−1, 1], [1, 1]]` (indefinite)."""
        return jnp.array([[-1.0, 1.0], [1.0, 1.0]], dtype=q.dtype)

    def sample_initial_conditions(self, key, n_traj):
        key_q, key_v = jax.random.split(key)
        return (
            0.5 * jax.random.normal(key_q, (n_traj, 2)),
            0.5 * jax.random.normal(key_v, (n_traj, 2)),
        )


@typing.final
class RotatingFrame(AbstractSystem):
    """An orbit in a logarithmic potential seen from a frame rotating at `Ω`; `g = I`.

    `F = −∇Φ(q) + 2Ω (v2, −v1) + Ω² q` with `Φ = ½ v_c² ln(r_c² + |q|²)`: the centrifugal and
    Coriolis terms come from `L = ½|v + Ω × q|² − Φ`. Initial conditions are near-circular
    (inertial speed `v_circ(r) (1 + N(0, 0.1))`, `r ~ U(0.5, 1.5)`), 200 observations on
    `[0, 8]`; box `q ∈ [−1.5, 1.5]²`, `v ∈ [−1.5, 1.5]²`, `t ∈ [0, 8]`.

    **Arguments:**

    - `v_circ`: the asymptotic circular speed `v_c`.
    - `r_core`: the core radius `r_c`.
    - `omega_frame`: the frame's angular speed `Ω` (counter-clockwise).
    """

    v_circ: Float[Array, ""]
    r_core: Float[Array, ""]
    omega_frame: Float[Array, ""]
    box: SamplingBox
    time_grid: tuple[float, float, int] = eqx.field(static=True)

    def __init__(self, v_circ: float = 1.0, r_core: float = 0.2, omega_frame: float = 0.5):
        self.v_circ = jnp.asarray(v_circ, dtype=float)
        self.r_core = jnp.asarray(r_core, dtype=float)
        self.omega_frame = jnp.asarray(omega_frame, dtype=float)
        self.box = _box((0.0, 8.0), (-1.5, 1.5), (-1.5, 1.5))
        self.time_grid = (0.0, 8.0, 200)

    def force(self, t, q, v):
        omega = self.omega_frame
        gravity = -(self.v_circ**2) * q / (self.r_core**2 + jnp.sum(q**2))
        coriolis = 2.0 * omega * jnp.stack([v[1], -v[0]])
        return (gravity + coriolis + omega**2 * q).astype(q.dtype)

    def multiplier(self, t, q, v):
        """`g = I`."""
        return jnp.eye(2, dtype=q.dtype)

    def sample_initial_conditions(self, key, n_traj):
        key_r, key_a, key_s = jax.random.split(key, 3)
        r = jax.random.uniform(key_r, (n_traj,), minval=0.5, maxval=1.5)
        angle = jax.random.uniform(key_a, (n_traj,), minval=-math.pi, maxval=math.pi)
        speed = self.v_circ * r / jnp.sqrt(self.r_core**2 + r**2)
        speed = speed * (1.0 + 0.1 * jax.random.normal(key_s, (n_traj,)))
        q0 = jnp.stack([r * jnp.cos(angle), r * jnp.sin(angle)], axis=-1)
        v_inertial = speed[:, None] * jnp.stack([-jnp.sin(angle), jnp.cos(angle)], axis=-1)
        frame = self.omega_frame * jnp.stack([-q0[:, 1], q0[:, 0]], axis=-1)  # Ω × q
        return q0, v_inertial - frame


# ---------------------------------------------------------------------------------------------
# Non-variational systems (Douglas 1941)
# ---------------------------------------------------------------------------------------------


@typing.final
class DouglasCaseIIIb(AbstractSystem):
    """Douglas' non-variational case IIIb, `F = (q1² + q2², 0)`: no multiplier exists.

    Initial conditions `N(0, 1)`, 150 observations on `[0, 1]`; box `q, v ∈ [−1, 1]²`,
    `t ∈ [0, 1]`. Its learned-g threshold has not been calibrated yet (spec §9.5).
    """

    box: SamplingBox
    time_grid: tuple[float, float, int] = eqx.field(static=True)
    multiplier = None

    def __init__(self):
        self.box = _box((0.0, 1.0), (-1.0, 1.0), (-1.0, 1.0))
        self.time_grid = (0.0, 1.0, 150)

    def force(self, t, q, v):
        return jnp.stack([q[0] ** 2 + q[1] ** 2, jnp.zeros_like(q[0])]).astype(q.dtype)

    def sample_initial_conditions(self, key, n_traj):
        key_q, key_v = jax.random.split(key)
        return jax.random.normal(key_q, (n_traj, 2)), jax.random.normal(key_v, (n_traj, 2))


@typing.final
class DouglasCaseIV(AbstractSystem):
    """Douglas' non-variational case IV, `F = (q1² + q2², q1)`: no multiplier exists.

    With `g = I`, `R1_12 = 1 − 2 q2`. Initial conditions `N(0, 1)`, 150 observations on
    `[0, 1]`; box `q, v ∈ [−1, 1]²`, `t ∈ [0, 1]`. The learned-g metric stays O(1), H1-dominated:
    1.06 after 15k steps here (the spec §8 reference run gave 1.8).
    """

    box: SamplingBox
    time_grid: tuple[float, float, int] = eqx.field(static=True)
    multiplier = None

    def __init__(self):
        self.box = _box((0.0, 1.0), (-1.0, 1.0), (-1.0, 1.0))
        self.time_grid = (0.0, 1.0, 150)

    def force(self, t, q, v):
        return jnp.stack([q[0] ** 2 + q[1] ** 2, q[0]]).astype(q.dtype)

    def sample_initial_conditions(self, key, n_traj):
        key_q, key_v = jax.random.split(key)
        return jax.random.normal(key_q, (n_traj, 2)), jax.random.normal(key_v, (n_traj, 2))


# ---------------------------------------------------------------------------------------------
# Noisy trajectories
# ---------------------------------------------------------------------------------------------


class Trajectories(NamedTuple):
    """Simulated trajectories of a system.

    **Fields:**

    - `ts`: observation times, shape `(n_time,)`, shared by all trajectories.
    - `qs`: clean positions, shape `(n_traj, n_time, n)`.
    - `qs_noisy`: positions with Gaussian noise.
    - `vs`: clean velocities, shape `(n_traj, n_time, n)`.
    - `vs_noisy`: velocities with Gaussian noise (`vs` itself when `velocity_noise=0`).
    """

    ts: Float[Array, " n_time"]
    qs: Float[Array, "n_traj n_time n"]
    qs_noisy: Float[Array, "n_traj n_time n"]
    vs: Float[Array, "n_traj n_time n"]
    vs_noisy: Float[Array, "n_traj n_time n"]


def _add_noise(key, x, level):
    if level == 0:
        return x
    std = level * jnp.mean(jnp.abs(x), axis=(0, 1))  # per component
    return x + std * jax.random.normal(key, x.shape, x.dtype)


def simulate(
    key: PRNGKeyArray,
    system: AbstractSystem,
    n_traj: int,
    ts: Float[ArrayLike, " n_time"] | None = None,
    *,
    noise: float = 0.05,
    velocity_noise: float = 0.0,
    rtol: float | None = None,
    atol: float | None = None,
    max_steps: int = 16_384,
) -> Trajectories:
    """Noisy trajectories of a system: initial conditions from the system, then Tsit5.

    Each trajectory starts at `ts[0]` from `system.sample_initial_conditions` and is integrated
    with [`solve_second_order`][diffgal.lagrangian.solve_second_order] (Tsit5, PID controller;
    rtol = atol = 1e-8 in float64 and 1e-6 in float32 unless given). Gaussian noise is added to
    positions with standard deviation `noise × mean|q|` per component, the mean taken over all
    trajectories and times (the spec §6 convention).

    **Arguments:**

    - `key`: a `jax.random.key`.
    - `system`: an `AbstractSystem`, e.g. `KeplerPolar()`.
    - `n_traj`: the number of trajectories.
    - `ts`: observation times, strictly increasing; default `system.times()`.
    - `noise`: the relative position noise level (0.05 = 5 %).
    - `velocity_noise`: the same for velocities (default 0).
    - `rtol`, `atol`: solver tolerances.
    - `max_steps`: the diffrax step limit per trajectory.

    **Returns:**

    [`Trajectories`][diffgal.lagrangian.Trajectories] `(ts, qs, qs_noisy, vs, vs_noisy)`.
    """
    if not isinstance(n_traj, int) or n_traj < 1:
        raise ValueError(f"`simulate`: `n_traj` must be a positive integer; got {n_traj!r}.")
    if noise < 0 or velocity_noise < 0:
        raise ValueError(
            f"`simulate`: noise levels must be >= 0; got noise={noise}, "
            f"velocity_noise={velocity_noise}."
        )
    ts = system.times() if ts is None else jnp.asarray(ts, dtype=float)
    tol_default = default_tolerance(ts.dtype)
    rtol = tol_default if rtol is None else rtol
    atol = tol_default if atol is None else atol
    key_ic, key_q, key_v = jax.random.split(key, 3)
    q0, v0 = system.sample_initial_conditions(key_ic, n_traj)
    q0, v0 = q0.astype(ts.dtype), v0.astype(ts.dtype)

    @eqx.filter_jit
    def solve_all(system, ts, q0, v0):
        def one(q0, v0):
            sol = solve_second_order(
                system.force, ts, q0, v0, rtol=rtol, atol=atol, max_steps=max_steps
            )
            return sol.qs, sol.vs

        return jax.vmap(one)(q0, v0)

    qs, vs = solve_all(system, ts, q0, v0)
    return Trajectories(
        ts=ts,
        qs=qs,
        qs_noisy=_add_noise(key_q, qs, noise),
        vs=vs,
        vs_noisy=_add_noise(key_v, vs, velocity_noise),
    )
