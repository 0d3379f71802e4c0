"""Second-order neural ODEs, Lagrangian neural ODEs and LNNs: cost and the issue-5 experiments.

Part 1, cost (issue 5, point 4; spec §7), at n = 2, 3, 6, float32:

- right-hand side: one `jit(vmap(...))` over 4096 points of the direct force MLP F(t, q, v)
  (2 x 128 softplus, the plain neural ODE), of the LNODE's force (the same network: the LNODE
  integrates F alone at inference) and of `LNNBaseline` (a scalar 2 x 128 softplus L plus the
  velocity-Hessian solve);
- full solve: 256 trajectories, 100 fixed Tsit5 steps, through `solve_second_order` with each
  of the three force laws; and `predict` (adaptive Tsit5, 50 save times) of a
  `NeuralSecondOrderODE` against the `LagrangianNeuralODE` that contains it (target:
  LNODE/NODE <= 1.1).

Part 2, experiments (issue 5, points 2b and 3), float64 (the reference trains in float32; x64
here keeps the adaptive solves and the metric fits free of round-off trouble):

- (2b) a plain second-order NODE (λ = 0) is trained on noisy positions of Kepler (polar) and of
  the damped oscillator and on Douglas case IV; each learned F is scored with the learned-g
  metric (`helmholtz_metric`) at points of its own predicted trajectories (from the first
  positions of training trajectories), in physical coordinates like the true-F metric of
  point 2. The metric is not invariant under rescaling t and q (pitfall 5): in each model's
  normalised coordinates, case IV on t in [0, 1] shrinks by ~s_t^4. Separation factor =
  H(case IV) / max(H(Kepler), H(damped)), target >= 30;
- (3) on Kepler and the damped oscillator, an LNODE (λ = 1) is trained with the same data, seed,
  initialisation and budget as the plain model of (2b). Held-out trajectory MSE (against the
  clean positions of unseen trajectories, normalised units) must be no worse than the plain
  model's within 10 %, and the learned F's metric must be lower.

Also recorded: the relative RMS error of each learned F against the true force on its scoring
points, and the metric of the true force on the plain model's points (what an exact fit scores).

Sizes deviate from the spec's (6000 trajectories, 600 epochs of batch 128) to fit ~15 min on a
2-core CPU; the JSON records every size. Deviations from the spec's model, each needed to make
the small-budget fits meaningful and applied to the plain and the Lagrangian model alike:

- the spec's initial velocities are not functions of the initial position for these systems, so
  the v0 network reads the first `n_v0_points` positions (8 for Kepler, 4 otherwise);
- `infer_q0=True`: integration starts from a learned correction of the first (noisy)
  observation. Started from a 5 %-noisy r0, even the true Kepler force with the true v0 misses
  the clean trajectories by a normalised MSE of ~1 over [0, 4], which pushes F away from truth;
- the curriculum's s½ is steps/6 instead of 1200.

    python benchmarks/lagrangian.py            # ~15 min on 2 cores
    python benchmarks/lagrangian.py --quick    # a few minutes, tiny sizes (smoke only)

Results go to `benchmarks/results/lagrangian.json` (`--out`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import subprocess
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
REPO_ROOT = HERE.parent

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)  # a script, not library code; part 1 casts to float32

import diffrax  # noqa: E402
import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from diffgal.lagrangian import (  # noqa: E402
    DampedOscillator,
    DouglasCaseIV,
    KeplerPolar,
    helmholtz_metric,
    simulate,
    solve_second_order,
)
from diffgal.lagrangian._lnn import LNNBaseline  # noqa: E402
from diffgal.lagrangian._lnode import LagrangianNeuralODE  # noqa: E402
from diffgal.lagrangian._node import (  # noqa: E402
    NeuralSecondOrderODE,
    fit_normaliser,
)
from diffgal.lagrangian._train import train_lnode  # noqa: E402

#: Spec §7's reference micro-benchmark (2-core CPU, 4096 points, 2 x 128 softplus).
SPEC_LNN_RATIO = {2: 9.0, 3: 26.0, 6: 28.0}


# ------------------------------------------------------------------------------------------------
# Timing helpers
# ------------------------------------------------------------------------------------------------


def _timed(fn, args, min_repeats=5, min_total_s=1.0, max_repeats=200):
    times = []
    while len(times) < min_repeats or (sum(times) < min_total_s and len(times) < max_repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), len(times)


def _compile_and_time(fn, *args):
    """`(compile_s, steady_s, repeats)` of `jax.jit(fn)` at `args`."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(*args))
    steady, repeats = _timed(compiled, args)
    return compile_s, steady, repeats


