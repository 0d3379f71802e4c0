"""Speed and memory of the `diffgal.ifu` renderer against RUBIX (astro-rubix 0.0.5), spec `ifu.md`.

For each configuration (telescope preset, particle count N, velocity range `v_max`), with the
E-MILES templates in float32, this measures

- the setup time (`make_renderer`: the host-side template bank),
- the compile time: an AOT `lower().compile()` of the jitted call (it shares the jit cache, so
  the next plain call only runs), and the first call (AOT + first execution) minus the
  steady-state time, which agrees with it where the calls are short and is noisy where they are
  long,
- the steady-state time of the forward render and of `value_and_grad` of `sum(flux**2)` w.r.t.
  the particles (median of >= 3 calls, each ended by `jax.block_until_ready`),
- the peak resident memory (RSS) of the forward render and of the gradient.

Every (configuration, forward | gradient) pair runs in its own fresh subprocess (this script
re-invoked with a hidden `--_worker` flag), so each peak RSS is that of one job alone. Inside the
worker the kernel's peak-RSS mark is reset (`/proc/self/clear_refs`) after the setup, so the
report separates the setup peak (E-MILES load, bank build, particle sampling) from the peak of the
compile and calls; the process peak is the larger of the two.

    python benchmarks/ifu.py            # MUSE at N = 1e3 ... 1e6, MUSE_WFM at 1e6 (~15 min)
    python benchmarks/ifu.py --quick    # MUSE at N = 1e4, 1e5

Results go to `benchmarks/results/ifu.json` (`--out`).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import pathlib
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _machine import cpu_model as _cpu_model  # noqa: E402

MB = 1e6
GB = 1e9

#: RUBIX (astro-rubix 0.0.5) on a 2-core CPU, float32, MUSE 25x25x3721, BC03lr (spec §9).
RUBIX_JIT_S = {1_000: 0.38, 10_000: 2.15, 100_000: 20.3}
RUBIX_NOJIT_S = {1_000: 1.7, 10_000: 3.4, 100_000: 22.6}
RUBIX_S_PER_PARTICLE = 2e-4  # ~0.2 ms per particle: the base of the extrapolated 1e6 figure
RUBIX_GRAD_BYTES_PER_PARTICLE = 0.84e6
RUBIX_GRAD_4K = {"n": 4_000, "seconds": 36.0, "rss_gb": 4.31}

#: The mock disc for each preset at 10 Mpc, scaled so that most particles fall in the field
#: (MUSE: 5" = 0.24 kpc; MUSE_WFM: 60" = 2.9 kpc). Lengths in kpc.
DISKS = {
    "MUSE": dict(r_d_kpc=0.05, h_z_kpc=0.01, r_turn_kpc=0.015, mass_msun=1e9),
    "MUSE_WFM": dict(r_d_kpc=0.6, h_z_kpc=0.12, r_turn_kpc=0.18, mass_msun=1e10),
}
#: flux_scale 1e-20 (MUSE's BUNIT) keeps float32 cotangents of sum(flux**2) normal: at
#: make_renderer's default of 1 (erg/s/cm^2/Å, fluxes ~1e-15) most of them underflow to 0.
OBSERVATION = dict(distance_mpc=10.0, inclination_deg=60.0, flux_scale=1e-20)

#: (telescope, N, v_max km/s) of each configuration.
FULL = (
    ("MUSE", 1_000, 400.0),
    ("MUSE", 10_000, 400.0),
    ("MUSE", 100_000, 400.0),
    ("MUSE", 1_000_000, 400.0),
    ("MUSE", 100_000, 800.0),  # the spec's 81 velocity bins (make_renderer's default v_max)
    ("MUSE_WFM", 1_000_000, 300.0),
)
QUICK = (("MUSE", 10_000, 400.0), ("MUSE", 100_000, 400.0))

#: Skip a gradient whose XLA memory plan exceeds this, or stop timing it after a slow first call.
MAX_PLAN_BYTES = 20e9
MAX_GRADIENT_CALL_S = 300.0


# ------------------------------------------------------------------------------------------------
# Memory probes (Linux)
# ------------------------------------------------------------------------------------------------


def _peak_rss_bytes() -> float:
    """The process's peak RSS since start or since the last `_reset_peak` (ru_maxrss, kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1e3


def _rss_bytes() -> float:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return float(line.split()[1]) * 1e3
    return float("nan")


