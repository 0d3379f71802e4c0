"""Gradient-based fitting of the joint likelihood (optax), Newton polish and Laplace covariance."""

from __future__ import annotations

import time
import typing

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float

from ._observe import JointLikelihood
from ._params import (
    DEFAULT_PRIOR,
    PARAM_NAMES,
    SUPPORT,
    GalaxyParams,
    check_support,
    from_unconstrained,
    to_unconstrained,
)


@typing.final
class FitResult(eqx.Module):
    """The outcome of [`fit`][diffgal.pipeline.fit].

    **Fields:**

    - `params`: the maximum a posteriori [`GalaxyParams`][diffgal.pipeline.GalaxyParams].
    - `covariance`: (n_free, n_free) Laplace covariance, the inverse Hessian of -log p at
      `params` over the `free` parameters (NaN if the Hessian is not positive definite).
    - `sigma`: (n_free,) square roots of its diagonal.
    - `sigma_laplace`: the Laplace sigma alone (equal to `sigma` unless
      [`total_uncertainty`][diffgal.pipeline.total_uncertainty] added the shot-noise part).
    - `loss_history`: (n_steps,) -log p after each optimiser step (then each Newton step).
    - `free`: names of the fitted parameters (static); `n_adam`, `n_newton`: steps taken;
      `stopped_early`: the optimiser stopped on its patience rule; `hessian_ok`: the Hessian
      was positive definite; `wall_s`: wall time (static).
    """

    params: GalaxyParams
    covariance: Float[Array, "n_free n_free"]
    sigma: Float[Array, " n_free"]
    sigma_laplace: Float[Array, " n_free"]
    loss_history: Float[Array, " n_steps"]
    free: tuple[str, ...] = eqx.field(static=True)
    n_adam: int = eqx.field(static=True)
    n_newton: int = eqx.field(static=True)
    stopped_early: bool = eqx.field(static=True)
    hessian_ok: bool = eqx.field(static=True)
    wall_s: float = eqx.field(static=True)

    def table(self) -> dict[str, dict[str, float]]:
        """`{name: {"estimate": ..., "sigma": ...}}` for the free parameters."""
        return {
            n: {"estimate": float(getattr(self.params, n)), "sigma": float(self.sigma[i])}
            for i, n in enumerate(self.free)
        }


def _free_index(free: tuple[str, ...]) -> np.ndarray:
    return np.asarray([PARAM_NAMES.index(n) for n in free])


def negative_log_posterior(likelihood: JointLikelihood):
    """x (6,) physical parameters in `PARAM_NAMES` order -> -log p (a jittable function).

    Hand this to a sampler: e.g. numpyro's `NUTS(potential_fn=...)` samples the six
    parameters in this order (enforce `SUPPORT` yourself, or sample the logit via
    [`from_unconstrained`][diffgal.pipeline.from_unconstrained] and add its log-Jacobian).
    """

    def f(x):
        return -likelihood(GalaxyParams.from_array(x))

    return f


@eqx.filter_jit
def _nlp_value_and_grad(likelihood: JointLikelihood, x):
    return jax.value_and_grad(lambda x: -likelihood(GalaxyParams.from_array(x)))(x)


def _value_and_grad(likelihood: JointLikelihood):
    """x -> (-log p, gradient), compiled once per likelihood structure (arrays are arguments,
    not baked-in constants)."""
    return lambda x: _nlp_value_and_grad(likelihood, x)


def laplace_hessian(
    likelihood: JointLikelihood, params: GalaxyParams, free: tuple[str, ...] = PARAM_NAMES,
    rel_step: float = 1e-2, value_and_grad=None,
) -> tuple[Array, Array]:
    """Gradient and Hessian of -log p over `free` at `params` (float64 when enabled).

    The Hessian is central differences of the exact gradient (the renderer's custom VJP has no
    forward mode), with steps `rel_step` x the default prior width of each parameter,
    symmetrised.
    """
    vg = _value_and_grad(likelihood) if value_and_grad is None else value_and_grad
    x0 = params.to_array()
    idx = _free_index(free)
    g0 = vg(x0)[1][idx]
    cols = []
    for i in idx:
        h = rel_step * DEFAULT_PRIOR[PARAM_NAMES[i]][1]
        e = jnp.zeros_like(x0).at[i].set(h)
        cols.append((vg(x0 + e)[1] - vg(x0 - e)[1])[idx] / (2 * h))
    hess = jnp.stack(cols, axis=1)
    return g0, 0.5 * (hess + hess.T)


@eqx.filter_jit
def _particle_cube_flux(pipe, params, galaxy):
    # Module level, so one compilation serves every call of `shot_noise_covariance` (a lambda
    # built inside it was a new function, and recompiled, on each call).
    return pipe.cube(params, galaxy).flux


