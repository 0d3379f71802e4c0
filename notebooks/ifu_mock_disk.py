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
# # A mock MUSE cube of a rotating disc
#
# We sample a rotating exponential disc of star particles, render it into a MUSE-like IFU cube
# with real single-stellar-population templates, add noise at a target S/N, look at the
# white-light image, the velocity field and a few spectra, and write the cube to FITS.
#
# The templates are E-MILES (Vazdekis et al. 2016), read from the `ppxf==8.2.6` package
# (`pip install "diffgal[emiles]"`; non-commercial licence). Without it the notebook falls back
# to `diffgal.spectra.synthetic_grid()`, an analytic toy grid that is **not a stellar
# population** and is labelled as such in every figure. Set `DIFFGAL_NOTEBOOK_SMALL=1` for a
# smaller cube and `DIFFGAL_NOTEBOOK_OUT` to choose where the figures and the FITS file go.

# %%
import os
import pathlib
import tempfile
import time

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from diffgal.galaxy import exponential_disk  # noqa: E402
from diffgal.ifu import (  # noqa: E402
    TargetSNR,
    get_telescope,
    plot_spectra,
    plot_velocity_map,
    plot_white_light,
    quicklook,
    render,
    rotation_matrix,
)
from diffgal.spectra import load_emiles, synthetic_grid  # noqa: E402

SMALL = os.environ.get("DIFFGAL_NOTEBOOK_SMALL", "") not in ("", "0")
OUT = pathlib.Path(
    os.environ.get("DIFFGAL_NOTEBOOK_OUT") or tempfile.mkdtemp(prefix="diffgal_notebook_")
)
OUT.mkdir(parents=True, exist_ok=True)
START = time.perf_counter()

try:
    grid = load_emiles()
    LABEL = "E-MILES"
except ImportError as err:  # ppxf==8.2.6 not installed
    print(f"E-MILES unavailable ({err}); using the SYNTHETIC toy grid instead.")
    grid = synthetic_grid()
    LABEL = "SYNTHETIC templates (not a stellar population)"
print(f"templates: {LABEL}, {grid.flux.shape[0]} ages x {grid.flux.shape[1]} [M/H] x "
      f"{grid.flux.shape[2]} wavelengths; outputs go to {OUT}; small={SMALL}")

# %% [markdown]
# ## The telescope and the galaxy
#
# The `MUSE` preset is a 5" x 5" field of 25 x 25 spaxels of 0.2", 4700-9351 Å at 1.25 Å with a
# 2.51 Å line-spread function (air wavelengths). We stop the band at 8886 Å: E-MILES has no
# prediction beyond 8950 Å for its youngest populations (those spectra are 0 there), and this
# disc still forms stars. At 10 Mpc a spaxel is 9.7 pc and the field
# 0.24 kpc, so the disc is scaled to fit it: scale length 0.1 kpc, a rotation curve that turns
# over at 0.03 kpc and reaches 150 km/s, and a central dispersion of 80 km/s. The small run uses
# 11 x 11 spaxels of 0.45" over 4700-6700 Å.

# %%
DISTANCE_MPC = 10.0
INCLINATION_DEG, POSITION_ANGLE_DEG = 60.0, 30.0
telescope = get_telescope("MUSE").replace(n_wave=3350)  # 4700-8886 Å
N_STAR = 400_000
if SMALL:
    telescope = telescope.replace(n_x=11, n_y=11, pixel_arcsec=0.45, n_wave=1601)
    N_STAR = 50_000

particles = exponential_disk(
    jax.random.key(0), N_STAR, mass_msun=1e9, r_d_kpc=0.1, h_z_kpc=0.01, v_flat_kms=150.0,
    r_turn_kpc=0.03, sigma0_kms=80.0,
)
print(f"{N_STAR} particles; {telescope.n_x} x {telescope.n_y} spaxels of "
      f"{telescope.pixel_arcsec}\", {telescope.n_wave} wavelengths")

# %% [markdown]
# ## Rendering
#
# `render` rotates the particles to the sky (inclination 60°, position angle 30°), deposits
# them on the spaxel grid with cloud-in-cell weights, and sums the Doppler-shifted, LSF-matched
# templates; `TargetSNR(30)` then adds Gaussian noise with S/N = 30 per pixel (the mean flux of
# each spaxel over the band divided by 30). The cube also carries light-weighted truth maps of
# the line-of-sight velocity and dispersion, computed from the particles with the same weights.

# %%
t0 = time.perf_counter()
cube = render(
    particles, telescope, grid, distance_mpc=DISTANCE_MPC, inclination_deg=INCLINATION_DEG,
    position_angle_deg=POSITION_ANGLE_DEG, noise=TargetSNR(30.0), key=jax.random.key(1),
)
jax.block_until_ready(cube.flux)
meta = dict(cube.meta)
print(f"rendered {cube.shape} (n_x, n_y, n_wave) in {time.perf_counter() - t0:.1f} s; "
      f"unit {cube.unit}")