def _malloc_trim() -> bool:
    """Return freed heap memory to the kernel (glibc `malloc_trim(0)`), if available."""
    try:
        import ctypes

        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM, hence ru_maxrss) to the current RSS."""
    try:
        pathlib.Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


# ------------------------------------------------------------------------------------------------
# Worker: one configuration and one kind (forward or gradient), in a fresh process
# ------------------------------------------------------------------------------------------------


def _timed_calls(fn, args, min_repeats: int, min_total_s: float, max_repeats: int):
    import jax

    times = []
    while len(times) < min_repeats or (sum(times) < min_total_s and len(times) < max_repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
        del out
    return times


def _memory_plan(compiled) -> dict | None:
    stats = compiled.compiled.memory_analysis()
    if stats is None:
        return None
    temp = stats.temp_size_in_bytes
    args = stats.argument_size_in_bytes
    out = stats.output_size_in_bytes
    alias = getattr(stats, "alias_size_in_bytes", 0)
    return {
        "temp_mb": temp / MB,
        "argument_mb": args / MB,
        "output_mb": out / MB,
        "total_mb": (temp + args + out - alias) / MB,
    }


def run_worker(kind: str, telescope: str, n: int, v_max: float, out: str) -> None:
    """Time and measure one configuration (`kind`: forward or gradient); write JSON to `out`."""
    load_start = os.getloadavg()[0]
    t0 = time.perf_counter()
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from diffgal.galaxy import exponential_disk
    from diffgal.ifu import get_telescope, make_renderer
    from diffgal.spectra import load_emiles

    import_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    grid = load_emiles()
    load_s = time.perf_counter() - t0
    tel = get_telescope(telescope)
    t0 = time.perf_counter()
    renderer = make_renderer(tel, grid, v_max=v_max, dtype=jnp.float32, **OBSERVATION)
    jax.block_until_ready(renderer)
    setup_s = time.perf_counter() - t0
    key = jax.random.key(0)
    particles = exponential_disk(key, n, dtype=jnp.float32, **DISKS[telescope])
    jax.block_until_ready(particles)
    gc.collect()
    setup_peak = _peak_rss_bytes()
    baseline_untrimmed = _rss_bytes()
    _malloc_trim()  # hand the sampler's and bank builder's freed heap back to the kernel
    baseline = _rss_bytes()
    reset = _reset_peak()

    if kind == "forward":
        fn = eqx.filter_jit(lambda r, p: r(p))
        args = (renderer, particles)
    else:
        fn = eqx.filter_jit(jax.value_and_grad(lambda p, r: jnp.sum(r(p).flux ** 2)))
        args = (particles, renderer)
    t0 = time.perf_counter()
    compiled = fn.lower(*args).compile()  # shares its cache with `fn`: the next call runs it
    aot_s = time.perf_counter() - t0
    plan = _memory_plan(compiled)
    side = (tel.n_x + 2 * renderer.margin, tel.n_y + 2 * renderer.margin)
    grid_bytes = side[0] * side[1] * renderer.n_ssp * renderer.n_k * 4  # float32 W
    row = {
        "telescope": telescope,
        "n_particles": n,
        "kind": kind,
        "v_max_kms": renderer.v_max,
        "v_max_requested_kms": v_max,
        "velscale_kms": renderer.velscale,
        "n_velocity_bins": renderer.n_k,
        "n_ssp": renderer.n_ssp,
        "cube_shape": [tel.n_x, tel.n_y, int(renderer.wavelength.shape[0])],
        "deposit_grid_mb": grid_bytes / MB,
        "chunk_size": renderer.chunk_size,
        "disk": DISKS[telescope],
        "import_s": import_s,
        "emiles_load_s": load_s,
        "setup_s": setup_s,
        "aot_compile_s": aot_s,
        "xla_memory_plan": plan,
        "setup_peak_rss_mb": setup_peak / MB,
        "baseline_rss_mb": baseline / MB,
        "baseline_rss_untrimmed_mb": baseline_untrimmed / MB,
        "peak_reset": reset,
    }
    skip = None
    if plan is not None and plan["total_mb"] * MB > MAX_PLAN_BYTES:
        skip = (
            f"XLA plans {plan['total_mb'] / 1e3:.1f} GB for the call (> "
            f"{MAX_PLAN_BYTES / GB:.0f} GB of the 24 GB machine)"
        )
    if skip is None:
        t0 = time.perf_counter()
        first = jax.block_until_ready(fn(*args))
        first_s = time.perf_counter() - t0
        row["first_execution_s"] = first_s
        if kind == "forward":
            cube = first
            row["in_field_fraction"] = 1.0 - int(cube.n_outside_fov) / n
            row["n_clamped_ssp"] = int(cube.n_clamped)
            row["clipped_velocity_mass_fraction"] = float(cube.clipped_velocity_mass) / float(
                jnp.sum(particles.mass)
            )
            row["finite"] = bool(jnp.all(jnp.isfinite(cube.flux)))
            del cube  # the output of the timed calls must not sit on top of this one
        else:
            value, grads = first
            leaves = jax.tree_util.tree_leaves(grads)
            row["finite"] = bool(np.isfinite(float(value))) and all(
                bool(jnp.all(jnp.isfinite(g))) for g in leaves
            )
            row["mass_gradient_nonzero_fraction"] = float(jnp.mean(grads.mass != 0))
            del value, grads, leaves
        del first
        slow = kind == "gradient" and first_s > MAX_GRADIENT_CALL_S
        if slow:
            skip = f"one gradient call took {first_s:.0f} s (> {MAX_GRADIENT_CALL_S:.0f} s)"
        else:
            heavy = first_s > 10.0
            times = _timed_calls(
                fn, args, min_repeats=3, min_total_s=0.0 if heavy else 2.0,
                max_repeats=3 if heavy else 10,
            )  # fmt: skip
            steady = float(np.median(times))
            row.update(
                steady_s=steady,
                steady_min_s=float(np.min(times)),
                steady_max_s=float(np.max(times)),
                repeats=len(times),
                compile_s=aot_s,
                compile_first_minus_steady_s=aot_s + first_s - steady,
                first_call_s=aot_s + first_s,
                particles_per_s=n / steady,
            )
    compute_peak = _peak_rss_bytes()
    row.update(
        compute_peak_rss_mb=compute_peak / MB,
        peak_rss_mb=max(setup_peak, compute_peak) / MB,
        skipped=skip,
        load_average_1min_start=load_start,
        load_average_1min_end=os.getloadavg()[0],
        jax_version=jax.__version__,
        equinox_version=eqx.__version__,
        backend=jax.default_backend(),
        devices=[str(d) for d in jax.devices()],
        x64=bool(jax.config.jax_enable_x64),
    )
    pathlib.Path(out).write_text(json.dumps(row, indent=2))


# ------------------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------------------


def _library_state() -> dict:
    """The git commit and the uncommitted changes under `diffgal/` that the run measured."""
    import hashlib

    root = HERE.parent

    def git(*cmd):
        try:
            proc = subprocess.run(["git", *cmd], cwd=root, capture_output=True, text=True)
        except OSError:
            return ""
        return proc.stdout if proc.returncode == 0 else ""

    dirty = [line[3:] for line in git("status", "--porcelain", "--", "diffgal").splitlines()]
    hashes = {
        name: hashlib.sha1((root / name).read_bytes()).hexdigest()[:12]
        for name in dirty
        if (root / name).is_file()
    }
    return {"git_head": git("rev-parse", "HEAD").strip() or None, "uncommitted_sha1": hashes}


def _spawn(kind: str, telescope: str, n: int, v_max: float, timeout_s: float) -> dict:
    env = dict(os.environ)
    env.pop("JAX_ENABLE_X64", None)  # float32 benchmark: x64 off
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "row.json"
        cmd = [
            sys.executable, __file__, "--_worker", kind, "--_telescope", telescope,
            "--_n", str(n), "--_v-max", str(v_max), "--_worker-out", str(out),
        ]  # fmt: skip
        base = {"telescope": telescope, "n_particles": n, "kind": kind,
                "v_max_requested_kms": v_max}  # fmt: skip
        try:
            proc = subprocess.run(cmd, env=env, timeout=timeout_s, capture_output=True, text=True)
        except subprocess.TimeoutExpired:
            return base | {"skipped": f"the worker ran past {timeout_s:.0f} s and was stopped"}
        if proc.returncode != 0 or not out.is_file():
            why = "killed (out of memory?)" if proc.returncode < 0 else "failed"
            tail = (proc.stderr or "").strip().splitlines()[-3:]
            return base | {"skipped": f"worker {why}, exit code {proc.returncode}: {tail}"}
        return json.loads(out.read_text())


def _rubix(n: int) -> dict:
    """RUBIX's forward time at `n` particles: measured where the spec has it, else extrapolated."""
    if n in RUBIX_JIT_S:
        return {"jit_s": RUBIX_JIT_S[n], "nojit_s": RUBIX_NOJIT_S[n], "extrapolated": False}
    return {"jit_s": n * RUBIX_S_PER_PARTICLE, "nojit_s": None, "extrapolated": True}