def shot_noise_covariance(
    likelihood: JointLikelihood,
    result: FitResult,
    galaxies,
) -> Array:
    """The covariance the particle sampling of the *data* adds to a fit (sandwich form).

    A mock cube rendered from N star particles scatters around its expectation (shot noise),
    which the cube variance (photon noise only) does not hold. This renders the cube of each
    of `galaxies` (other realisations of the data's particle sampler, e.g.
    `make_mock_galaxy(k, n)` for several keys) at the fitted parameters, computes the score
    s_k = ∇(-log p) with that cube as the data, and returns H⁻¹ Cov_k[s_k] H⁻¹ (H⁻¹ the
    Laplace covariance). With `cube_model="particles"` the model has the same shot noise
    again, so the term is doubled. For a real galaxy (no particle shot noise) skip this.

    **Returns:** (n_free, n_free), to add to `result.covariance`.
    """
    galaxies = list(galaxies)
    if len(galaxies) < 3:
        raise ValueError(
            f"`shot_noise_covariance`: need at least 3 `galaxies` (realisations) to estimate a "
            f"scatter; got {len(galaxies)}. 8-16 is typical."
        )
    if likelihood.cube is None:
        return jnp.zeros_like(result.covariance)
    idx = _free_index(result.free)
    x = result.params.to_array()
    pipe = likelihood.pipeline
    grads = []
    for g in galaxies:
        data = _particle_cube_flux(pipe, result.params, g).astype(likelihood.cube.flux.dtype)
        like_k = eqx.tree_at(lambda lk: lk.cube.flux, likelihood, data)
        grads.append(np.asarray(_nlp_value_and_grad(like_k, x)[1])[idx])
    j = np.cov(np.stack(grads), rowvar=False)
    cov = np.asarray(result.covariance, np.float64)
    factor = 2.0 if likelihood.cube_model == "particles" else 1.0
    return jnp.asarray(cov @ j @ cov * factor)


def total_uncertainty(likelihood: JointLikelihood, result: FitResult, galaxies) -> FitResult:
    """`result` with `covariance` and `sigma` including
    [`shot_noise_covariance`][diffgal.pipeline.shot_noise_covariance] (`sigma_laplace` keeps
    the Laplace part). With no `galaxies` the result is returned unchanged."""
    galaxies = list(galaxies)
    if not galaxies or not result.hessian_ok:
        return result
    extra = shot_noise_covariance(likelihood, result, galaxies)
    cov = result.covariance + extra
    return eqx.tree_at(lambda r: (r.covariance, r.sigma), result,
                       (cov, jnp.sqrt(jnp.diag(cov))))


