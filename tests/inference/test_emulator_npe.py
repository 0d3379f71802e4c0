"""Emulator and NPE: accuracy against analytic targets, exact resume, file round trips."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffgal.inference._training as training
from diffgal.inference import (
    GLOBAL_NAMES,
    ChemistryPrior,
    check_sbc,
    fit_emulator,
    load_emulator,
    load_posterior,
    save_emulator,
    save_posterior,
    sbc_ranks,
    train_npe,
)


def _smooth_target(theta):
    """A smooth 6 -> 9 map with the scale of abundance ratios (dex)."""
    a = np.linspace(-0.5, 0.5, 54).reshape(6, 9)
    return np.tanh(theta @ a * 0.3) + 0.05 * theta[:, :1] ** 2


def test_emulator_learns_a_smooth_map_and_round_trips(tmp_path):
    prior = ChemistryPrior()
    theta = np.asarray(prior.sample(jax.random.key(0), (6000,)))
    x = _smooth_target(theta)
    fit = fit_emulator(
        jax.random.key(1), theta, x, width_sizes=(32, 32), max_epochs=40, batch_size=128,
        show_progress=False,
    )
    test = np.asarray(prior.sample(jax.random.key(2), (1000,)))
    err = np.abs(np.asarray(fit.emulator(test)) - _smooth_target(test))
    assert np.median(err) < 0.01, np.median(err)
    assert fit.history["val"][fit.history["best_epoch"]] == min(fit.history["val"])
    # Batch shapes, and a saved file gives identical outputs.
    assert fit.emulator(test[:6].reshape(2, 3, 6)).shape == (2, 3, 9)
    path = save_emulator(tmp_path / "emu.eqx", fit.emulator)
    np.testing.assert_array_equal(load_emulator(path)(test), fit.emulator(test))
    # Corrupted, truncated and foreign files are clear errors.
    raw = path.read_bytes()
    path.write_bytes(raw[:-10])
    with pytest.raises(ValueError, match="corrupted or truncated"):
        load_emulator(path)
    path.write_bytes(b"not json\n" + raw)
    with pytest.raises(ValueError, match="header is corrupted"):
        load_emulator(path)
    with pytest.raises(ValueError, match="`theta` must have a last axis of size 6"):
        fit.emulator(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="rows of `theta`/`x` are not finite"):
        fit_emulator(jax.random.key(0), theta, np.where(x > 0.5, np.nan, x), show_progress=False)


def test_interrupted_training_resumes_to_the_same_parameters(tmp_path, monkeypatch):
    prior = ChemistryPrior()
    theta = np.asarray(prior.sample(jax.random.key(0), (1200,)))
    x = _smooth_target(theta)
    kwargs = dict(width_sizes=(16,), max_epochs=6, batch_size=100, show_progress=False)
    ref = fit_emulator(jax.random.key(1), theta, x, **kwargs)

    ckpt = tmp_path / "emu.ckpt"
    real_write = training.write_model
    calls = {"n": 0}

    def interrupt_after_three(*args, **kw):
        real_write(*args, **kw)
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(training, "write_model", interrupt_after_three)
    with pytest.raises(KeyboardInterrupt):
        fit_emulator(jax.random.key(1), theta, x, checkpoint=ckpt, **kwargs)
    monkeypatch.setattr(training, "write_model", real_write)
    resumed = fit_emulator(jax.random.key(1), theta, x, checkpoint=ckpt, resume=True, **kwargs)
    for a, b in zip(jax.tree.leaves(ref.emulator), jax.tree.leaves(resumed.emulator), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ref.history["val"], resumed.history["val"])
    # A checkpoint of another run is refused rather than silently restarted.
    with pytest.raises(ValueError, match="other settings or data .*batch_size"):
        fit_emulator(jax.random.key(1), theta, x, checkpoint=ckpt, resume=True,
                     **{**kwargs, "batch_size": 50})


def test_npe_recovers_a_linear_gaussian_posterior(tmp_path):
    """x = B Lambda + N(0, s^2): the exact posterior of the globals is Gaussian."""
    prior = ChemistryPrior()
    s = 0.2
    b = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, -1.0],
                  [0.5, 0.2], [0.0, 0.7], [0.3, 0.0], [0.2, 0.4]])
    theta = np.asarray(prior.sample(jax.random.key(0), (12_000,)))
    x = theta[:, :2] @ b.T
    fit = train_npe(
        jax.random.key(1), theta, x, params=GLOBAL_NAMES, noise=s, flow_layers=3,
        nn_width=32, max_epochs=25, batch_size=256, show_progress=False,
    )
    post = fit.posterior
    # Exact conjugate posterior for 200 held-out stars.
    mu_p, var_p = np.asarray(prior.loc[:2]), np.asarray(prior.scale[:2]) ** 2
    prec = np.diag(1 / var_p) + b.T @ b / s**2
    cov = np.linalg.inv(prec)
    lam = np.asarray(prior.sample(jax.random.key(2), (200,)))[:, :2]
    x_obs = lam @ b.T + s * np.asarray(jax.random.normal(jax.random.key(3), (200, 8)))
    mean = (cov @ (mu_p / var_p + x_obs @ b / s**2).T).T
    draws = np.asarray(post.sample(jax.random.key(4), (400,), x_obs))  # (400, 200, 2)
    sd = np.sqrt(np.diag(cov))
    assert np.median(np.abs(draws.mean(0) - mean) / sd) < 0.15
    np.testing.assert_allclose(np.median(draws.std(0), 0), sd, rtol=0.15)
    # Calibrated: SBC ranks of the true Lambda are uniform.
    ranks = sbc_ranks(np.swapaxes(draws, 0, 1), lam)
    assert check_sbc(ranks, 400).passed(0.01)
    # log_prob is the density of the samples: compare with the exact Gaussian at the draws.
    lp = np.asarray(post.log_prob(draws[:, :5], x_obs[:5]))
    d = draws[:, :5] - mean[:5]
    exact = -0.5 * np.einsum("...i,ij,...j", d, prec, d) - 0.5 * np.log(
        np.linalg.det(2 * np.pi * cov)
    )
    assert np.median(np.abs(lp - exact)) < 0.15
    # Round trip.
    path = save_posterior(tmp_path / "npe.eqx", post)
    np.testing.assert_allclose(load_posterior(path).log_prob(draws[:, :5], x_obs[:5]), lp)
    with pytest.raises(ValueError, match="last axis of 8 observed columns"):
        post.sample(jax.random.key(0), (3,), x_obs[:, :7])
    with pytest.raises(ValueError, match="not a 'diffgal.inference.posterior/1' file"):
        load_posterior(save_emulator(tmp_path / "e.eqx", _tiny_emulator()))


def test_npe_with_an_embedding_network(tmp_path):
    """A jointly trained summary network: same linear-Gaussian posterior, saved and loaded."""
    prior = ChemistryPrior()
    s = 0.2
    b = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, -1.0],
                  [0.5, 0.2], [0.0, 0.7], [0.3, 0.0], [0.2, 0.4]])
    theta = np.asarray(prior.sample(jax.random.key(0), (8_000,)))
    fit = train_npe(
        jax.random.key(1), theta, theta[:, :2] @ b.T, params=GLOBAL_NAMES, noise=s,
        flow_layers=2, nn_width=32, embedding=(4, 32, 1), max_epochs=20, batch_size=256,
        show_progress=False,
    )
    post = fit.posterior
    assert post.embedding is not None and dict(post.config)["embedding"] == (4, 32, 1)
    mu_p, var_p = np.asarray(prior.loc[:2]), np.asarray(prior.scale[:2]) ** 2
    cov = np.linalg.inv(np.diag(1 / var_p) + b.T @ b / s**2)
    lam = np.asarray(prior.sample(jax.random.key(2), (100,)))[:, :2]
    x_obs = lam @ b.T + s * np.asarray(jax.random.normal(jax.random.key(3), (100, 8)))
    mean = (cov @ (mu_p / var_p + x_obs @ b / s**2).T).T
    draws = np.asarray(post.sample(jax.random.key(4), (300,), x_obs))
    sd = np.sqrt(np.diag(cov))
    assert np.median(np.abs(draws.mean(0) - mean) / sd) < 0.25
    np.testing.assert_allclose(np.median(draws.std(0), 0), sd, rtol=0.25)
    lp = np.asarray(post.log_prob(draws[:, :3], x_obs[:3]))
    loaded = load_posterior(save_posterior(tmp_path / "emb.eqx", post))
    np.testing.assert_allclose(loaded.log_prob(draws[:, :3], x_obs[:3]), lp)
    with pytest.raises(ValueError, match="`embedding` must be None or"):
        train_npe(jax.random.key(0), theta[:10], theta[:10, :2] @ b.T, embedding=(4, 32))


def _tiny_emulator():
    from diffgal.inference import Emulator

    return Emulator(width_sizes=(2,), key=jax.random.key(0))


def test_npe_with_birth_time_never_leaves_the_support():
    prior = ChemistryPrior()
    theta = np.asarray(prior.sample(jax.random.key(0), (3000,)))
    x = np.c_[theta[:, :5], theta[:, 5:] / 10, theta[:, :2]]
    fit = train_npe(
        jax.random.key(1), theta, x, noise=0.05, flow_layers=2, nn_width=16, max_epochs=3,
        show_progress=False,
    )
    draws = np.asarray(fit.posterior.sample(jax.random.key(2), (500,), x[:20]))
    assert draws.shape == (500, 20, 6)
    assert draws[..., 5].min() > 2.0 and draws[..., 5].max() < 12.8
    outside = jnp.asarray(theta[:2]).at[:, 5].set(13.5)
    assert np.all(np.asarray(fit.posterior.log_prob(outside, x[:2])) == -np.inf)
    with pytest.raises(ValueError, match="outside the prior support"):
        train_npe(jax.random.key(0), np.where(theta > 12, 13.0, theta), x, show_progress=False)
    with pytest.raises(ValueError, match="`x` must have shape"):
        train_npe(jax.random.key(0), theta, x[:, :7], show_progress=False)


def test_float32_main_path():
    """The headline runs in float32: emulator, NPE, per-star draws and the Gaussian product."""
    from diffgal.inference import gaussian_fit, gaussian_product

    with jax.enable_x64(False):
        prior = ChemistryPrior()
        theta = np.asarray(prior.sample(jax.random.key(0), (3000,)))
        x = _smooth_target(theta).astype(np.float32)
        emu = fit_emulator(jax.random.key(1), theta, x, width_sizes=(32, 32), max_epochs=15,
                           batch_size=128, show_progress=False).emulator
        pred = emu(theta[:500])
        assert pred.dtype == jnp.float32
        assert np.median(np.abs(np.asarray(pred) - x[:500])) < 0.02
        # Informative observables (x = B Lambda + noise) so 20 stars combine to a proper posterior.
        b = np.linspace(-1.0, 1.0, 16).reshape(8, 2) + np.eye(8, 2)
        x_lin = (theta[:, :2] @ b.T).astype(np.float32)
        post = train_npe(jax.random.key(2), theta, x_lin, params=GLOBAL_NAMES, noise=0.2,
                         flow_layers=2, nn_width=16, max_epochs=30, show_progress=False).posterior
        lam = np.array([-2.3, -2.89])
        noise = 0.2 * np.asarray(jax.random.normal(jax.random.key(4), (20, 8)))
        stars = (lam @ b.T + noise).astype(np.float32)  # 20 stars sharing one Lambda
        draws = post.sample_per_star(jax.random.key(3), 200, stars)
        assert draws.dtype == jnp.float32 and np.isfinite(np.asarray(draws)).all()
        means, covs = gaussian_fit(draws)
        g = gaussian_product(means, covs, prior.loc[:2].astype(jnp.float32),
                             jnp.diag(prior.scale[:2] ** 2).astype(jnp.float32))
        assert g.mean.dtype == jnp.float32 and np.isfinite(np.asarray(g.cov)).all()
        # Each star's draws against its exact conjugate posterior (a short float32 training).
        var_p = np.asarray(prior.scale[:2], float) ** 2
        cov1 = np.linalg.inv(np.diag(1 / var_p) + b.T @ b / 0.2**2)
        mean1 = (cov1 @ (np.asarray(prior.loc[:2], float) / var_p + stars @ b / 0.2**2).T).T
        sd1 = np.sqrt(np.diag(cov1))
        d = np.asarray(draws, float)
        assert np.median(np.abs(d.mean(1) - mean1) / sd1) < 0.5
        np.testing.assert_allclose(np.median(d.std(1), 0), sd1, rtol=0.3)
    assert jax.config.read("jax_enable_x64")
