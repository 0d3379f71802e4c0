"""LagrangianNeuralODE: gradient routing (spec §9.6), λ = 0 parity with the plain model,
checkpoint/resume exactness and errors (issue 5, point 5), inference without g, and a smoke
training run (spec §9.9)."""

import json
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from diffgal.lagrangian import helmholtz_loss
from diffgal.lagrangian._lnode import (
    LagrangianNeuralODE,
    clip_global_norm,
    metric_gradient,
    metric_points,
    routed_gradients,
    trainable_filter,
)
from diffgal.lagrangian._node import NeuralSecondOrderODE, fit_normaliser
from diffgal.lagrangian._train import HISTORY_COLUMNS, train_lnode

OMEGA = 2 * math.pi


def _oscillator_data(n_traj=16, n_time=12, t1=1.0, seed=0):
    """Undamped oscillator, q0 = 1 + N(0, 0.1²), v0 = |q0|/10 (spec §6, slower ω)."""
    rng = np.random.default_rng(seed)
    ts = np.linspace(0.0, t1, n_time)
    q0 = 1.0 + 0.1 * rng.normal(size=(n_traj, 2))
    v0 = np.abs(q0) / 10
    c, s = np.cos(OMEGA * ts)[None, :, None], np.sin(OMEGA * ts)[None, :, None]
    return ts, q0[:, None] * c + (v0 / OMEGA)[:, None] * s


TS, QS = _oscillator_data()
NZ = fit_normaliser(TS, QS)
# Shared settings, so every plain-model run below reuses one compiled training step.
TRAIN = dict(batch_size=8, curriculum_half=4.0, show_progress=False)


def _leaves_equal(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb, strict=True):
        if eqx.is_array(x):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        else:
            assert x == y


# ------------------------------------------------------------------------------------------------
# Gradient routing
# ------------------------------------------------------------------------------------------------


def test_gradient_routing_with_zero_reconstruction_loss():
    """Spec §9.6: with L_R ≡ 0 the F gradient has norm ≤ 0.05, the g gradient ≤ 5, and the v0
    net gets no metric gradient."""
    model = LagrangianNeuralODE(2, normaliser=NZ, key=jax.random.key(3))
    params, static = eqx.partition(model, trainable_filter(model))
    tn = NZ.t_to(TS)
    q_init = NZ.q_to(QS[:4, :1])
    # Data = the model's own predictions, so L_R = 0 and its gradient vanishes.
    own = jax.vmap(lambda q: model.node.solve_normalised(tn, q))(q_init)
    points = metric_points(tn, own.qs, own.vs, jnp.ones(4, bool), jnp.asarray(len(TS)))

    def raw_metric(p, t, q, v):
        m = eqx.combine(p, static)
        return helmholtz_loss(m.node.force, m.metric_net, t, q, v).H

    @eqx.filter_jit
    def run(params, tn, own_qs, points):
        grads, stats = routed_gradients(params, static, tn, own_qs, jnp.asarray(len(TS)), lam=1.0)
        # The raw (unclipped) metric gradient at the same points, to show the clips are active,
        # and the clipped metric gradient alone.
        g_h, _ = metric_gradient(params, static, points, lam=1.0)
        return grads, stats, jax.grad(raw_metric)(params, *points[:3]), g_h

    grads, stats, raw, g_h = run(params, tn, own.qs, points)
    assert float(stats.reconstruction) <= 1e-20
    assert np.isfinite(float(stats.metric)) and float(stats.metric) > 0
    f_norm = float(optax.tree.norm(grads.node.force))
    g_norm = float(optax.tree.norm(grads.metric_net))
    assert f_norm <= 0.05 * (1 + 1e-9)
    assert g_norm <= 5.0 * (1 + 1e-9)
    assert float(optax.tree.norm(raw.node.force)) > 0.05  # the F clip was active
    assert float(optax.tree.norm(grads.node.v0_net)) <= 1e-12

    # The metric gradient alone: exactly zero on the v0 net and on the frozen normaliser.
    for leaf in jax.tree_util.tree_leaves(g_h.node.v0_net):
        assert not np.any(np.asarray(leaf))
    assert g_h.node.normaliser.q_mean is None  # not a trainable leaf
    assert float(optax.tree.norm(g_h.node.force)) <= 0.05 * (1 + 1e-9)


def test_clip_global_norm():
    tree = {"a": jnp.array([3.0, 0.0]), "b": jnp.array([[4.0]])}  # global norm 5
    clipped = clip_global_norm(tree, 1.0)
    assert float(optax.tree.norm(clipped)) == pytest.approx(1.0, rel=1e-12)
    np.testing.assert_allclose(clipped["a"], [0.6, 0.0], rtol=1e-12)
    np.testing.assert_array_equal(clip_global_norm(tree, 10.0)["b"], tree["b"])  # untouched
    zeros = {"a": jnp.zeros(2)}
    np.testing.assert_array_equal(clip_global_norm(zeros, 1.0)["a"], zeros["a"])


