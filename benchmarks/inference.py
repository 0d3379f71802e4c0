"""diffgal.inference costs, measured in one run on one machine (issue 6, acceptance 4).

Measures, each timed here (compile included unless said otherwise):

- simulating the training set with the diffgal model (faithful mode, float32);
- training the emulator (`fit_emulator`) and the marginal NPE of the globals (`train_npe`);
- the time to a posterior of (alpha_IMF, log10 N_Ia) for 1,000 stars with (a) the Gaussian
  product and (b) the factorised potential (Laplace; NUTS on the 2-D potential), first call
  and steady state;
- hierarchical NUTS (c) with the emulator likelihood for 200 and 1,000 stars: wall time, bulk
  ESS of each global, ESS per second, r-hat.

It prints the speed-up per effective sample of (b)-NUTS over (c), excluding and including the
one-off costs (simulations + emulator + NPE training for (b); simulations + emulator training
for (c)), against sbi-chempy's target of an NPE posterior for 1,000 stars in <= 5 s.

    python benchmarks/inference.py                     # 1e5 simulations (about 30 min, 2 CPUs)
    python benchmarks/inference.py --quick             # 2e4 simulations, short NUTS

Writes `benchmarks/results/inference.json` (`--out`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import shutil
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _machine  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=100_000)
    parser.add_argument("--stars", default="200,1000", help="NUTS (c) star counts")
    parser.add_argument("--nuts-warmup", type=int, default=300)
    parser.add_argument("--nuts-samples", type=int, default=300)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=pathlib.Path, default=HERE / "results" / "inference.json")
    parser.add_argument("--data-dir", type=pathlib.Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.n_train, args.nuts_warmup, args.nuts_samples = 20_000, 100, 100

    import jax

    jax.config.update("jax_enable_x64", False)
    from diffgal.chemistry import CHEMPY_COLUMNS, SBI_CHEMPY_COLUMNS, load_yields
    from diffgal.inference import (
        GLOBAL_NAMES,
        ChemistryPrior,
        emulator_accuracy,
        fit_emulator,
        hierarchical_nuts,
        load_training_set,
        simulate_training_set,
        train_npe,
    )
    from diffgal.inference._headline import _aggregate_npe, mock_stars

    load_start = os.getloadavg()[0]
    t_start = time.perf_counter()
    prior = ChemistryPrior()
    cols = [CHEMPY_COLUMNS.index(c) for c in SBI_CHEMPY_COLUMNS]
    work = pathlib.Path(tempfile.mkdtemp(prefix="diffgal-bench-inference-"))
    k_sim, k_test, k_emu, k_npe, k_mock, k_agg, k_nuts = jax.random.split(jax.random.key(0), 7)
    report: dict = {
        "benchmark": "diffgal.inference costs",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "n_train": args.n_train,
        "dtype": "float32",
    }
    try:
        t0 = time.perf_counter()
        sims = load_training_set(
            simulate_training_set(k_sim, work / "sims", args.n_train, data_dir=args.data_dir,
                                  show_progress=False)
        )
        report["simulate_s"] = time.perf_counter() - t0
        report["simulate_runs_per_s"] = args.n_train / report["simulate_s"]
        test = load_training_set(
            simulate_training_set(k_test, work / "test", 10_000, data_dir=args.data_dir,
                                  show_progress=False)
        )
        fit = fit_emulator(k_emu, sims.theta, sims.x, max_epochs=150, show_progress=False)
        report["emulator_train_s"] = fit.history["seconds"]
        report["emulator_epochs"] = len(fit.history["val"])
        report["emulator_accuracy"] = emulator_accuracy(fit.emulator, test.theta, test.x)._asdict()
        emulator = fit.emulator
        npe = train_npe(k_npe, sims.theta, sims.x[:, cols], prior=prior, params=GLOBAL_NAMES,
                        max_epochs=80, show_progress=False)
        report["npe_train_s"] = npe.history["seconds"]
        report["npe_epochs"] = len(npe.history["val"])
        posterior = npe.posterior

        table = load_yields("tng", data_dir=args.data_dir)
        x1000, _ = mock_stars(k_mock, 1000, prior=prior, yields=table)
        first = _aggregate_npe(k_agg, posterior, x1000, prior, n_draws=1000, nuts=True,
                               nuts_samples=500)
        steady = _aggregate_npe(k_agg, posterior, x1000, prior, n_draws=1000, nuts=True,
                                nuts_samples=500)
        report["posterior_1000"] = {
            name: {"first_call_s": first[name][2], "steady_s": steady[name][2]}
            for name in first
        }
        report["posterior_1000"]["b_factorised_nuts"]["ess"] = steady["b_factorised_nuts"][3][
            "ess"
        ]
        nuts = {}
        for n in [int(s) for s in args.stars.split(",")]:
            r = hierarchical_nuts(k_nuts, x1000[:n], emulator, prior=prior,
                                  num_warmup=args.nuts_warmup, num_samples=args.nuts_samples)
            nuts[str(n)] = {"wall_s": r.seconds, **r.info}
            print(f"NUTS (c) {n} stars: {r.seconds:.1f} s, ESS {r.info['ess_bulk']}, r-hat "
                  f"{r.info['r_hat']}", flush=True)
        report["nuts_c"] = nuts
    finally:
        shutil.rmtree(work, ignore_errors=True)

    # Speed-up per effective sample (the smaller ESS of the two globals), 1,000 stars.
    b = report["posterior_1000"]["b_factorised_nuts"]
    ess_b = min(b["ess"])
    one_off_b = report["simulate_s"] + report["npe_train_s"]
    one_off_c = report["simulate_s"] + report["emulator_train_s"]
    speed = {}
    if "1000" in report["nuts_c"]:
        c = report["nuts_c"]["1000"]
        ess_c = min(c["ess_bulk"].values())
        per_b = b["steady_s"] / ess_b
        per_c = c["wall_s"] / ess_c
        speed = {
            "seconds_per_effective_sample_b": per_b,
            "seconds_per_effective_sample_c": per_c,
            "speedup_excluding_one_off": per_c / per_b,
            "speedup_including_one_off": ((c["wall_s"] + one_off_c) / ess_c)
            / ((b["steady_s"] + one_off_b) / ess_b),
        }
    report["speedup_b_over_c_1000"] = speed
    a_s = report["posterior_1000"]["a_gaussian_product"]["steady_s"]
    report["targets"] = {"npe_posterior_1000_stars_s<=5": {"value": a_s, "pass": a_s <= 5.0}}
    report["machine"] = _machine.machine(load_start)
    report["wall_s"] = time.perf_counter() - t_start

    print(f"\ndiffgal.inference on {report['machine']['cpu_model']} "
          f"({report['machine']['cpu_count']} CPUs), float32, {args.n_train} simulations")
    print(f"{'stage':44s} {'seconds':>10s}")
    print(f"{'simulate training set':44s} {report['simulate_s']:10.1f}")
    print(f"{'train emulator':44s} {report['emulator_train_s']:10.1f}")
    print(f"{'train marginal NPE':44s} {report['npe_train_s']:10.1f}")
    for name, v in report["posterior_1000"].items():
        print(f"{'posterior 1000 stars: ' + name:44s} {v['steady_s']:10.2f} "
              f"(first call {v['first_call_s']:.2f})")
    for n, v in report["nuts_c"].items():
        ess = min(v["ess_bulk"].values())
        print(f"{'NUTS (c) ' + n + ' stars':44s} {v['wall_s']:10.1f}  ESS {ess:.0f}, "
              f"ESS/s {ess / v['wall_s']:.2f}, r-hat {max(v['r_hat'].values()):.3f}")
    for k, v in speed.items():
        print(f"{k:44s} {v:10.3g}")
    acc = report["emulator_accuracy"]
    print(f"emulator |delta| median {acc['median']:.4f}, p99 {acc['p99']:.4f} dex; "
          f"{acc['seconds_per_star'] * 1e6:.2f} us/star")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=float) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