def _f32(tree):
    return jax.tree_util.tree_map(
        lambda x: x.astype(jnp.float32) if eqx.is_inexact_array(x) else x, tree
    )


# ------------------------------------------------------------------------------------------------
# Part 1: cost
# ------------------------------------------------------------------------------------------------


def _fixed_step_solver(force, ts, n_steps):
    def one(q0, v0):
        return solve_second_order(
            force, ts, q0, v0, dt0=1.0 / n_steps, stepsize_controller=diffrax.ConstantStepSize()
        ).qs

    return jax.vmap(one)


def _predictor(model, ts):
    return jax.vmap(lambda q0: model.predict(ts, q0))


def _cost_one(n, n_points, n_traj, n_fixed_steps):
    kl, kn, kd = jax.random.split(jax.random.key(n), 3)
    lnn = _f32(LNNBaseline(n, width=128, depth=2, key=kl))
    lnode = _f32(LagrangianNeuralODE(n, width=128, depth=2, use_time=False, key=kn))
    node = lnode.node  # the plain model: the same F and v0 networks
    k1, k2, k3 = jax.random.split(kd, 3)
    t = jax.random.uniform(k1, (n_points,), jnp.float32)
    q = jax.random.normal(k2, (n_points, n), jnp.float32)
    v = jax.random.normal(k3, (n_points, n), jnp.float32)
    row = {"n": n, "n_points": n_points, "n_traj": n_traj, "n_fixed_steps": n_fixed_steps}

    forces = {"node": node.force, "lnode": lnode.force, "lnn": lnn}
    for name, force in forces.items():
        c, s, _ = _compile_and_time(jax.vmap(force), t, q, v)
        row[f"rhs_{name}_compile_s"], row[f"rhs_{name}_s"] = c, s

    # Full solves with fixed steps: the same number of RHS evaluations for every force law.
    ts = jnp.linspace(0.0, 1.0, 11, dtype=jnp.float32)
    q0, v0 = 0.5 * q[:n_traj], 0.5 * v[:n_traj]
    for name, force in forces.items():
        c, s, _ = _compile_and_time(_fixed_step_solver(force, ts, n_fixed_steps), q0, v0)
        row[f"solve_{name}_compile_s"], row[f"solve_{name}_s"] = c, s

    # Inference as users call it: adaptive `predict` from positions only.
    ts50 = jnp.linspace(0.0, 1.0, 50, dtype=jnp.float32)
    predictors = {"node": _predictor(node, ts50), "lnode": _predictor(lnode, ts50)}
    for name, fn in predictors.items():
        c, s, _ = _compile_and_time(fn, q0)
        row[f"predict_{name}_compile_s"], row[f"predict_{name}_s"] = c, s
    # Three more interleaved rounds damp machine-load drift in the ratio (minimum of all).
    jitted = {name: jax.jit(fn) for name, fn in predictors.items()}
    for _ in range(3):
        for name, fn in jitted.items():
            s, _ = _timed(fn, (q0,))
            row[f"predict_{name}_s"] = min(row[f"predict_{name}_s"], s)

    for kind in ("rhs", "solve", "predict"):
        row[f"{kind}_lnode_over_node"] = row[f"{kind}_lnode_s"] / row[f"{kind}_node_s"]
        if kind != "predict":
            row[f"{kind}_lnn_over_node"] = row[f"{kind}_lnn_s"] / row[f"{kind}_node_s"]
    row["spec_rhs_lnn_over_direct"] = SPEC_LNN_RATIO.get(n)
    return row


def cost_benchmark(dims, n_points, n_traj, n_fixed_steps):
    rows = []
    for n in dims:
        row = _cost_one(n, n_points, n_traj, n_fixed_steps)
        rows.append(row)
        print(
            f"  n={n}: RHS LNN/NODE {row['rhs_lnn_over_node']:.1f}x, LNODE/NODE "
            f"{row['rhs_lnode_over_node']:.2f}; fixed-step solve LNN/NODE "
            f"{row['solve_lnn_over_node']:.1f}x; predict LNODE/NODE "
            f"{row['predict_lnode_over_node']:.2f}",
            flush=True,
        )
    return rows