def _find(rows, telescope, n, v_max, kind):
    for r in rows:
        if (r["telescope"], r["n_particles"], r["v_max_requested_kms"], r["kind"]) == (
            telescope, n, v_max, kind
        ):  # fmt: skip
            return r
    return None


def summarise(rows: list[dict]) -> list[dict]:
    """One line per configuration: forward and gradient side by side, with the anchor ratios."""
    lines = []
    seen = []
    for r in rows:
        cfg = (r["telescope"], r["n_particles"], r["v_max_requested_kms"])
        if cfg in seen:
            continue
        seen.append(cfg)
        fwd, grad = _find(rows, *cfg, "forward"), _find(rows, *cfg, "gradient")
        line = {"telescope": cfg[0], "n_particles": cfg[1], "v_max_kms": cfg[2]}
        for name, src in (("forward", fwd), ("gradient", grad)):
            src = src or {}
            line[name] = {k: src.get(k) for k in (
                "setup_s", "compile_s", "steady_s", "particles_per_s", "peak_rss_mb",
                "compute_peak_rss_mb", "setup_peak_rss_mb", "skipped",
            )}  # fmt: skip
        for k in ("n_velocity_bins", "deposit_grid_mb", "in_field_fraction",
                  "clipped_velocity_mass_fraction", "n_clamped_ssp"):  # fmt: skip
            line[k] = (fwd or {}).get(k)
        f_s, g_s = line["forward"]["steady_s"], line["gradient"]["steady_s"]
        line["gradient_over_forward"] = g_s / f_s if f_s and g_s else None
        if cfg[0] == "MUSE":
            rubix = _rubix(cfg[1])
            line["rubix"] = rubix
            line["speedup_vs_rubix_jit"] = rubix["jit_s"] / f_s if f_s else None
            line["speedup_vs_rubix_nojit"] = (
                rubix["nojit_s"] / f_s if f_s and rubix["nojit_s"] else None
            )
        lines.append(line)
    return lines


