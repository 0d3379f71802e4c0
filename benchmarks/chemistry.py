"""Throughput of `diffgal.chemistry.evolve` against CHEMPY's 0.19 s per run and the spec's targets.

Measures, for each configuration and batch size, the compile time (tracing, lowering and XLA
compilation of one `jit(vmap(...))`) and the steady-state time (median of at least 3 calls, each
ended by `jax.block_until_ready`), and reports star-runs per second:

- smooth mode, float32: forward; forward + gradient of `sum(columns**2)` w.r.t. the 6 inputs;
- faithful mode, float64 and float32: forward;
- smooth mode, float64: forward; forward + gradient.

Each dtype runs in its own subprocess (this script re-invoked with a hidden `--_worker` flag), so
`jax_enable_x64` is set once, before anything is traced. `--devices N` fakes N host CPU devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=N`, set before JAX is imported) and puts each
batch on a `NamedSharding` over a 1-D mesh; the computation follows the data.

    python benchmarks/chemistry.py                 # batches 1, 100, 10,000 (a few minutes)
    python benchmarks/chemistry.py --quick         # batches 1, 100, 1,000
    python benchmarks/chemistry.py --devices 2     # shard each batch over 2 CPU devices

Results go to `benchmarks/results/chemistry.json` (`--out`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _machine import cpu_model as _cpu_model  # noqa: E402

REPO_ROOT = HERE.parent

#: CHEMPY (ChempyMulti, TNG configuration) on a 2-core x86 CPU, Python 3.11: spec §11.
CHEMPY_SECONDS_PER_RUN = 0.19
GB = 1e9

#: (name, mode, kind) of the configurations each dtype worker runs, in order.
CONFIGS = {
    "float32": (
        ("smooth f32 forward", "smooth", "forward"),
        ("smooth f32 gradient", "smooth", "gradient"),
        ("faithful f32 forward", "faithful", "forward"),
    ),
    "float64": (
        ("faithful f64 forward", "faithful", "forward"),
        ("smooth f64 forward", "smooth", "forward"),
        ("smooth f64 gradient", "smooth", "gradient"),
    ),
}


# ------------------------------------------------------------------------------------------------
# Inputs
# ------------------------------------------------------------------------------------------------


def sample_prior(n: int, seed: int = 0) -> np.ndarray:
    """`(n, 6)` draws of sbi-chempy's prior (alpha_IMF, log10_N_Ia, log10_SFE, log10_SFR_peak,
    x_out, T_birth), float64."""
    rng = np.random.default_rng(seed)
    alpha = rng.normal(-2.3, 0.3, n)
    n_ia = rng.normal(-2.89, 0.3, n)
    sfe = rng.normal(-0.3, 0.3, n)
    peak = rng.normal(0.55, 0.1, n)
    while np.any(bad := peak <= 0.294):  # truncated below at 0.294
        peak[bad] = rng.normal(0.55, 0.1, int(bad.sum()))
    x_out = np.clip(rng.normal(0.5, 0.1, n), 0.05, 0.95)
    birth = rng.uniform(2.0, 12.8, n)
    return np.stack([alpha, n_ia, sfe, peak, x_out, birth], axis=-1)


def reference_theta() -> np.ndarray | None:
    """The 40 reference parameter sets of `chempy_tng/visible.npz`, or None if absent."""
    roots = []
    if env := os.environ.get("DIFFGAL_REFERENCE_DIR"):
        roots.append(pathlib.Path(env))
    roots.append(REPO_ROOT.parent / "shared" / "reference")
    for root in roots:
        for candidate in (root / "chempy_tng", root):
            if (candidate / "visible.npz").is_file():
                with np.load(candidate / "visible.npz") as data:
                    return np.asarray(data["theta"], float)
    return None


def resolve_yields(name: str) -> tuple[str, str | None]:
    """`(name, note)`: fall back from `tng` to `default` when the TNG tables are missing."""
    if name != "tng":
        return name, None
    from diffgal.chemistry import load_yields

    try:
        load_yields("tng")
    except Exception as err:  # missing files, no network, no pooch: all mean "not available"
        note = (
            f"TNG yield tables unavailable ({type(err).__name__}: {err}); using `--yields "
            "default` instead. Set DIFFGAL_DATA_DIR to a directory holding yields/tng/."
        )
        return "default", note
    return "tng", None


# ------------------------------------------------------------------------------------------------
# Worker: one dtype, run in its own process
# ------------------------------------------------------------------------------------------------


def _timed_calls(fn, args, min_repeats: int, min_total_s: float, max_repeats: int = 50):
    import jax

    times = []
    while len(times) < min_repeats or (sum(times) < min_total_s and len(times) < max_repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return times


def _memory_gb(compiled) -> dict | None:
    stats = compiled.memory_analysis()
    if stats is None:
        return None
    temp = stats.temp_size_in_bytes
    args = stats.argument_size_in_bytes
    out = stats.output_size_in_bytes
    alias = getattr(stats, "alias_size_in_bytes", 0)
    return {
        "temp_gb": temp / GB,
        "argument_gb": args / GB,
        "output_gb": out / GB,
        "total_gb": (temp + args + out - alias) / GB,
    }


def run_worker(
    dtype: str, batches: list[int], yields_name: str, devices: int, out: str, chunk: int
) -> None:
    """Run the configurations of one dtype and write their results to `out` (JSON)."""
    if devices > 1:
        flag = f"--xla_force_host_platform_device_count={devices}"
        if flag not in os.environ.get("XLA_FLAGS", ""):
            os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()
    import jax

    if dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    from diffgal.chemistry import (
        ChemistryParams,
        GCEOptions,
        chempy_columns,
        chempy_tng,
        evolve,
        load_yields,
    )

    np_dtype = np.float32 if dtype == "float32" else np.float64
    yields = load_yields(yields_name)
    if len(jax.devices()) < devices:
        raise RuntimeError(
            f"`--devices {devices}` asked for {devices} devices but JAX sees {jax.devices()}; "
            "XLA_FLAGS must be set before JAX is imported."
        )
    mesh = None
    if devices > 1:
        mesh = jax.make_mesh((devices,), ("batch",), axis_types=(jax.sharding.AxisType.Auto,))

    def place(x):
        if mesh is None or x.shape[0] % devices:
            return jax.device_put(x)  # unshardable batch (e.g. 1): one device
        spec = jax.sharding.PartitionSpec("batch")
        return jax.device_put(x, jax.sharding.NamedSharding(mesh, spec))

    def columns(theta, tables, options):
        params = ChemistryParams.from_array(theta)
        hist = evolve(params, yields=tables, options=options, throw=False)
        return chempy_columns(hist.x_h()[-1], hist.elements)

    def make(mode, kind, batch):
        options = GCEOptions.from_mode(mode)
        one = lambda t, tables: columns(t, tables, options)
        if kind == "forward":
            per_run = one
        else:
            per_run = jax.value_and_grad(lambda t, tables: jnp.sum(one(t, tables) ** 2))
        if chunk and batch > chunk and mesh is None:
            # vmap over chunks of `chunk` runs inside a sequential map: the working set of the
            # backward pass stays in cache (and memory stays bounded) at large batches.
            return jax.jit(
                lambda tables, x: jax.lax.map(lambda t: per_run(t, tables), x, batch_size=chunk)
            )
        return jax.jit(lambda tables, x: jax.vmap(per_run, in_axes=(0, None))(x, tables))

    theta_all = sample_prior(max(batches)).astype(np_dtype)
    results = []
    for name, mode, kind in CONFIGS[dtype]:
        for batch in batches:
            x = place(theta_all[:batch])
            fn = make(mode, kind, batch)
            t0 = time.perf_counter()
            compiled = fn.lower(yields, x).compile()
            compile_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            first = jax.block_until_ready(compiled(yields, x))
            first_s = time.perf_counter() - t0
            times = _timed_calls(compiled, (yields, x), min_repeats=3, min_total_s=1.0)
            steady = float(np.median(times))
            leaves = jax.tree_util.tree_leaves(first)
            finite = float(np.mean([np.isfinite(np.asarray(v)).all(-1).mean() for v in leaves]))
            row = {
                "name": name,
                "mode": mode,
                "kind": kind,
                "dtype": dtype,
                "batch": batch,
                "sharded": mesh is not None and batch % devices == 0,
                "compile_s": compile_s,
                "first_call_s": first_s,
                "steady_s": steady,
                "steady_min_s": float(np.min(times)),
                "repeats": len(times),
                "runs_per_s": batch / steady,
                "speedup_vs_chempy": batch / steady * CHEMPY_SECONDS_PER_RUN,
                "finite_fraction": finite,
                "memory": _memory_gb(compiled),
            }
            results.append(row)
            print(
                f"  [{dtype}] {name:<22} batch {batch:>6}: compile {compile_s:6.2f} s, "
                f"steady {steady * 1e3:9.2f} ms, {row['runs_per_s']:10.0f} runs/s",
                file=sys.stderr,
                flush=True,
            )

    reference = None
    theta_ref = reference_theta() if dtype == "float64" else None
    if theta_ref is not None and yields_name == "tng":
        # The public entry point, as sbi-chempy would call it (faithful, float64).
        t0 = time.perf_counter()
        jax.block_until_ready(chempy_tng(theta_ref, mode="faithful"))
        first_s = time.perf_counter() - t0
        times = _timed_calls(
            lambda t: chempy_tng(t, mode="faithful"), (theta_ref,), 3, min_total_s=1.0
        )
        steady = float(np.median(times))
        reference = {
            "n_runs": len(theta_ref),
            "first_call_s": first_s,
            "steady_s": steady,
            "runs_per_s": len(theta_ref) / steady,
            "chempy_s": len(theta_ref) * CHEMPY_SECONDS_PER_RUN,
        }
        print(f"  [{dtype}] chempy_tng, 40 reference runs: {steady * 1e3:.2f} ms", file=sys.stderr)

    report = {
        "dtype": dtype,
        "jax_version": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "device_kinds": sorted({d.device_kind for d in jax.devices()}),
        "x64": bool(jax.config.jax_enable_x64),
        "results": results,
        "chempy_tng_reference": reference,
    }
    pathlib.Path(out).write_text(json.dumps(report, indent=2))


# ------------------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------------------


def _row(rows, name, batch):
    for r in rows:
        if r["name"] == name and r["batch"] == batch:
            return r
    return None


def evaluate_targets(rows: list[dict], largest: int) -> list[dict]:
    """The spec's §11 targets, evaluated at the largest batch."""
    targets = []

    def add(label, value, op, threshold, unit, note=""):
        if value is None:
            return
        ok = {">=": value >= threshold, "<=": value <= threshold, "<": value < threshold}[op]
        targets.append(
            {
                "target": label,
                "value": value,
                "op": op,
                "threshold": threshold,
                "unit": unit,
                "pass": bool(ok),
                "batch": largest,
                "note": note,
            }
        )

    def get(name, key="runs_per_s"):
        r = _row(rows, name, largest)
        return None if r is None else r[key]

    add("smooth f32 forward", get("smooth f32 forward"), ">=", 20_000, "runs/s")
    add("faithful f64 forward", get("faithful f64 forward"), ">=", 5_000, "runs/s")
    add("smooth f32 gradient", get("smooth f32 gradient"), ">=", 3_000, "runs/s")
    for dtype, limit in (("f32", 6.0), ("f64", 8.0)):
        grad = get(f"smooth {dtype} gradient", "steady_s")
        fwd = get(f"smooth {dtype} forward", "steady_s")
        if grad is not None and fwd is not None:
            add(f"smooth {dtype} gradient / forward", grad / fwd, "<=", limit, "x")
    grad = _row(rows, "smooth f32 gradient", largest)
    if grad is not None and grad["memory"] is not None:
        note = "" if largest >= 10_000 else "target is stated at 10,000 runs"
        add("smooth f32 gradient memory", grad["memory"]["total_gb"], "<", 2.0, "GB", note)
    return targets


