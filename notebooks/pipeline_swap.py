# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Swapping yields and telescopes in the end-to-end pipeline
#
# `diffgal.pipeline` composes one-zone chemistry, star particles, an IFU cube and a stellar
# abundance catalogue into one differentiable log-likelihood of six physical parameters
# (see the [pipeline page](../docs/pipeline.md)). Every part is one argument, so swapping a
# yield table or a telescope is one line. Here we build a small mock galaxy, observe it with
# three set-ups:
#
# 1. the baseline: TNG yields and a MUSE-like cube;
# 2. the same telescope with the offline `default` yield set;
# 3. the TNG yields with a MaNGA-like cube (coarser spaxels, log-sampled vacuum wavelengths,
#    a redder window, hexagonal bundle),
#
# and compare the gradient of the joint log-likelihood with respect to the six parameters at
# a point away from the truth. Each set-up observes its own mock data (made with its own
# yields and telescope), so the gradients say how strongly each set-up pulls each parameter
# back towards the truth.
#
# The templates are E-MILES when installed (`pip install "diffgal[emiles]"`); under
# `DIFFGAL_NOTEBOOK_SMALL=1` (the test suite) the notebook uses the synthetic analytic grid,
# which is **not a stellar population**, and much smaller cubes. `DIFFGAL_NOTEBOOK_OUT` chooses
# where the figures go. Without the TNG tables in `DIFFGAL_DATA_DIR` the TNG set-ups fall back
# to `default` and the yield swap is skipped (with a note).

# %%
import dataclasses
import os
import pathlib
import tempfile
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from diffgal.chemistry import GCEOptions, available_yield_sets  # noqa: E402
from diffgal.galaxy import make_mock_galaxy  # noqa: E402
from diffgal.ifu import Telescope  # noqa: E402
from diffgal.pipeline import (  # noqa: E402
    DEFAULT_PRIOR,
    PARAM_NAMES,
    GalaxyParams,
    draw_birth_times,
    make_chemistry,
    make_likelihood,
    make_pipeline,
    observe_abundances,
    observe_cube,
)
from diffgal.spectra import synthetic_grid  # noqa: E402

SMALL = os.environ.get("DIFFGAL_NOTEBOOK_SMALL", "") not in ("", "0")
OUT = pathlib.Path(
    os.environ.get("DIFFGAL_NOTEBOOK_OUT") or tempfile.mkdtemp(prefix="diffgal_notebook_")
)
OUT.mkdir(parents=True, exist_ok=True)
START = time.perf_counter()

if SMALL:
    templates = synthetic_grid(n_age=8, n_met=4, wave_min=4000.0, wave_max=7500.0)
    LABEL = "SYNTHETIC templates (not a stellar population)"
else:
    try:
        from diffgal.ifu import default_templates

        templates = default_templates("emiles")
        LABEL = "E-MILES"
    except ImportError as err:  # ppxf==8.2.6 not installed
        print(f"E-MILES unavailable ({err}); using the SYNTHETIC toy grid instead.")
        templates = synthetic_grid()
        LABEL = "SYNTHETIC templates (not a stellar population)"
HAVE_TNG = available_yield_sets()["tng"] == "available"
print(f"templates: {LABEL}; TNG yields: {'available' if HAVE_TNG else 'missing'}; "
      f"outputs go to {OUT}; small={SMALL}")

# %% [markdown]
# ## Two telescopes
#
# Both are square fields built with `Telescope.from_fov`. The MUSE-like one samples
# 5100-5700 Å (observed) linearly in air, which holds Hβ, Mg b and the Fe lines at z = 0.05; the
# MaNGA-like one has bigger spaxels, a hexagonal bundle and a log-sampled vacuum grid over
# 6100-7000 Å (Na D and Hα). The full-size run uses larger fields and more pixels.

# %%
REDSHIFT = 0.05
if SMALL:
    N_PARTICLES, N_STARS = 2000, 40
    muse_kw = dict(fov_arcsec=8.0, pixel_arcsec=1.0, n_wave=240, dwave_aa=2.5)
    manga_kw = dict(fov_arcsec=9.0, pixel_arcsec=1.5, n_wave=200)