def evaluate(rows: list[dict]) -> dict:
    """Gradient memory per particle (vs RUBIX's 0.84 MB) and the spec's §9 targets."""
    muse = sorted(
        (r for r in rows if r["telescope"] == "MUSE" and r["kind"] == "gradient"
         and r["v_max_requested_kms"] == 400.0 and r.get("peak_rss_mb")),
        key=lambda r: r["n_particles"],
    )  # fmt: skip
    # Slopes from each N to the largest one: a change of >= 0.9M particles, so the ~+-30 MB
    # by which a process's RSS varies run to run is <= ~35 B per particle.
    slopes = []
    if muse:
        b = muse[-1]
        for a in muse[:-1]:
            dn = b["n_particles"] - a["n_particles"]
            per = (b["peak_rss_mb"] - a["peak_rss_mb"]) * MB / dn
            per_compute = (b["compute_peak_rss_mb"] - a["compute_peak_rss_mb"]) * MB / dn
            plans = (a.get("xla_memory_plan"), b.get("xla_memory_plan"))
            per_plan = (
                (plans[1]["total_mb"] - plans[0]["total_mb"]) * MB / dn if all(plans) else None
            )
            slopes.append({
                "from_n": a["n_particles"], "to_n": b["n_particles"],
                "bytes_per_particle": per, "compute_phase_bytes_per_particle": per_compute,
                "xla_plan_bytes_per_particle": per_plan,
                "rubix_bytes_per_particle": RUBIX_GRAD_BYTES_PER_PARTICLE,
                "ratio_rubix_over_diffgal": (
                    RUBIX_GRAD_BYTES_PER_PARTICLE / per if per > 0 else None
                ),
            })  # fmt: skip
    targets = []

    def add(label, value, op, threshold, unit, note=""):
        if value is None:
            return
        ok = value < threshold if op == "<" else value <= threshold
        targets.append({"target": label, "value": value, "op": op, "threshold": threshold,
                        "unit": unit, "pass": bool(ok), "note": note})  # fmt: skip

    g5 = _find(rows, "MUSE", 100_000, 400.0, "gradient")
    g6 = _find(rows, "MUSE", 1_000_000, 400.0, "gradient")
    f5 = _find(rows, "MUSE", 100_000, 400.0, "forward")
    if f5 and f5.get("steady_s"):
        add("MUSE forward, 1e5 particles", f5["steady_s"], "<=", 0.67, "s",
            "spec §9: >= 30x the jitted anchor's 20.3 s")  # fmt: skip
    if g5 and g6 and g5.get("peak_rss_mb") and g6.get("peak_rss_mb"):
        growth = 100.0 * (g6["peak_rss_mb"] / g5["peak_rss_mb"] - 1.0)
        add("MUSE gradient peak-RSS growth 1e5 -> 1e6", growth, "<", 25.0, "%",
            "process peak RSS")  # fmt: skip
        growth_c = 100.0 * (g6["compute_peak_rss_mb"] / g5["compute_peak_rss_mb"] - 1.0)
        add("  (compute phase only)", growth_c, "<", 25.0, "%",
            "peak of compile + calls, after setup")  # fmt: skip
    if g6 and g6.get("peak_rss_mb"):
        add("MUSE gradient peak RSS, 1e6 particles", g6["peak_rss_mb"] / 1e3, "<", 2.0, "GB")
    return {"gradient_memory_per_particle": slopes, "targets": targets}