print(f"spaxel {meta['pixel_kpc'] * 1e3:.1f} pc, velocity bins {meta['velscale_kms']} km/s up to "
      f"+-{meta['v_max_kms']} km/s, effective LSF FWHM {meta['lsf_fwhm_effective_aa']:.2f} Å")
print(f"particles outside the field: {int(cube.n_outside_fov)}; clamped to the template grid "
      f"(ages below {10 ** float(grid.log_age_gyr[0]):.3f} Gyr): {int(cube.n_clamped)}")

# Particles per spaxel, from the same rotation and pixel size (nearest spaxel of the centre).
sky = np.asarray(particles.position) @ np.asarray(
    rotation_matrix(INCLINATION_DEG, POSITION_ANGLE_DEG)).T
ix = np.floor(sky[:, 0] / meta["pixel_kpc"] + telescope.n_x / 2).astype(int)
iy = np.floor(sky[:, 1] / meta["pixel_kpc"] + telescope.n_y / 2).astype(int)
inside = (ix >= 0) & (ix < telescope.n_x) & (iy >= 0) & (iy < telescope.n_y)
counts = np.zeros((telescope.n_x, telescope.n_y), int)
np.add.at(counts, (ix[inside], iy[inside]), 1)
velocity = np.asarray(cube.velocity_map)
print(f"particles per spaxel: {counts.min()}-{counts.max()}; truth v_los "
      f"{np.nanmin(velocity):.0f} to {np.nanmax(velocity):.0f} km/s")

# %% [markdown]
# ## White light, velocity field and spectra
#
# Maps are drawn as a FITS viewer shows them (x to the right, y up, offsets in arcsec). The disc
# turns counter-clockwise seen from +z, so after the tilt about the x axis its +x side recedes;
# the position angle then turns the image by 30° from +x towards +y, which puts the receding
# side (red) at the upper right.

# %%
ax = plot_white_light(cube)
ax.set_title(f"white light ({LABEL})", fontsize=9)
ax.figure.savefig(OUT / "white_light.png", dpi=100)

ax = plot_velocity_map(cube)
ax.set_title("light-weighted v_los (particle truth)", fontsize=9)
ax.figure.savefig(OUT / "velocity_map.png", dpi=100)

centre = (telescope.n_x // 2, telescope.n_y // 2)
receding = np.unravel_index(np.nanargmax(velocity), velocity.shape)
ax = plot_spectra(cube, spaxels=[centre, tuple(int(k) for k in receding)])
ax.set_title(f"spectra, S/N 30 per pixel ({LABEL})", fontsize=9)
ax.figure.savefig(OUT / "spectra.png", dpi=100)

fig = quicklook(cube, OUT / "quicklook.png")
plt.close("all")

# %% [markdown]
# The Doppler shift is visible in the spectra: zoomed on the Mg b and Fe lines, the spectrum of
# the most receding spaxel is shifted to the red of the central one.

# %%
wave = np.asarray(cube.wavelength)
zoom = (wave > 5150) & (wave < 5300)
fig, ax = plt.subplots(figsize=(7, 3.2), constrained_layout=True)
for (i, j), name in ((centre, "centre"), (receding, "receding")):
    spectrum = np.asarray(cube.flux[i, j])
    ax.plot(wave[zoom], spectrum[zoom] / np.median(spectrum[zoom]), lw=1,
            label=f"{name} ({int(i)}, {int(j)}): v_los = {velocity[i, j]:.0f} km/s")
ax.set_xlabel(f"wavelength [Å, {cube.medium}]")
ax.set_ylabel("normalised flux")
ax.set_title(f"Mg b region ({LABEL})", fontsize=9)
ax.legend(fontsize=8)
fig.savefig(OUT / "spectra_zoom.png", dpi=100)

# %% [markdown]
# ## Writing the cube to FITS
#
# `cube.to_fits` writes a MUSE-like file: the flux and variance cubes as (n_wave, n_y, n_x)
# image extensions with a celestial and spectral WCS, and the provenance in the header.

# %%
from astropy.io import fits  # noqa: E402

path = OUT / "ifu_mock_disk.fits"
cube.to_fits(path)
with fits.open(path) as hdul:
    hdul.info()
    data = next(h for h in hdul if h.data is not None and h.data.ndim == 3)
    header = data.header
    print(f"FITS written: {path.name}, {path.stat().st_size / 1e6:.1f} MB; first cube HDU "
          f"{data.name!r} of shape {data.data.shape}, BUNIT {header.get('BUNIT')!r}, "
          f"CTYPE3 {header.get('CTYPE3')!r}")
    assert data.data.shape == cube.shape[::-1]

print(f"outputs: {sorted(p.name for p in OUT.iterdir())}; "
      f"{time.perf_counter() - START:.0f} s in all")
