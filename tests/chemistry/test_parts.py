"""Contract tests over every concrete part: jit, vmap, finite gradients, shapes, invariants."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffgal.chemistry import (
    ArgastLifetimes,
    ChabrierIMF,
    ChemistryParams,
    ExponentialDTD,
    GCEOptions,
    KroupaIMF,
    PortinariLifetimes,
    PowerLawDTD,
    SalpeterIMF,
    evolve,
    load_yields,
    metallicity_weights,
)

IMFS = [ChabrierIMF(), SalpeterIMF(), KroupaIMF()]
LIFETIMES = [PortinariLifetimes(), ArgastLifetimes()]
DTDS = [PowerLawDTD(), ExponentialDTD()]
OPTIONS = dataclasses.replace(GCEOptions.smooth(), scan_segments=1)


def _ids(part):
    return type(part).__name__


@pytest.mark.parametrize("imf", IMFS, ids=_ids)
def test_imf_contract(imf):
    masses = jnp.geomspace(0.1, 100, 50)

    def cdf(slope, m):
        return eqx.tree_at(lambda i: i.high_mass_slope, imf, slope).mass_cdf(m)

    values = jax.jit(jax.vmap(cdf, in_axes=(None, 0)))(-2.3, masses)
    assert values.shape == (50,)
    assert np.all(np.diff(np.asarray(values)) >= 0)
    grads = jax.vmap(jax.grad(cdf), in_axes=(None, 0))(-2.3, masses[1:-1])
    assert np.isfinite(np.asarray(grads)).all()
    # A steeper slope puts less mass into massive stars: the CDF at 10 Msun rises.
    assert float(jax.grad(cdf)(-2.3, 10.0)) < 0
    # dN/dm is continuous across every break.
    for m in {1.0, 0.5, 0.08} & {imf.power_law_break, *getattr(imf, "breaks", ())}:
        lo, hi = imf.number_density(m * (1 - 1e-9)), imf.number_density(m * (1 + 1e-9))
        np.testing.assert_allclose(float(lo), float(hi), rtol=1e-6)


@pytest.mark.parametrize("lifetimes", LIFETIMES, ids=_ids)
def test_lifetimes_contract(lifetimes):
    masses = jnp.geomspace(0.8, 60, 40)
    for z in (1e-4, 0.004, 0.02):
        tau = lifetimes.lifetime(masses, z)
        assert np.all(np.diff(np.asarray(tau)) < 0), "lifetimes decrease with mass"
        back = jax.jit(jax.vmap(lifetimes.dying_mass, in_axes=(0, None)))(tau, z)
        np.testing.assert_allclose(np.asarray(back), np.asarray(masses), rtol=1e-10)
    # 1 Msun at solar metallicity lives ~10 Gyr, 8 Msun some 40 Myr (both laws).
    assert 5 < float(lifetimes.lifetime(1.0, 0.02)) < 15
    assert 0.02 < float(lifetimes.lifetime(8.0, 0.02)) < 0.06
    # Age 0: nothing has died; very old: only the lightest stars live.
    assert float(lifetimes.dying_mass(0.0, 0.02)) == pytest.approx(100.0)
    assert float(lifetimes.dying_mass(1e7, 0.02)) == pytest.approx(0.1)
    grad = jax.grad(lifetimes.dying_mass, argnums=(0, 1))(1.0, 0.01)
    assert all(np.isfinite(float(g)) and g != 0 for g in grad)


@pytest.mark.parametrize("dtd", DTDS, ids=_ids)
def test_dtd_contract(dtd):
    edges = jnp.linspace(0.0, dtd.horizon, 200)
    fractions = jax.jit(dtd.bin_fractions)(edges[:-1], edges[1:])
    assert fractions.shape == (199,)
    np.testing.assert_allclose(float(jnp.sum(fractions)), 1.0, rtol=1e-12)
    assert np.all(np.asarray(fractions) >= 0)
    # Nothing before the delay; the delay has a gradient once integrated over a step.
    assert float(dtd.rate(0.5 * dtd.delay)) == 0.0

    def first_bin(delay):
        return eqx.tree_at(lambda d: d.delay, dtd, delay).bin_fractions(0.0, 0.2)

    assert float(jax.grad(first_bin)(0.04)) < 0


def test_metallicity_weights():
    table = jnp.asarray([0.0, 0.001, 0.004, 0.02])
    kw = dict(log_z_floor=1e-10, extrapolate=True)
    np.testing.assert_allclose(metallicity_weights(0.0, table, **kw), [1, 0, 0, 0])
    np.testing.assert_allclose(metallicity_weights(0.05, table, **kw), [0, 0, 0, 1])
    np.testing.assert_allclose(metallicity_weights(0.004, table, **kw), [0, 0, 1, 0], atol=1e-15)
    w = metallicity_weights(0.002, table, **kw)
    expected = np.log(0.004 / 0.002) / np.log(0.004 / 0.001)
    np.testing.assert_allclose(w, [0, expected, 1 - expected, 0], rtol=1e-14)
    # CHEMPY extrapolates below the 1e-10 floor; the smooth preset clips.
    w = metallicity_weights(1e-11, table, **kw)
    assert w[0] > 1 and w[1] < 0
    w = metallicity_weights(1e-11, table, log_z_floor=1e-10, extrapolate=False)
    np.testing.assert_allclose(w, [1, 0, 0, 0])


PART_VARIANTS = [
    dict(imf=SalpeterIMF()),
    dict(imf=KroupaIMF()),
    dict(lifetimes=ArgastLifetimes()),
    dict(dtd=ExponentialDTD()),
]


@pytest.mark.parametrize("parts", PART_VARIANTS, ids=lambda p: "-".join(map(_ids, p.values())))
def test_evolve_with_every_part(yields, parts):
    """Each part plugs into `evolve`: jit + vmap + grad, finite outputs and shapes."""

    def final(p7):
        params = ChemistryParams.from_array(p7[:6], p7[6])
        hist = evolve(params, yields=yields, options=OPTIONS, throw=False, **parts)
        return hist.x_h()[-1]

    p = jnp.asarray([[-2.3, -2.89, -0.3, 0.55, 0.5, 8.0, -1.4],
                     [-2.1, -3.0, 0.0, 0.5, 0.4, 4.0, -1.2]])  # fmt: skip
    value, grad = jax.jit(jax.vmap(jax.value_and_grad(lambda q: jnp.sum(final(q)[2:]))))(p)
    assert value.shape == (2,) and grad.shape == (2, 7)
    assert np.isfinite(np.asarray(value)).all() and np.isfinite(np.asarray(grad)).all()


def test_yield_set_contract(yields):
    """Every yield set runs in both modes, jitted and vmapped, with sensible abundances."""
    for options in (GCEOptions.faithful(), OPTIONS):

        def final(theta, options=options):
            hist = evolve(ChemistryParams.from_array(theta), yields=yields, options=options,
                          throw=False)  # fmt: skip
            return hist.fe_h()[-1], hist.x_fe()[-1]

        theta = jnp.asarray([[-2.3, -2.89, -0.3, 0.55, 0.5, 12.0],
                             [-2.3, -2.89, -0.3, 0.55, 0.5, 2.0]])  # fmt: skip
        fe_h, x_fe = jax.jit(jax.vmap(final))(theta)
        assert x_fe.shape == (2, len(yields.elements))
        # Late-born stars are more metal rich than early-born ones; both near solar-ish.
        assert float(fe_h[0]) > float(fe_h[1])
        assert -1.5 < float(fe_h[0]) < 1.0


def test_abundances_at_birth_times():
    """[X/H] at any time of the run: equal to the node values at nodes, differentiable between."""
    yields = load_yields("default")
    params = jax.tree_util.tree_map(jnp.asarray, ChemistryParams(birth_time=10.0))

    @jax.jit
    def at(t):
        hist = evolve(params, yields=yields, options=OPTIONS, throw=False)
        return hist.abundances_at(t), hist.x_h(), hist.time

    nodes_xh, xh, time = at(jnp.asarray([10.0 * 5 / 27, 10.0]))
    np.testing.assert_allclose(np.asarray(nodes_xh[0]), np.asarray(xh[5]), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(nodes_xh[1]), np.asarray(xh[-1]), rtol=1e-12)
    fe = yields.elements.index("Fe")
    d_fe_dt = jax.grad(lambda t: at(t)[0][fe])(6.3)
    assert float(d_fe_dt) > 0  # the ISM keeps getting richer in iron
