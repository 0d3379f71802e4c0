"""Time of one loss + gradient evaluation of the full `diffgal.pipeline` chain (issue 4).

The chain: the six physical parameters -> one-zone chemistry (28 nodes, float64) -> star
particles (ages from the SFH inverse CDF, [M/H] from the ISM at birth) -> IFU cube (the
demo's MUSE-like 24 x 24 x 1200 telescope, E-MILES, float32) -> cube chi^2 (per-spaxel
amplitude) + abundance log-likelihood of 500 stars + prior -> `jax.value_and_grad` with respect
to all six parameters. Reports the compile time (first call minus steady state) and the
steady-state time (median of repeated calls, each ended by `block_until_ready`), per particle
count, plus the chemistry-only part as an anchor measured in the same run.

    python benchmarks/pipeline.py                 # N = 1e5 and 1e6
    python benchmarks/pipeline.py --n 10000       # other counts

Results go to `benchmarks/results/pipeline.json`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import platform
import time

import equinox as eqx
import jax
import numpy as np

HERE = pathlib.Path(__file__).resolve().parent


def _time(fn, *args, repeats=5):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    steady = float(np.median(times))
    return first - steady, steady


def _measure(like, x, n, cfg, s, cube_model, repeats):
    from diffgal.pipeline import GalaxyParams

    @eqx.filter_jit
    def loss_grad(like, x):
        return jax.value_and_grad(lambda x: -like(GalaxyParams.from_array(x)))(x)

    @eqx.filter_jit
    def chem_grad(like, x):
        def f(x):
            p = GalaxyParams.from_array(x)
            return like.pipeline.history(p, like.galaxy.age_gyr).ism_mass.sum()
        return jax.value_and_grad(f)(x)

    compile_s, steady_s = _time(loss_grad, like, x, repeats=repeats)
    c_compile, c_steady = _time(chem_grad, like, x, repeats=repeats)
    print(f"N={n:>9,d}  cube_model={cube_model:<9}  loss+grad {steady_s:8.3f} s  (compile "
          f"{compile_s:6.1f} s)  chemistry-only grad {c_steady * 1e3:7.2f} ms  ratio "
          f"{steady_s / c_steady:7.0f}", flush=True)
    return dict(n_particles=n, cube_model=cube_model,
                cube_shape=list(s["pipeline"].renderer.telescope.shape),
                n_stars=cfg.n_stars, templates=s["template_label"],
                compile_s=compile_s, loss_grad_s=steady_s,
                chemistry_grad_s=c_steady, chemistry_compile_s=c_compile,
                ratio_to_chemistry=steady_s / c_steady)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=pathlib.Path, default=HERE / "results" / "pipeline.json")
    args = parser.parse_args(argv)

    import dataclasses

    from diffgal.pipeline import make_likelihood
    from diffgal.pipeline._demo import DemoConfig, demo_setup

    rows = []
    with jax.enable_x64(True):
        for n in args.n:
            cfg = dataclasses.replace(DemoConfig(), n_particles=n)
            s = demo_setup(0, cfg)
            x = s["truth"].to_array()
            for cube_model in ("expected", "particles"):
                like = make_likelihood(s["pipeline"], s["galaxy_fit"], cube=s["obs"],
                                       stars=s["stars"], cube_model=cube_model)
                rows.append(_measure(like, x, n, cfg, s, cube_model, args.repeats))

    out = dict(
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        device=str(jax.devices()[0].device_kind),
        backend=jax.default_backend(),
        platform=platform.platform(),
        jax_version=jax.__version__,
        rows=rows,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