def fit(
    likelihood: JointLikelihood,
    init: GalaxyParams,
    *,
    steps: int = 300,
    learning_rate: float = 0.05,
    patience: int = 25,
    tol: float = 1e-3,
    newton_steps: int = 8,
    free: tuple[str, ...] = PARAM_NAMES,
    show_progress: bool = True,
    callback=None,
) -> FitResult:
    """Maximise the posterior of a [`JointLikelihood`][diffgal.pipeline.JointLikelihood].

    1. Adam (optax) on the scaled logits of the parameters (so they stay inside `SUPPORT`),
       with a cosine-decayed learning rate, stopping early when -log p has not improved by
       `tol` for `patience` steps. A tqdm bar shows the loss.
    2. Up to `newton_steps` damped Newton steps in the physical parameters (backtracking, kept
       inside the support; Levenberg-Marquardt-shifted where the Hessian is not positive
       definite), using the Hessian of [`laplace_hessian`][], until the Newton decrement is
       below 1e-8.
    3. The Laplace covariance: the inverse of that Hessian at the optimum.

    **Arguments:**

    - `likelihood`: from [`make_likelihood`][diffgal.pipeline.make_likelihood].
    - `init`: the start; every parameter must lie inside `SUPPORT` (checked, `ValueError`).
    - `free`: the parameters to fit; the others stay at their `init` values.
    - `callback`: called as `callback(step, params, loss)` after each Adam step.

    **Returns:**

    A [`FitResult`][diffgal.pipeline.FitResult].
    """
    api = "fit"
    if not isinstance(likelihood, JointLikelihood):
        raise TypeError(
            f"`{api}`: `likelihood` must be a `JointLikelihood` (see `make_likelihood`); got "
            f"{type(likelihood).__name__}."
        )
    if not isinstance(init, GalaxyParams):
        raise TypeError(f"`{api}`: `init` must be a `GalaxyParams`; got {type(init).__name__}.")
    unknown = [n for n in free if n not in PARAM_NAMES]
    if unknown or not free:
        raise ValueError(
            f"`{api}`: `free` must name some of {list(PARAM_NAMES)}; got {list(free)}."
        )
    if not (isinstance(steps, int) and steps >= 0):
        raise ValueError(f"`{api}`: `steps` must be an int >= 0; got {steps!r}.")
    check_support(init, api, "init")
    t_start = time.perf_counter()
    dtype = jnp.result_type(float)
    init = jax.tree.map(lambda x: jnp.asarray(x, dtype), init)
    free = tuple(free)
    idx = _free_index(free)
    mask = jnp.zeros(len(PARAM_NAMES), bool).at[idx].set(True)
    z_fixed = to_unconstrained(init)

    vg = _value_and_grad(likelihood)  # the one compiled function: -log p and its gradient
    schedule = optax.cosine_decay_schedule(learning_rate, max(steps, 1), alpha=0.05)
    opt = optax.adam(schedule)

    def loss_z(z):
        x, dx_dz = jax.jvp(from_unconstrained_array, (z,), (jnp.ones_like(z),))
        value, g = vg(x)
        return value, jnp.where(mask, g * dx_dz, 0.0)

    @jax.jit
    def update(z, g, state):
        updates, state = opt.update(g, state, z)
        return optax.apply_updates(z, updates), state

    def step(z, state):
        value, g = loss_z(z)
        z, state = update(z, g, state)
        return z, state, value

    z = z_fixed
    state = opt.init(z)
    history: list[float] = []
    best, best_z, since = np.inf, z, 0
    stopped = False
    bar = None
    if show_progress and steps:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc="fit (adam)", leave=False)
    for i in range(steps):
        z_new, state, value = step(z, state)
        v = float(value)
        if not np.isfinite(v):
            raise FloatingPointError(
                f"`{api}`: -log p became {v} at step {i} (parameters "
                f"{from_unconstrained(z).as_dict()}). Lower `learning_rate` or start closer."
            )
        history.append(v)
        if v < best - tol:
            best, best_z, since = v, z, 0
        else:
            since += 1
        if callback is not None:
            callback(i, from_unconstrained(z), v)
        z = z_new
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{v:.4g}")
        if since >= patience:
            stopped = True
            break
    if bar is not None:
        bar.close()
    n_adam = len(history)
    final = float(loss_z(z)[0]) if steps else np.inf
    if final > best:
        z = best_z
    params = from_unconstrained(jnp.where(mask, z, z_fixed))

    # Newton polish in the physical parameters.
    def f_jit(x):
        return vg(x)[0]

    x = params.to_array()
    lo = np.asarray([SUPPORT[n][0] for n in PARAM_NAMES])
    hi = np.asarray([SUPPORT[n][1] for n in PARAM_NAMES])
    n_newton = 0
    fx = float(f_jit(x))
    g, hess = laplace_hessian(likelihood, GalaxyParams.from_array(x), free, value_and_grad=vg)
    for _ in range(newton_steps):
        h = np.asarray(hess, np.float64)
        eig, vec = np.linalg.eigh(h)
        # Levenberg-Marquardt shift where the Hessian is not positive definite (far from the
        # optimum the posterior need not be convex).
        shift = 0.0 if eig[0] > 1e-12 * max(eig[-1], 1e-300) else 1.5 * abs(eig[0]) + 1e-6 * abs(
            eig[-1])
        gv = vec.T @ np.asarray(g, np.float64)
        delta = -vec @ (gv / (eig + shift))
        decrement = float(-np.dot(np.asarray(g), delta))
        if shift == 0.0 and decrement < 1e-8:
            break
        accepted = False
        for damping in (1.0, 0.5, 0.25, 0.125, 0.0625):
            x_try = np.asarray(x, np.float64).copy()
            x_try[idx] += damping * delta
            if np.any(x_try <= lo) or np.any(x_try >= hi):
                continue
            f_try = float(f_jit(jnp.asarray(x_try, dtype)))
            if f_try < fx:
                x, fx, accepted = jnp.asarray(x_try, dtype), f_try, True
                break
        if not accepted:
            break
        n_newton += 1
        history.append(fx)
        g, hess = laplace_hessian(likelihood, GalaxyParams.from_array(x), free, value_and_grad=vg)
    h64 = np.asarray(hess, np.float64)
    eig = np.linalg.eigvalsh(h64)
    ok = bool(np.all(eig > 0))
    cov = np.linalg.inv(h64) if ok else np.full_like(h64, np.nan)
    return FitResult(
        params=GalaxyParams.from_array(x),
        covariance=jnp.asarray(cov),
        sigma=jnp.asarray(np.sqrt(np.diag(cov))),
        sigma_laplace=jnp.asarray(np.sqrt(np.diag(cov))),
        loss_history=jnp.asarray(history),
        free=free,
        n_adam=n_adam,
        n_newton=n_newton,
        stopped_early=stopped,
        hessian_ok=ok,
        wall_s=time.perf_counter() - t_start,
    )


def from_unconstrained_array(z):
    return from_unconstrained(z).to_array()