else:
    N_PARTICLES, N_STARS = 30_000, 200
    muse_kw = dict(fov_arcsec=9.6, pixel_arcsec=0.4, n_wave=480, dwave_aa=1.25)
    manga_kw = dict(fov_arcsec=12.0, pixel_arcsec=0.5, n_wave=600)

muse_like = Telescope.from_fov(
    "MUSE-like", wave_start_aa=5100.0, lsf_fwhm_aa=2.51, medium="air", **muse_kw
)
# Log sampling: n_wave pixels from 6100 Å up to 7000 Å.
dlog10 = float(np.log10(7000.0 / 6100.0) / (manga_kw["n_wave"] - 1))
manga_like = Telescope.from_fov(
    "MaNGA-like", wave_start_aa=6100.0, dlog10_wave=dlog10, lsf_fwhm_aa=2.85, medium="vacuum",
    aperture="hexagonal", **manga_kw
)
for tel in (muse_like, manga_like):
    wave = tel.wavelength()
    print(f"{tel.name:>10}: {tel.n_x} x {tel.n_y} spaxels of {tel.pixel_arcsec}\", "
          f"{tel.n_wave} pixels {wave[0]:.0f}-{wave[-1]:.0f} Å ({tel.wave_sampling}, "
          f"{tel.medium}), aperture {tel.aperture}")

# %% [markdown]
# ## The set-ups
#
# `make_pipeline(telescope, templates, yields=...)` builds the chemistry and the renderer.
# To swap one part we keep the other: `eqx.tree_at` replaces the chemistry of a pipeline (the
# renderer and its template bank are reused), and `make_pipeline(..., chemistry=...)` puts the
# same chemistry behind another telescope.
#
# The chemistry uses `GCEOptions.smooth()` (differentiable in every parameter) with the time
# loop in one `lax.scan` (`scan_segments=1`): the same results, and a much shorter compile for
# the few evaluations made here.

# %%
options = dataclasses.replace(GCEOptions.smooth(), scan_segments=1)
render_kw = dict(redshift=REDSHIFT, inclination_deg=60.0, position_angle_deg=30.0, v_max=450.0,
                 dtype=jnp.float32)

with jax.enable_x64(True):  # scoped float64: the chemistry and the gradients
    base_yields = "tng" if HAVE_TNG else "default"
    chem_base = make_chemistry(base_yields, options=options)
    pipe_base = make_pipeline(muse_like, templates, chemistry=chem_base, **render_kw)
    setups = {f"{base_yields} + MUSE-like": pipe_base}
    if HAVE_TNG:
        pipe_yields = eqx.tree_at(lambda p: p.chemistry, pipe_base,
                                  make_chemistry("default", options=options))
        setups["default + MUSE-like"] = pipe_yields
    else:
        print("NOTE: the TNG yield tables are not in DIFFGAL_DATA_DIR, so the yield swap is "
              "skipped (run `diffgal.fetch_tng_yields()` to get them).")
    setups[f"{base_yields} + MaNGA-like"] = make_pipeline(manga_like, templates,
                                                          chemistry=chem_base, **render_kw)
for name, pipe in setups.items():
    print(f"{name:>22}: yields {pipe.chemistry.yields.name!r} ({len(pipe.columns)} abundance "
          f"columns), telescope {pipe.renderer.telescope.name} {pipe.renderer.telescope.shape}")

# %% [markdown]
# ## The mock galaxy and its observations
#
# One particle realisation makes the data and another is rendered by the model, as in a real
# analysis where the model never has the galaxy's own particles. That is why the cube term
# uses the default `normalisation="per_spaxel"`: it profiles out each spaxel's amplitude, so the
# particle shot noise in each spaxel's mass does not enter. The abundance catalogue holds
# `N_STARS` stars with 0.05 dex errors and known birth times, drawn from the truth's
# star-formation history.
#
# For each set-up we render the truth cube and observe it (photon + sky noise, S/N 30 at the
# centre, spaxels with S/N >= 3), predict the catalogue with that set-up's yields, build the
# likelihood and take its gradient at the prior means, a fraction of a prior sigma from the
# truth. The prior is left out (`prior=None`): it is the same for every set-up.
#
# Each step is compiled once per set-up (the telescope and the yield tables fix the shapes);
# in eager mode the chemistry would run op by op, far slower.