def test_lambda_zero_reproduces_plain_update_exactly():
    key = jax.random.key(7)
    lnode = LagrangianNeuralODE(2, normaliser=NZ, key=key)
    plain = NeuralSecondOrderODE(2, normaliser=NZ, key=jax.random.split(key)[0])
    _leaves_equal(lnode.node, plain)  # same initialisation
    a = train_lnode(jax.random.key(1), lnode, TS, QS, steps=3, lam=0.0, **TRAIN)
    b = train_lnode(jax.random.key(1), plain, TS, QS, steps=3, **TRAIN)
    _leaves_equal(a.model.node, b.model)
    _leaves_equal(a.model.metric_net, lnode.metric_net)  # g never moves at λ = 0
    for name in ("loss", "reconstruction", "lr_scale", "window"):
        np.testing.assert_array_equal(a.history[name], b.history[name])
    assert np.all(np.isnan(a.history["metric"]))  # not evaluated at λ = 0
    assert not np.array_equal(
        np.asarray(b.model.force.mlp.layers[0].weight), np.asarray(plain.force.mlp.layers[0].weight)
    )


def test_plateau_scheduler_waits_for_the_full_curriculum_window():
    """With a vanishing learning rate nothing improves, so the plateau counter runs every step it
    is allowed to: from the first step with `plateau_during_curriculum=True` (the reference),
    only once the window covers the whole series by default."""
    model = NeuralSecondOrderODE(2, normaliser=NZ, key=jax.random.key(3))
    opts = dict(TRAIN, steps=24, learning_rate=1e-12, plateau_patience=3, plateau_rtol=0.5)
    waited = train_lnode(jax.random.key(1), model, TS, QS, **opts).history
    eager = train_lnode(
        jax.random.key(1), model, TS, QS, plateau_during_curriculum=True, **opts
    ).history
    n_time = TS.shape[0]
    growing = waited["window"] < n_time
    first_full = int(np.argmax(~growing))
    assert 4 < first_full < 20  # the window grows for a while, then covers the series
    # Default: scale 1 while the window grows; the first halving comes patience + 1 steps after
    # the window is full (one step to set the best value, three without a 50 % improvement).
    assert np.all(waited["lr_scale"][growing] == 1.0)
    assert np.all(waited["lr_scale"][first_full : first_full + 3] == 1.0)
    assert waited["lr_scale"][first_full + 3] == 0.5
    # Reference behaviour: the first halving comes during the curriculum.
    assert eager["lr_scale"][3] == 0.5 and eager["window"][3] < n_time


# ------------------------------------------------------------------------------------------------
# Checkpoints
# ------------------------------------------------------------------------------------------------


def test_resume_is_exact(tmp_path):
    """2K straight steps == K steps, save, reload, K more (loss curve and parameters, bitwise)."""
    model = NeuralSecondOrderODE(2, normaliser=NZ, key=jax.random.key(2))
    key = jax.random.key(5)
    straight = train_lnode(
        key, model, TS, QS, steps=6, checkpoint=tmp_path / "a.ckpt", checkpoint_every=3, **TRAIN
    )
    first = train_lnode(
        key, model, TS, QS, steps=3, checkpoint=tmp_path / "b.ckpt", checkpoint_every=3, **TRAIN
    )
    resumed = train_lnode(
        jax.random.key(999),  # ignored: the stored key continues
        model,
        TS,
        QS,
        steps=6,
        resume=tmp_path / "b.ckpt",
        checkpoint=tmp_path / "c.ckpt",
        checkpoint_every=3,
        **TRAIN,
    )
    assert resumed.step == straight.step == 6
    for name in HISTORY_COLUMNS:
        np.testing.assert_array_equal(resumed.history[name], straight.history[name])
    np.testing.assert_array_equal(resumed.history["loss"][:3], first.history["loss"])
    _leaves_equal(resumed.model, straight.model)
    _leaves_equal(resumed.opt_state, straight.opt_state)
    # The final checkpoints agree too, and resuming a finished run is a no-op.
    done = train_lnode(key, model, TS, QS, steps=6, resume=tmp_path / "a.ckpt", **TRAIN)
    _leaves_equal(done.model, straight.model)
    np.testing.assert_array_equal(done.history["loss"], straight.history["loss"])


def test_interrupt_saves_and_resume_matches_uninterrupted(tmp_path, monkeypatch):
    """Ctrl-C at step 4 of 6 (cosine learning-rate decay on): the checkpoint holds step 4 and
    resuming it reproduces the uninterrupted run exactly."""
    import diffgal.lagrangian._train as train_module

    model = NeuralSecondOrderODE(2, normaliser=NZ, key=jax.random.key(2))
    key = jax.random.key(5)
    opts = dict(TRAIN, learning_rate=0.05, learning_rate_end=1e-3)
    straight = train_lnode(key, model, TS, QS, steps=6, **opts)

    real_step = train_module._train_step
    calls = {"n": 0}

    def interrupting(*args):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real_step(*args)

    monkeypatch.setattr(train_module, "_train_step", interrupting)
    path = tmp_path / "run.ckpt"
    with pytest.warns(RuntimeWarning, match="interrupted after step 4"):
        with pytest.raises(KeyboardInterrupt):
            train_lnode(key, model, TS, QS, steps=6, checkpoint=path, checkpoint_every=100, **opts)
    monkeypatch.setattr(train_module, "_train_step", real_step)
    resumed = train_lnode(key, model, TS, QS, steps=6, resume=path, **opts)
    np.testing.assert_array_equal(resumed.history["loss"], straight.history["loss"])
    _leaves_equal(resumed.model, straight.model)
    with pytest.raises(ValueError, match=r"other training options.*decay_steps"):
        train_lnode(key, model, TS, QS, steps=8, resume=path, **opts)