# ------------------------------------------------------------------------------------------------
# Part 2: experiments
# ------------------------------------------------------------------------------------------------


def _systems(quick):
    """name -> (system, ts, n_v0_points, infer_q0)."""
    n_kepler = 30 if quick else 60
    n_damped = 30 if quick else 60
    n_case4 = 20 if quick else 40
    return {
        "kepler": (KeplerPolar(), np.linspace(0.0, 4.0, n_kepler), 8, True),
        "damped": (DampedOscillator(), np.linspace(0.0, 3.0, n_damped), 4, True),
        "case4": (DouglasCaseIV(), np.linspace(0.0, 1.0, n_case4), 4, True),
    }


def _node(model) -> NeuralSecondOrderODE:
    return model.node if isinstance(model, LagrangianNeuralODE) else model


def _points(model, ts, q_init, n_points, key):
    """(t̃, q̃, ṽ) on the model's own predicted trajectories, normalised, subsampled."""
    node = _node(model)
    nz = node.normaliser
    tn = nz.t_to(jnp.asarray(ts))
    sol = eqx.filter_jit(jax.vmap(lambda q: node.solve_normalised(tn, nz.q_to(q), throw=False)))(
        jnp.asarray(q_init)
    )
    ok = np.asarray(
        (sol.result == diffrax.RESULTS.successful)
        & jnp.all(jnp.isfinite(sol.qs), axis=(1, 2))
        & jnp.all(jnp.isfinite(sol.vs), axis=(1, 2))
    )
    t = np.broadcast_to(np.asarray(tn), sol.qs.shape[:2])[ok].reshape(-1)
    q = np.asarray(sol.qs)[ok].reshape(-1, node.n)
    v = np.asarray(sol.vs)[ok].reshape(-1, node.n)
    idx = np.asarray(jax.random.choice(key, t.shape[0], (min(n_points, t.shape[0]),), False))
    return t[idx], q[idx], v[idx], int(ok.sum())


def _heldout_mse(model, ts, qs_noisy, qs_clean, k):
    """Mean squared error, normalised units, of predictions from the first k noisy positions."""
    node = _node(model)
    nz = node.normaliser
    predict = eqx.filter_jit(jax.vmap(lambda q: node.trajectory(ts, q, throw=False).qs))
    pred = np.asarray(predict(jnp.asarray(qs_noisy[:, :k])))
    ok = np.all(np.isfinite(pred), axis=(1, 2))
    err_clean = (np.asarray(nz.q_to(pred[ok])) - np.asarray(nz.q_to(qs_clean[ok]))) ** 2
    err_noisy = (np.asarray(nz.q_to(pred[ok])) - np.asarray(nz.q_to(qs_noisy[ok]))) ** 2
    return float(err_clean.mean()), float(err_noisy.mean()), int((~ok).sum())