# %%
TRUTH = GalaxyParams(imf_slope=-2.4, log10_n_ia=-2.8, log10_tau_ia=-1.3, log10_sfe=-0.25,
                     log10_sfr_peak=0.5, outflow_fraction=0.5)
AT = GalaxyParams(**{n: DEFAULT_PRIOR[n][0] for n in PARAM_NAMES})  # where the gradients are
AGE_GYR = 12.5


@eqx.filter_jit
def truth_cube(pipe, params, galaxy):
    return pipe.cube(params, galaxy)


@eqx.filter_jit
def grad_loglik(like, params):
    return jax.grad(like)(params)


observe_stars = eqx.filter_jit(observe_abundances)

grads, info = {}, {}
with jax.enable_x64(True):
    truth = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), TRUTH)
    at = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), AT)
    keys = jax.random.split(jax.random.key(0), 5)
    galaxy_data = make_mock_galaxy(keys[0], N_PARTICLES, age_gyr=AGE_GYR)
    galaxy_fit = make_mock_galaxy(keys[1], N_PARTICLES, age_gyr=AGE_GYR)
    birth = draw_birth_times(keys[2], pipe_base, truth, N_STARS, AGE_GYR)
    for name, pipe in setups.items():
        t0 = time.perf_counter()
        cube = truth_cube(pipe, truth, galaxy_data)
        obs = observe_cube(keys[3], cube, snr_centre=30.0, min_snr=3.0)
        stars = observe_stars(keys[4], pipe, truth, birth, AGE_GYR, 0.05)
        like = make_likelihood(pipe, galaxy_fit, cube=obs, stars=stars, prior=None)
        grads[name] = np.asarray(grad_loglik(like, at).to_array())
        info[name] = dict(spaxels=int(np.asarray(obs.mask).sum()), clamped=int(cube.n_clamped))
        print(f"{name:>22}: {info[name]['spaxels']} spaxels x {pipe.renderer.telescope.n_wave} "
              f"pixels and {stars.n_star} stars x {len(stars.columns)} columns; "
              f"{info[name]['clamped']} of {N_PARTICLES} particles clamped to the template grid; "
              f"{time.perf_counter() - t0:.1f} s")

# %% [markdown]
# ## How the gradients change
#
# The table lists d log L / dθ at the prior means for each set-up, and the last column the
# direction of the truth (truth − evaluation point). The bar chart scales each gradient by the
# parameter's prior sigma, d log L / d(θ/σ_prior), so the six bars are comparable.

# %%
names = list(grads)
header = f"{'parameter':<18}" + "".join(f"{n:>24}" for n in names) + f"{'truth - at':>12}"
print("gradient of the joint log-likelihood (cube + abundances) at the prior means")
print(header)
for i, p in enumerate(PARAM_NAMES):
    offset = float(getattr(TRUTH, p)) - float(getattr(AT, p))
    print(f"{p:<18}" + "".join(f"{grads[n][i]:>24.4g}" for n in names) + f"{offset:>+12.3f}")

base = grads[names[0]]
for n in names[1:]:
    g = grads[n]
    cosine = float(g @ base / (np.linalg.norm(g) * np.linalg.norm(base)))
    print(f"cosine between the gradients of {names[0]!r} and {n!r}: {cosine:+.3f}")

sigma = np.asarray([DEFAULT_PRIOR[p][1] for p in PARAM_NAMES])
fig, ax = plt.subplots(figsize=(8, 3.8), constrained_layout=True)
width = 0.8 / len(names)
x = np.arange(len(PARAM_NAMES))
for k, n in enumerate(names):
    scaled = grads[n] * sigma
    ax.bar(x + (k - (len(names) - 1) / 2) * width, np.sign(scaled) * np.log10(1 + np.abs(scaled)),
           width, label=n)
ax.axhline(0.0, color="k", lw=0.6)
ax.set_xticks(x, PARAM_NAMES, rotation=20, fontsize=8)
ax.set_ylabel("sign · log10(1 + |σ_prior · ∂ log L/∂θ|)")
ax.set_title(f"gradient of the joint log-likelihood at the prior means ({LABEL})", fontsize=9)
ax.legend(fontsize=8)
fig.savefig(OUT / "gradients.png", dpi=110)
plt.close("all")
print(f"figures: {sorted(p.name for p in OUT.glob('*.png'))}; "
      f"{time.perf_counter() - START:.0f} s in all")
