"""Reverse-mode memory of the render grows only by O(N) inputs and cotangents (spec `ifu.md` §6).

Requirement: the peak-RSS increase of `value_and_grad` of the render w.r.t. the particles, from
N to 4N particles, is at most 200 B x 3N (RUBIX needs ~0.84 MB per particle).

Each particle count runs in a fresh subprocess (float32, one CPU device: the conftest's x64 and
fake devices are removed from its environment), so each peak is that of one gradient alone.

What is compared, and why it is robust:

- The *total* peak RSS of one steady-state gradient call, N against 4N. The difference contains
  everything that scales with N: the particle inputs, the cotangents, the residuals and any
  per-particle temporaries; the renderer, the templates and the compiled program cancel.
- The peak is taken over the second call only: the first call (tracing, XLA compilation, thread
  pools) runs, its output is dropped, and the kernel's peak mark is reset with
  `/proc/self/clear_refs` before the second. Compilation allocates ~100 MB that does not depend
  on N but is not exactly reproducible, and it would otherwise dominate the peak at small N.
- glibc's allocator is told to return freed blocks >= 64 kB to the kernel at once
  (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`), so RSS tracks the live buffers. Left at
  its default, the threshold adapts to earlier frees and freed buffers stay resident, which
  makes the baseline depend on the history of each process (tens of MB).
- Particles are drawn with numpy and copied to JAX once, so no sampler temporaries linger.
"""

import json
import os
import re
import subprocess
import sys

import pytest

N_SMALL = 100_000
BYTES_PER_PARTICLE = 200

_CHILD = r"""
import gc, json, pathlib, resource, sys, time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from diffgal.ifu import StellarParticles, get_telescope, make_renderer
from diffgal.spectra import synthetic_grid

n = int(sys.argv[1])


def rss():
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return float(line.split()[1]) * 1e3


renderer = make_renderer(
    get_telescope("MUSE"), synthetic_grid(8, 4), distance_mpc=10.0, inclination_deg=60.0,
    v_max=400.0, flux_scale=1e-20, dtype=jnp.float32,
)
rng = np.random.default_rng(0)
f32 = np.float32
particles = StellarParticles(
    jnp.asarray(rng.uniform(-0.1, 0.1, (n, 3)).astype(f32)),  # kpc: the field is +-0.12 kpc
    jnp.asarray(rng.normal(0.0, 100.0, (n, 3)).astype(f32)),
    jnp.asarray(np.full(n, 1e9 / n, f32)),
    jnp.asarray(10.0 ** rng.uniform(-1.0, 1.1, n).astype(f32)),
    jnp.asarray(rng.uniform(-1.4, 0.2, n).astype(f32)),
)
grad = eqx.filter_jit(jax.value_and_grad(lambda p, r: jnp.sum(r(p).flux ** 2)))
value, g = jax.block_until_ready(grad(particles, renderer))  # compile + first run
finite = bool(np.isfinite(float(value))) and bool(jnp.all(jnp.isfinite(g.mass)))
nonzero = float(jnp.mean(g.mass != 0))
del value, g
gc.collect()
try:
    pathlib.Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark
    reset = True
except OSError:
    reset = False
baseline = rss()
t0 = time.perf_counter()
out = jax.block_until_ready(grad(particles, renderer))
seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1e3
print(json.dumps(dict(n=n, peak=peak, baseline=baseline, seconds=seconds, reset=reset,
                      finite=finite, nonzero_mass_gradient=nonzero)))
"""


def _gradient_peak(n: int) -> dict:
    env = dict(os.environ)
    env.pop("JAX_ENABLE_X64", None)
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", env.get("XLA_FLAGS", ""))
    env["XLA_FLAGS"] = flags.strip()
    env["JAX_PLATFORMS"] = "cpu"  # RSS measures host memory
    env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    env["MALLOC_TRIM_THRESHOLD_"] = "0"
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(n)], env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, f"gradient subprocess for N={n} failed:\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self (Linux)")
def test_gradient_peak_rss_growth_is_at_most_200_bytes_per_particle():
    small = _gradient_peak(N_SMALL)
    large = _gradient_peak(4 * N_SMALL)
    growth = large["peak"] - small["peak"]
    limit = BYTES_PER_PARTICLE * 3 * N_SMALL
    report = (
        f"value_and_grad of the MUSE render (synthetic 8x4 grid, float32): peak RSS "
        f"{small['peak'] / 1e6:.1f} MB at N={N_SMALL} ({small['seconds']:.2f} s), "
        f"{large['peak'] / 1e6:.1f} MB at N={4 * N_SMALL} ({large['seconds']:.2f} s); growth "
        f"{growth / 1e6:.1f} MB = {growth / (3 * N_SMALL):.0f} B per added particle "
        f"(limit {limit / 1e6:.0f} MB = {BYTES_PER_PARTICLE} B); peak over the pre-call "
        f"baseline {(small['peak'] - small['baseline']) / 1e6:.1f} -> "
        f"{(large['peak'] - large['baseline']) / 1e6:.1f} MB; peak mark reset: "
        f"{small['reset'] and large['reset']}"
    )
    print(report)
    for r in (small, large):
        assert r["finite"], f"non-finite gradient at N={r['n']}"
        assert r["nonzero_mass_gradient"] > 0.5, (
            f"only {r['nonzero_mass_gradient']:.2f} of the mass gradients are non-zero at "
            f"N={r['n']}: the gradient this test measures is degenerate."
        )
    assert growth <= limit, report