def experiments(cfg, show_progress, checkpoint=None):
    """Run the experiments; `checkpoint(results)` is called after each system (partial JSON)."""
    key = jax.random.key(cfg["seed"])
    results = {}
    systems = _systems(cfg["quick"])
    for name, (system, ts, k, infer_q0) in systems.items():
        if name not in cfg["systems"]:
            continue
        key, k_train, k_test, k_model, k_fit, k_pts, k_metric = jax.random.split(key, 7)
        train = simulate(k_train, system, cfg["n_train"], ts, noise=cfg["noise"])
        test = simulate(k_test, system, cfg["n_test"], ts, noise=cfg["noise"])
        qs = np.asarray(train.qs_noisy)
        nz = fit_normaliser(ts, qs)
        common = dict(normaliser=nz, n_v0_points=k, infer_q0=infer_q0, use_time=cfg["f_use_time"])
        lnode = LagrangianNeuralODE(2, **common, key=k_model)
        # The plain model starts from exactly the LNODE's F, v0 and q0 networks.
        plain = NeuralSecondOrderODE(2, **common, key=jax.random.split(k_model)[0])
        runs = {"plain": (plain, 0.0)}
        if name in ("kepler", "damped"):
            runs["lnode"] = (lnode, 1.0)
        entry = {
            "system": type(system).__name__,
            "n_time": len(ts),
            "t_range": [float(ts[0]), float(ts[-1])],
            "n_v0_points": k,
            "infer_q0": infer_q0,
            "n_train": cfg["n_train"],
            "n_test": cfg["n_test"],
            "noise": cfg["noise"],
        }
        for label, (model, lam) in runs.items():
            t0 = time.perf_counter()
            out = train_lnode(
                k_fit,
                model,
                ts,
                qs,
                steps=cfg["steps"],
                batch_size=cfg["batch_size"],
                lam=lam,
                curriculum_half=cfg["steps"] / 6,
                n_points=cfg["n_points_train"],
                show_progress=show_progress,
            )
            train_s = time.perf_counter() - t0
            h = out.history
            mse_clean, mse_noisy, failed = _heldout_mse(
                out.model, ts, np.asarray(test.qs_noisy), np.asarray(test.qs), k
            )
            t_p, q_p, v_p, n_ok = _points(
                out.model, ts, qs[: cfg["n_score_traj"], :k], cfg["n_score_points"], k_pts
            )
            t0 = time.perf_counter()
            # Physical coordinates (as the true-F metric of point 2): the learned F(t, q, v).
            nz_m = _node(out.model).normaliser
            score = helmholtz_metric(
                out.model.acceleration,
                nz_m.t_from(t_p),
                nz_m.q_from(q_p),
                nz_m.v_from(v_p),
                key=k_metric,
                steps=cfg["metric_steps"],
                show_progress=show_progress,
            )
            t_phys, q_phys, v_phys = nz_m.t_from(t_p), nz_m.q_from(q_p), nz_m.v_from(v_p)
            learned = jax.vmap(out.model.acceleration)(t_phys, q_phys, v_phys)
            true = jax.vmap(system.force)(t_phys, q_phys, v_phys)
            f_rel_err = float(jnp.sqrt(jnp.mean((learned - true) ** 2) / jnp.mean(true**2)))
            if label == "plain":
                # The true force on the same points: what an exact fit would score.
                score_true = helmholtz_metric(
                    system.force,
                    t_phys,
                    q_phys,
                    v_phys,
                    key=k_metric,
                    steps=cfg["metric_steps"],
                    show_progress=show_progress,
                )
                entry["true_force_metric_H"] = score_true.H
                entry["true_force_metric_parts"] = [score_true.H1, score_true.H2, score_true.H3]
            metric_s = time.perf_counter() - t0
            last = slice(-max(1, cfg["steps"] // 20), None)
            entry[label] = {
                "lam": lam,
                "train_s": train_s,
                "train_loss_final": float(np.mean(h["reconstruction"][last])),
                "train_metric_final": None if lam == 0 else float(np.mean(h["metric"][last])),
                "train_failed_solves": int(h["n_failed"].sum()),
                "train_skipped_steps": int(h["skipped"].sum()),
                "heldout_mse_clean": mse_clean,
                "heldout_mse_noisy": mse_noisy,
                "heldout_failed": failed,
                "metric_H": score.H,
                "metric_H1": score.H1,
                "metric_H2": score.H2,
                "metric_H3": score.H3,
                "metric_H_initial": score.H_initial,
                "metric_points": score.n_points,
                "metric_trajectories": n_ok,
                "metric_domain": score.domain,
                "force_relative_rms_error": f_rel_err,
                "metric_s": metric_s,
            }
            print(
                f"  {name:>6} {label:>5}: train {train_s:.0f} s, "
                f"L_R {entry[label]['train_loss_final']:.3g}, "
                f"held-out MSE {mse_clean:.4g} (clean) {mse_noisy:.4g} (noisy), "
                f"F rel. error {f_rel_err:.3g}, "
                f"H {score.H:.3g} (H1 {score.H1:.2g}, H2 {score.H2:.2g}, H3 {score.H3:.2g}; "
                f"{metric_s:.0f} s)",
                flush=True,
            )
        results[name] = entry
        if checkpoint is not None:
            checkpoint(results)

    if set(results) != {"kepler", "damped", "case4"}:
        return results, {}
    h_case4 = results["case4"]["plain"]["metric_H"]
    h_lag = max(results["kepler"]["plain"]["metric_H"], results["damped"]["plain"]["metric_H"])
    summary = {
        "separation_factor": h_case4 / h_lag,
        "separation_pass": h_case4 / h_lag >= 30,
    }
    for name in ("kepler", "damped"):
        p, lag = results[name]["plain"], results[name]["lnode"]
        summary[f"{name}_mse_ratio_lnode_over_plain"] = (
            lag["heldout_mse_clean"] / p["heldout_mse_clean"]
        )
        summary[f"{name}_mse_pass"] = lag["heldout_mse_clean"] <= 1.1 * p["heldout_mse_clean"]
        summary[f"{name}_metric_lnode"] = lag["metric_H"]
        summary[f"{name}_metric_plain"] = p["metric_H"]
        summary[f"{name}_metric_pass"] = lag["metric_H"] < p["metric_H"]
    return results, summary


# ------------------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def print_report(report):
    print()
    m = report["machine"]
    print(
        f"diffgal.lagrangian on {m['cpu_model']} ({m['cpu_count']} CPUs), JAX "
        f"{report['jax_version']}, load average {m['load_average_1min_start']:.1f} (start) / "
        f"{m['load_average_1min_end']:.1f} (end)"
    )
    if report.get("cost"):
        print(
            "\ncost, float32 (RHS: 4096 points; solve: 256 trajectories x 100 Tsit5 steps; "
            "predict: 256 x adaptive Tsit5, 50 save times)"
        )
        header = (
            f"{'n':>2} {'RHS NODE ms':>12} {'RHS LNN ms':>11} {'LNN/NODE':>9} {'(spec)':>7} "
            f"{'solve NODE ms':>14} {'solve LNN ms':>13} {'LNN/NODE':>9} "
            f"{'predict LNODE/NODE':>19}"
        )
        print(header)
        print("-" * len(header))
        for r in report["cost"]:
            print(
                f"{r['n']:>2} {r['rhs_node_s'] * 1e3:>12.3f} {r['rhs_lnn_s'] * 1e3:>11.3f} "
                f"{r['rhs_lnn_over_node']:>8.1f}x {r['spec_rhs_lnn_over_direct']:>6.0f}x "
                f"{r['solve_node_s'] * 1e3:>14.2f} {r['solve_lnn_s'] * 1e3:>13.2f} "
                f"{r['solve_lnn_over_node']:>8.1f}x {r['predict_lnode_over_node']:>18.2f}x"
            )
    if report.get("experiments"):
        cfg = report["experiment_config"]
        print(
            f"\nexperiments (float64; {cfg['n_train']} train / {cfg['n_test']} held-out "
            f"trajectories, {cfg['noise']:.0%} position noise, {cfg['steps']} steps of batch "
            f"{cfg['batch_size']}, metric: {cfg['metric_steps']} g steps on "
            f"{cfg['n_score_points']} points of the model's own trajectories, physical "
            "coordinates; L_R and MSE in normalised units; F err = relative RMS error of the "
            "learned force on those points; 'true' = the true force on the plain model's points)"
        )
        header = (
            f"{'system':>7} {'model':>6} {'train s':>8} {'L_R':>9} {'held-out MSE':>13} "
            f"{'F err':>7} {'H':>9} {'H1':>9} {'H2':>9} {'H3':>9}"
        )
        print(header)
        print("-" * len(header))
        for name, entry in report["experiments"].items():
            for label in ("plain", "lnode"):
                if label not in entry:
                    continue
                e = entry[label]
                print(
                    f"{name:>7} {label:>6} {e['train_s']:>8.0f} {e['train_loss_final']:>9.3g} "
                    f"{e['heldout_mse_clean']:>13.4g} {e['force_relative_rms_error']:>7.3f} "
                    f"{e['metric_H']:>9.3g} {e['metric_H1']:>9.3g} {e['metric_H2']:>9.3g} "
                    f"{e['metric_H3']:>9.3g}"
                )
            h1, h2, h3 = entry["true_force_metric_parts"]
            print(
                f"{name:>7} {'true':>6} {'':>8} {'':>9} {'':>13} {'':>7} "
                f"{entry['true_force_metric_H']:>9.3g} {h1:>9.3g} {h2:>9.3g} {h3:>9.3g}"
            )
        s = report["summary"]
        print("\ntargets (issue 5):")
        for label, ok, value in report["targets"]:
            print(f"  {'PASS' if ok else 'MISS'}  {label}: {value}")
        del s


def evaluate_targets(report):
    targets = []
    for r in report.get("cost", []):
        targets.append(
            (
                f"predict LNODE/NODE <= 1.1 at n = {r['n']}",
                r["predict_lnode_over_node"] <= 1.1,
                f"{r['predict_lnode_over_node']:.3f}",
            )
        )
    s = report.get("summary")
    if s:
        targets.append(
            (
                "(2b) separation case IV / max(Kepler, damped) >= 30",
                s["separation_pass"],
                f"{s['separation_factor']:.1f}",
            )
        )
        for name in ("kepler", "damped"):
            targets.append(
                (
                    f"(3) {name}: held-out MSE LNODE <= 1.1 x plain",
                    s[f"{name}_mse_pass"],
                    f"ratio {s[f'{name}_mse_ratio_lnode_over_plain']:.3f}",
                )
            )
            targets.append(
                (
                    f"(3) {name}: metric LNODE < plain",
                    s[f"{name}_metric_pass"],
                    f"{s[f'{name}_metric_lnode']:.3g} vs {s[f'{name}_metric_plain']:.3g}",
                )
            )
    return targets


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--out", default=str(HERE / "results" / "lagrangian.json"))
    parser.add_argument("--skip-cost", action="store_true")
    parser.add_argument("--skip-experiments", action="store_true")
    parser.add_argument("--progress", action="store_true", help="tqdm bars while training")
    parser.add_argument("--steps", type=int, help="training steps per model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--f-no-time",
        action="store_true",
        help="autonomous force networks (use_time=False; all three systems are autonomous)",
    )
    parser.add_argument("--systems", default="kepler,damped,case4", help="experiments to run")
    args = parser.parse_args(argv)

    load_start = os.getloadavg()
    if load_start[0] > 0.5 * (os.cpu_count() or 1):
        print(f"note: the machine is busy (load average {load_start[0]:.1f}); timings will suffer")
    t_start = time.perf_counter()
    report = {
        "benchmark": "diffgal.lagrangian: cost and issue-5 experiments",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "git_commit": _git_commit(),
        "jax_version": jax.__version__,
        "equinox_version": eqx.__version__,
        "diffrax_version": diffrax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
    }
    if not args.skip_cost:
        print("part 1: cost (float32)", flush=True)
        report["cost"] = cost_benchmark(
            dims=(2, 3, 6), n_points=4096, n_traj=256, n_fixed_steps=100
        )
    if not args.skip_experiments:
        cfg = {
            "quick": args.quick,
            "seed": args.seed,
            "noise": 0.05,
            "n_train": 64 if args.quick else 256,
            "n_test": 32 if args.quick else 128,
            "steps": args.steps or (300 if args.quick else 2400),
            "batch_size": 32 if args.quick else 64,
            "n_points_train": 8 if args.quick else 16,
            "n_score_traj": 64 if args.quick else 128,
            "n_score_points": 1024 if args.quick else 4096,
            "metric_steps": 1000 if args.quick else 5000,
            "systems": args.systems.split(","),
            "f_use_time": not args.f_no_time,
        }
        print("part 2: experiments (float64)", flush=True)
        report["experiment_config"] = cfg
        partial = pathlib.Path(args.out).with_suffix(".partial.json")

        def save_partial(results):
            partial.parent.mkdir(parents=True, exist_ok=True)
            data = {**report, "experiments": results, "complete": False}
            partial.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")

        report["experiments"], report["summary"] = experiments(cfg, args.progress, save_partial)
        partial.unlink(missing_ok=True)
    report["machine"] = {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_1min_start": load_start[0],
        "load_average_1min_end": os.getloadavg()[0],
    }
    report["wall_s"] = time.perf_counter() - t_start
    report["targets"] = evaluate_targets(report)
    print_report(report)
    print(f"\nwall time {report['wall_s']:.0f} s")
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    print(f"wrote {out}")


def _json_default(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


if __name__ == "__main__":
    main()