def test_checkpoint_errors(tmp_path):
    model = NeuralSecondOrderODE(2, normaliser=NZ, key=jax.random.key(2))
    key = jax.random.key(5)
    path = tmp_path / "run.ckpt"
    train_lnode(key, model, TS, QS, steps=3, checkpoint=path, checkpoint_every=3, **TRAIN)
    resume = lambda p, **kw: train_lnode(key, model, TS, QS, steps=4, resume=p, **{**TRAIN, **kw})

    with pytest.raises(FileNotFoundError, match="does not exist"):
        resume(tmp_path / "missing.ckpt")
    raw = path.read_bytes()
    header_end = raw.index(b"\n") + 1

    corrupt = tmp_path / "corrupt.ckpt"
    flipped = bytearray(raw)
    flipped[header_end + 50] ^= 0xFF
    corrupt.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="corrupted or truncated"):
        resume(corrupt)

    corrupt.write_bytes(raw[:-10])
    with pytest.raises(ValueError, match="corrupted or truncated"):
        resume(corrupt)

    corrupt.write_bytes(b"not json\n" + raw[header_end:])
    with pytest.raises(ValueError, match="not a diffgal checkpoint"):
        resume(corrupt)

    with pytest.raises(ValueError, match=r"other training options.*learning_rate"):
        resume(path, learning_rate=0.01)
    with pytest.raises(ValueError, match="trained on other data"):
        train_lnode(key, model, TS, QS * 1.01, steps=4, resume=path, **TRAIN)
    wider = NeuralSecondOrderODE(2, normaliser=NZ, width=17, key=jax.random.key(2))
    with pytest.raises(ValueError, match=r"other model hyperparameters.*width"):
        train_lnode(key, wider, TS, QS, steps=4, resume=path, **TRAIN)
    lnode = LagrangianNeuralODE(2, normaliser=NZ, key=jax.random.key(2))
    with pytest.raises(ValueError, match=r"other model hyperparameters.*class"):
        train_lnode(key, lnode, TS, QS, steps=4, resume=path, lam=0.0, **TRAIN)

    # A checkpoint from before `plateau_during_curriculum` existed counted plateaus from step 0:
    # it resumes with that setting, and the error names the option otherwise.
    header = json.loads(raw[:header_end])
    del header["train"]["plateau_during_curriculum"]
    old = tmp_path / "old.ckpt"
    old.write_bytes(json.dumps(header).encode() + b"\n" + raw[header_end:])
    with pytest.raises(ValueError, match="plateau_during_curriculum: checkpoint True, given False"):
        resume(old)
    assert resume(old, plateau_during_curriculum=True).step == 4


# ------------------------------------------------------------------------------------------------
# Inference and training smoke
# ------------------------------------------------------------------------------------------------


class _Forbidden(eqx.Module):
    def __call__(self, *args):
        raise AssertionError("the g network was called during inference")


def test_inference_does_not_call_g():
    model = LagrangianNeuralODE(2, normaliser=NZ, key=jax.random.key(0))
    no_g = eqx.tree_at(lambda m: m.metric_net, model, _Forbidden())
    np.testing.assert_array_equal(no_g.predict(TS, QS[0, 0]), model.node.predict(TS, QS[0, 0]))
    np.testing.assert_array_equal(no_g(TS, QS[0, 0]), model.predict(TS, QS[0, 0]))
    np.testing.assert_allclose(
        no_g.acceleration(0.1, QS[0, 0], QS[0, 1]), model.node.acceleration(0.1, QS[0, 0], QS[0, 1])
    )


def test_lnode_smoke_training():
    """Spec §9.9: L_R falls by >= 10x on a tiny undamped-oscillator set, L_H stays finite, and
    the trained model predicts without its g network."""
    ts, qs = _oscillator_data(n_traj=32, n_time=25, seed=1)
    model = LagrangianNeuralODE(2, normaliser=fit_normaliser(ts, qs), key=jax.random.key(0))

    def full_mse(m):
        pred = eqx.filter_jit(jax.vmap(lambda q: m.predict(ts, q)))(qs[:, 0])
        return float(jnp.mean((pred - qs) ** 2))

    before = full_mse(model)
    out = train_lnode(
        jax.random.key(1),
        model,
        ts,
        qs,
        steps=300,
        batch_size=16,
        curriculum_half=50.0,
        n_points=8,
        show_progress=False,
    )
    after = full_mse(eqx.tree_at(lambda m: m.metric_net, out.model, _Forbidden()))
    assert after <= before / 10, (before, after)
    assert np.all(np.isfinite(out.history["metric"]))
    assert np.all(out.history["n_failed"] == 0)