def _fmt(x, spec, missing="-"):
    return missing if x is None else format(x, spec)


def print_table(report: dict) -> None:
    m = report["machine"]
    print()
    print(
        f"diffgal.ifu on {m['cpu_model']} ({m['cpu_count']} CPUs), JAX {report['jax_version']}, "
        f"{report['backend']} {report['devices']}, E-MILES float32, load average "
        f"{m['load_average_1min_start']:.1f} (start) / {m['load_average_1min_end']:.1f} (end)"
    )
    print(
        "anchor: RUBIX, MUSE 25x25x3721 on 2 CPU cores: jitted 0.38/2.15/20.3 s at 1e3/1e4/1e5 "
        "(1e6: 200 s extrapolated at 0.2 ms/particle, marked *); not jitted 1.7/3.4/22.6 s"
    )
    header = (
        f"{'config':<9} {'N':>9} {'v_max/bins':>10} {'field':>6} {'setup s':>8} {'comp s':>7} "
        f"{'fwd s':>7} {'part/s':>8} {'xRUBIX':>8} {'xnojit':>7} {'grad s':>7} {'g/f':>5} "
        f"{'fwd MB':>7} {'grad MB':>8}"
    )
    print(header)
    print("-" * len(header))
    for s in report["summary"]:
        fwd, grad = s["forward"], s["gradient"]
        vel = f"{s['v_max_kms']:.0f}/{s['n_velocity_bins'] or '?'}"
        field = _fmt(s["in_field_fraction"], ".2f")
        rate = _fmt(fwd["particles_per_s"], ".2g")
        jit = _fmt(s.get("speedup_vs_rubix_jit"), ".0f")
        if jit != "-" and s.get("rubix", {}).get("extrapolated"):
            jit += "*"
        nojit = _fmt(s.get("speedup_vs_rubix_nojit"), ".0f")
        print(
            f"{s['telescope']:<9} {s['n_particles']:>9.0e} {vel:>10} {field:>6} "
            f"{_fmt(fwd['setup_s'], '.2f'):>8} {_fmt(fwd['compile_s'], '.2f'):>7} "
            f"{_fmt(fwd['steady_s'], '.3f'):>7} {rate:>8} {jit:>8} {nojit:>7} "
            f"{_fmt(grad['steady_s'], '.3f'):>7} {_fmt(s['gradient_over_forward'], '.1f'):>5} "
            f"{_fmt(fwd['peak_rss_mb'], '.0f'):>7} {_fmt(grad['peak_rss_mb'], '.0f'):>8}"
        )
        for name in ("forward", "gradient"):
            if s[name]["skipped"]:
                print(f"    {name} not timed: {s[name]['skipped']}")
    print("\ngradient memory per particle (slope of the gradient's peak RSS; RUBIX: 0.84 MB):")
    for sl in report["evaluation"]["gradient_memory_per_particle"]:
        ratio = _fmt(sl["ratio_rubix_over_diffgal"], ",.0f")
        plan = _fmt(sl["xla_plan_bytes_per_particle"], ".0f")
        print(
            f"  {sl['from_n']:.0e} -> {sl['to_n']:.0e}: {sl['bytes_per_particle']:6.0f} B/particle "
            f"(compute phase {sl['compute_phase_bytes_per_particle']:.0f} B, XLA plan {plan} B); "
            f"RUBIX / diffgal = {ratio}"
        )
    print("\ntargets (spec §9):")
    for t in report["evaluation"]["targets"]:
        status = "PASS" if t["pass"] else "MISS"
        note = f"  ({t['note']})" if t["note"] else ""
        print(
            f"  {status}  {t['target']:<42} {t['value']:>8.2f} {t['unit']:<2} {t['op']} "
            f"{t['threshold']:g}{note}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="MUSE at N = 1e4, 1e5; no MUSE_WFM")
    parser.add_argument("--out", default=str(HERE / "results" / "ifu.json"), help="JSON output")
    parser.add_argument(
        "--timeout", type=float, default=1800.0, help="seconds before a worker is stopped"
    )
    parser.add_argument("--_worker", choices=("forward", "gradient"), help=argparse.SUPPRESS)
    parser.add_argument("--_telescope", help=argparse.SUPPRESS)
    parser.add_argument("--_n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--_v-max", dest="v_max", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--_worker-out", dest="worker_out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._worker:
        run_worker(args._worker, args._telescope, args._n, args.v_max, args.worker_out)
        return

    configs = QUICK if args.quick else FULL
    load_start = os.getloadavg()
    if load_start[0] > 0.5 * (os.cpu_count() or 1):
        print(f"note: the machine is busy (load average {load_start[0]:.1f}); timings will suffer")
    rows = []
    for telescope, n, v_max in configs:
        for kind in ("forward", "gradient"):
            print(f"running {telescope} N={n:.0e} v_max={v_max:g} {kind} ...", flush=True)
            row = _spawn(kind, telescope, n, v_max, args.timeout)
            rows.append(row)
            if row.get("steady_s"):
                print(
                    f"  steady {row['steady_s']:.3f} s, compile {row['compile_s']:.2f} s, "
                    f"peak RSS {row['peak_rss_mb']:.0f} MB (compute phase "
                    f"{row['compute_peak_rss_mb']:.0f} MB), "
                    f"load {row['load_average_1min_end']:.1f}",
                    flush=True,
                )
            else:
                print(f"  not timed: {row.get('skipped')}", flush=True)
    first = next((r for r in rows if "jax_version" in r), {})
    report = {
        "benchmark": "diffgal.ifu render and gradient vs RUBIX",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "templates": "E-MILES (ppxf 8.2.6), 25 ages x 6 [M/H], float32",
        "observation": OBSERVATION,
        "loss": "sum(flux**2); gradient = value_and_grad w.r.t. the StellarParticles",
        "jax_version": first.get("jax_version"),
        "equinox_version": first.get("equinox_version"),
        "backend": first.get("backend"),
        "devices": first.get("devices"),
        "x64": first.get("x64"),
        "library": _library_state(),
        "machine": {
            "cpu_count": os.cpu_count(),
            "cpu_model": _cpu_model(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "load_average_start": list(load_start),
            "load_average_1min_start": load_start[0],
            "load_average_end": list(os.getloadavg()),
            "load_average_1min_end": os.getloadavg()[0],
        },
        "anchor": {
            "rubix_jit_s": RUBIX_JIT_S,
            "rubix_nojit_s": RUBIX_NOJIT_S,
            "rubix_1e6_extrapolated_s": 1_000_000 * RUBIX_S_PER_PARTICLE,
            "rubix_gradient_bytes_per_particle": RUBIX_GRAD_BYTES_PER_PARTICLE,
            "rubix_gradient_4k": RUBIX_GRAD_4K,
            "source": "astro-rubix 0.0.5, 2-core CPU, float32, MUSE 25x25x3721, BC03lr (spec §9)",
        },
        "results": rows,
    }
    report["summary"] = summarise(rows)
    report["evaluation"] = evaluate(rows)
    print_table(report)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
