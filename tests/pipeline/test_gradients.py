"""Acceptance: in float64, `jax.grad` of the cube chi^2 (both normalisations; of the particle
render `Pipeline.cube` and of the expected cube `Pipeline.cube_expected`) and of the abundance
log-likelihood with respect to all six parameters (alpha_IMF, log10 N_Ia, log10 tau_Ia,
log10 SFE, log10 SFR peak, x_out) matches central finite differences to 1e-3 relative, under
`jit`, and with the renderer sharded over 4 fake CPU devices. Also a float32 run of the cube
gradient.

Compilation dominates the cost, so each configuration compiles one function:
`jit(value_and_grad(w . losses(x)))` with the loss selected by a one-hot weight vector `w`
(a traced argument, so every loss shares the compiled code). The gradient of `w . losses` for a
one-hot `w` is the gradient of that loss; finite differences call the same compiled function.

The renderer interpolates piecewise linearly (CIC in space and velocity, bilinear in log age and
[M/H]) and the chemical history is linear in time between its nodes, so the loss has kinks where
a particle (or one of the quadrature points of the expected cube) crosses a node. A central
difference that straddles a kink is off by the slope jump times that point's share: with a step
of 1e-4 in alpha_IMF and 512 quadrature points, one point of the expected cube crossed a [M/H]
node and the difference was off by 2e-3 (the gradient agreed with differences of step
3e-5 .. 1e-6 to 1e-9).
The step is therefore 1e-5 (in parameter units): the truncation error (~h^2) is far below the
tolerance, and so is the round-off (~1e-16 |L| / h) except for components far smaller than the
rest (log10_tau_ia of the per-spaxel chi^2 is ~6e-5 of the largest component; its difference
agrees to ~5e-4): components below `TINY` of the largest are compared relative to `TINY` times
the largest. The achieved errors are printed with `pytest -s`.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffgal.ifu import make_mesh
from diffgal.pipeline import (
    PARAM_NAMES,
    GalaxyParams,
    abundance_loglik,
    cube_chi2,
    make_chemistry,
    make_pipeline,
)

from .conftest import RENDER_KW, T_OBS

N_DEV = 4
#: Where the gradients are taken: off the truth, so that no component vanishes.
OFFSET = np.array([0.05, 0.05, -0.05, 0.05, -0.03, 0.03])
FD_STEP = 1e-5
RTOL = 1e-3
TINY = 1e-3
#: The cube chi^2 of the particle render (`Pipeline.cube`) and of the expected cube
#: (`Pipeline.cube_expected`, the likelihood's default cube model), with both normalisations,
#: and the abundance log-likelihood.
CUBE_LOSSES = ("cube_fixed", "cube_per_spaxel", "expected_fixed", "expected_per_spaxel")
LOSSES = CUBE_LOSSES + ("abundances",)

#: Max relative FD errors per loss, printed at the end of the module (`pytest -s`).
ACHIEVED: dict[str, np.ndarray] = {}


def _losses(pipe, galaxy, obs, stars, x):
    """The losses named in `LOSSES` (`CUBE_LOSSES` when `stars` is None)."""
    params = GalaxyParams.from_array(x)
    history = pipe.history(params, T_OBS)
    flux = pipe.cube(params, galaxy, history).flux
    expected = pipe.cube_expected(params, galaxy, history).flux
    out = [cube_chi2(flux, obs, "fixed"), cube_chi2(flux, obs, "per_spaxel"),
           cube_chi2(expected, obs, "fixed"), cube_chi2(expected, obs, "per_spaxel")]
    if stars is not None:
        pred = pipe.abundances(params, stars.birth_time, T_OBS, history)
        out.append(abundance_loglik(pred, stars))
    return jnp.stack(out)


@eqx.filter_jit
def _value_and_grad(pipe, galaxy, obs, stars, x, w):
    """`jit(value_and_grad)` of w . losses(x) with respect to x."""
    return jax.value_and_grad(lambda x: _losses(pipe, galaxy, obs, stars, x) @ w)(x)


@eqx.filter_jit
def _cube_value_and_grad(pipe, galaxy, obs, x):
    """`jit(value_and_grad)` of the particle cube's chi^2 (fixed normalisation) alone."""
    return jax.value_and_grad(
        lambda x: cube_chi2(pipe.cube(GalaxyParams.from_array(x), galaxy).flux, obs, "fixed"))(x)


def _one_hot(i, n, dtype):
    return jnp.zeros(n, dtype).at[i].set(1.0)