def print_table(report: dict) -> None:
    rows = report["results"]
    anchor = report["anchor"]
    print()
    machine = report["machine"]
    print(
        f"diffgal.chemistry on {report['machine']['cpu_model']} ({report['machine']['cpu_count']} "
        f"CPUs), JAX {report['jax_version']}, {report['backend']} x{report['n_devices']} devices, "
        f"yields '{report['yields']}', load average {machine['load_average_1min_start']:.1f} "
        f"(start) / {machine['load_average_1min_end']:.1f} (end)"
    )
    s_per_run = anchor["chempy_s_per_run"]
    print(
        f"anchor: CHEMPY {s_per_run} s per run = {anchor['chempy_runs_per_s']:.2f} runs/s; "
        f"speed-up = runs/s x {s_per_run}"
    )
    header = (
        f"{'configuration':<22} {'batch':>6} {'compile s':>10} {'steady ms':>11} "
        f"{'runs/s':>10} {'speed-up':>9} {'grad/fwd':>9} {'mem GB':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        ratio = ""
        if r["kind"] == "gradient":
            fwd = _row(rows, r["name"].replace("gradient", "forward"), r["batch"])
            if fwd is not None:
                ratio = f"{r['steady_s'] / fwd['steady_s']:.2f}x"
        mem = f"{r['memory']['total_gb']:.3f}" if r["memory"] else "-"
        print(
            f"{r['name']:<22} {r['batch']:>6} {r['compile_s']:>10.2f} {r['steady_s'] * 1e3:>11.2f} "
            f"{r['runs_per_s']:>10.0f} {r['speedup_vs_chempy']:>8.0f}x {ratio:>9} {mem:>7}"
        )
    ref = report.get("chempy_tng_reference")
    if ref:
        print(
            f"\nchempy_tng(40 reference runs, faithful f64): {ref['steady_s'] * 1e3:.2f} ms steady "
            f"({ref['runs_per_s']:.0f} runs/s; first call {ref['first_call_s']:.2f} s incl. "
            f"compile), CHEMPY: {ref['chempy_s']:.1f} s"
        )
    print(f"\ntargets (spec §11), at batch {max(report['batches'])}:")
    for t in report["targets"]:
        status = "PASS" if t["pass"] else "MISS"
        note = f"  ({t['note']})" if t["note"] else ""
        print(
            f"  {status}  {t['target']:<32} {t['value']:>10.2f} {t['unit']:<6} "
            f"{t['op']} {t['threshold']:g}{note}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="batches 1, 100, 1000")
    parser.add_argument(
        "--out", default=str(HERE / "results" / "chemistry.json"), help="JSON output path"
    )
    parser.add_argument("--yields", default="tng", help="yield set: tng (default) or default")
    parser.add_argument(
        "--devices", type=int, default=1, help="shard each batch over N host CPU devices"
    )
    parser.add_argument(
        "--dtypes", default="float32,float64", help="comma-separated subset of float32,float64"
    )
    parser.add_argument(
        "--chunk",
        type=int,
        default=1000,
        help="batches above this run as a lax.map over vmapped chunks of this size (0: one vmap)",
    )
    parser.add_argument("--_worker", choices=("float32", "float64"), help=argparse.SUPPRESS)
    parser.add_argument("--_worker-out", dest="worker_out", help=argparse.SUPPRESS)
    parser.add_argument("--_batches", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.devices < 1:
        parser.error(f"--devices must be >= 1; got {args.devices}")

    if args._worker:
        batches = [int(b) for b in args._batches.split(",")]
        run_worker(
            args._worker, batches, args.yields, args.devices, args.worker_out, args.chunk
        )
        return

    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    if not set(dtypes) <= {"float32", "float64"}:
        parser.error(f"--dtypes must name float32 and/or float64; got {args.dtypes!r}")
    batches = [1, 100, 1_000] if args.quick else [1, 100, 10_000]
    yields_name, note = resolve_yields(args.yields)
    if note:
        print(f"note: {note}")

    load_start = os.getloadavg()
    if load_start[0] > 0.5 * (os.cpu_count() or 1):
        print(f"note: the machine is busy (load average {load_start[0]:.1f}); timings will suffer")
    env = dict(os.environ)
    if args.devices > 1:
        flag = f"--xla_force_host_platform_device_count={args.devices}"
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {flag}".strip()
    workers = {}
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in dtypes:
            out = pathlib.Path(tmp) / f"{dtype}.json"
            print(f"running {dtype} configurations (batches {batches}) ...", flush=True)
            cmd = [
                sys.executable, __file__, "--_worker", dtype, "--_worker-out", str(out),
                "--_batches", ",".join(map(str, batches)), "--yields", yields_name,
                "--devices", str(args.devices), "--chunk", str(args.chunk),
            ]  # fmt: skip
            subprocess.run(cmd, env=env, check=True)
            workers[dtype] = json.loads(out.read_text())

    first = next(iter(workers.values()))
    rows = [r for w in workers.values() for r in w["results"]]
    order = ["smooth f32 forward", "smooth f32 gradient", "smooth f64 forward",
             "smooth f64 gradient", "faithful f64 forward", "faithful f32 forward"]  # fmt: skip
    rows.sort(key=lambda r: (order.index(r["name"]), r["batch"]))
    reference = workers.get("float64", {}).get("chempy_tng_reference")
    report = {
        "benchmark": "diffgal.chemistry.evolve throughput",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "batches": batches,
        "yields": yields_name,
        "yields_note": note,
        "n_devices": args.devices,
        "chunk": args.chunk,
        "jax_version": first["jax_version"],
        "backend": first["backend"],
        "devices": first["devices"],
        "device_kinds": first["device_kinds"],
        "machine": {
            "cpu_count": os.cpu_count(),
            "cpu_model": _cpu_model(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "load_average_1min_start": load_start[0],
            "load_average_1min_end": os.getloadavg()[0],
        },
        "anchor": {
            "chempy_s_per_run": CHEMPY_SECONDS_PER_RUN,
            "chempy_runs_per_s": 1.0 / CHEMPY_SECONDS_PER_RUN,
            "source": "ChempyMulti TNG configuration, 2-core x86 CPU, Python 3.11 (spec §11)",
        },
        "results": rows,
        "chempy_tng_reference": reference,
    }
    report["targets"] = evaluate_targets(rows, max(batches))
    print_table(report)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