def _fd_check(f_vg, x0, w, name):
    """Compare the gradient with central differences; return the per-parameter rel. error."""
    value, grad = f_vg(x0, w)
    grad = np.asarray(grad)
    assert np.isfinite(float(value)) and np.all(np.isfinite(grad))
    fd = np.empty(len(PARAM_NAMES))
    for i in range(len(PARAM_NAMES)):
        e = np.zeros(len(PARAM_NAMES))
        e[i] = FD_STEP
        up = float(f_vg(x0 + e, w)[0])
        down = float(f_vg(x0 - e, w)[0])
        fd[i] = (up - down) / (2 * FD_STEP)
    rel = np.abs(grad - fd) / np.abs(fd)
    ACHIEVED[name] = rel
    # Components below TINY of the largest one (only log10_tau_ia of the per-spaxel chi^2, ~6e-5
    # of the largest) are compared relative to TINY x the largest, where the round-off of the
    # difference lives; every other component is compared relative to itself.
    scale = np.maximum(np.abs(fd), TINY * np.abs(fd).max())
    for i, pname in enumerate(PARAM_NAMES):
        assert fd[i] != 0.0, (name, pname)
        assert abs(grad[i] - fd[i]) < RTOL * scale[i], (name, pname, grad[i], fd[i], rel[i])
    return grad


@pytest.fixture(scope="module")
def x0(truth):
    return truth.to_array() + jnp.asarray(OFFSET)


@pytest.fixture(scope="module")
def single(pipeline, galaxy, obs, stars):
    return lambda x, w: _value_and_grad(pipeline, galaxy, obs, stars, x, w)


@pytest.fixture(scope="module")
def sharded_pipeline(telescope, grid, chemistry):
    assert len(jax.devices()) >= N_DEV
    return make_pipeline(telescope, grid, chemistry=chemistry, mesh=make_mesh(N_DEV),
                         shard_mode="particles", dtype=jnp.float64, **RENDER_KW)


@pytest.fixture(scope="module")
def sharded(sharded_pipeline, galaxy, obs):
    return lambda x, w: _value_and_grad(sharded_pipeline, galaxy, obs, None, x, w)


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    for name, rel in ACHIEVED.items():
        print(f"\nmax rel. FD error {name}: " + ", ".join(
            f"{p}={r:.1e}" for p, r in zip(PARAM_NAMES, rel, strict=True)))


@pytest.mark.parametrize("loss", LOSSES)
def test_float64_gradient_matches_central_differences(single, x0, loss):
    w = _one_hot(LOSSES.index(loss), len(LOSSES), x0.dtype)
    grad = _fd_check(single, x0, w, loss)
    # every parameter moves every observable (no dead direction)
    assert np.all(np.abs(grad) > 0)


@pytest.mark.parametrize("loss", CUBE_LOSSES)
def test_sharded_gradient_matches_single_device_and_differences(single, sharded, x0, loss):
    k = LOSSES.index(loss)
    v1, g1 = single(x0, _one_hot(k, len(LOSSES), x0.dtype))
    w = _one_hot(k, len(CUBE_LOSSES), x0.dtype)
    v4, g4 = sharded(x0, w)
    assert float(v4) == pytest.approx(float(v1), rel=1e-8)
    np.testing.assert_allclose(np.asarray(g4), np.asarray(g1), rtol=1e-8)
    _fd_check(sharded, x0, w, f"{loss} (sharded x{N_DEV})")


def test_float32_gradient_is_finite_and_close_to_float64(single, pipeline, telescope, grid,
                                                        chemistry, galaxy, obs, x0):
    """The main path in a float32 context: the pipeline built with x64 disabled (chemistry,
    distances, template bank, cube all float32), the float64 test galaxy and observation cast to
    float32. The cube chi^2 gradient is finite and within 1% of the float64 one."""
    g64 = np.asarray(single(x0, _one_hot(0, len(LOSSES), x0.dtype))[1])
    to32 = _cast(jnp.float32)
    with jax.enable_x64(False):
        chem = make_chemistry("default", options=chemistry.options)
        pipe = make_pipeline(telescope, grid, chemistry=chem, dtype=jnp.float32, **RENDER_KW)
        assert pipe.renderer.bank.dtype == jnp.float32
        # the distances (hence the spaxel size and flux scale) are right in float32 too
        assert float(pipe.renderer.pixel_kpc) == pytest.approx(float(pipeline.renderer.pixel_kpc),
                                                               rel=1e-5)
        gal, obs32, x = to32(galaxy), to32(obs), to32(x0)
        value, g32 = _cube_value_and_grad(pipe, gal, obs32, x)
        assert value.dtype == jnp.float32 and g32.dtype == jnp.float32
        g32 = np.asarray(g32, np.float64)
    assert np.all(np.isfinite(g32))
    rel = np.abs(g32 - g64) / np.abs(g64)
    ACHIEVED["cube_fixed float32 vs float64"] = rel
    assert np.all(rel < 1e-2), dict(zip(PARAM_NAMES, rel, strict=True))


def _cast(dtype):
    def leaf(a):
        if isinstance(a, jax.Array | np.ndarray) and jnp.issubdtype(a.dtype, jnp.floating):
            return jnp.asarray(np.asarray(a, dtype))
        return a

    return lambda tree: jax.tree.map(leaf, tree)
