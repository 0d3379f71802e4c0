"""`render`: the one-call entry point, and the streaming renderer used by the CLI."""

from __future__ import annotations

import math

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from ..spectra import TemplateGrid
from ._cube import IFUCube
from ._noise import AbstractNoise, add_noise
from ._particles import StellarParticles, as_particles, host_check_particles
from ._render import IFURenderer, default_v_max, make_renderer, rotation_matrix
from ._shard import make_mesh, render_sharded
from ._telescope import Telescope, get_telescope

_ARCSEC_PER_RAD = 648000.0 / math.pi
_RENDERERS: list = []
_TEMPLATES: dict = {}
_CACHE_SIZE = 4


@eqx.filter_jit
def _render_jit(renderer: IFURenderer, particles: StellarParticles) -> IFUCube:
    return renderer(particles)


def default_templates(name: str = "auto", **kwargs) -> TemplateGrid:
    """The best installed real template library (E-MILES first), loaded once per process."""
    from ..spectra import load_templates

    key = (name, tuple(sorted(kwargs.items())))
    if key not in _TEMPLATES:
        _TEMPLATES[key] = load_templates(name, **kwargs)
    return _TEMPLATES[key]


def _cached_renderer(key, build):
    """A small most-recently-used cache (keys hold arrays and grids, compared by value/identity)."""
    for i, (cached_key, value) in enumerate(_RENDERERS):
        if _same_key(cached_key, key):
            _RENDERERS.append(_RENDERERS.pop(i))
            return value
    value = build()
    _RENDERERS.append((key, value))
    del _RENDERERS[:-_CACHE_SIZE]
    return value


def _same_key(a, b) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if isinstance(x, TemplateGrid) or isinstance(y, TemplateGrid):
            if x is not y:
                return False
        elif isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            if not (isinstance(x, np.ndarray) and isinstance(y, np.ndarray)
                    and x.shape == y.shape and np.array_equal(x, y)):
                return False
        elif x != y:
            return False
    return True


def render(
    particles,
    telescope: str | Telescope = "MUSE",
    templates: TemplateGrid | None = None,
    *,
    distance_mpc: float | None = 10.0,
    inclination_deg: float = 0.0,
    position_angle_deg: float = 0.0,
    noise: AbstractNoise | float | None = None,
    key=None,
    redshift: float | None = None,
    rotation=None,
    psf: str | None = None,
    psf_fwhm_arcsec: float | None = None,
    velscale: float | None = None,
    v_max: float | None = None,
    spatial: str = "cic",
    chunk_size: int = 16384,
    output_units: str = "flux",
    flux_scale: float = 1.0,
    sharding: str | None = None,
    n_devices: int | None = None,
    dtype=None,
    ra_deg: float = 150.0,
    dec_deg: float = 2.0,
) -> IFUCube:
    """Render star particles into an IFU cube for a telescope.

    **Arguments:**

    - `particles`: a mapping with keys `position` (N, 3) kpc, `velocity` (N, 3) km/s, `mass`
        (N,) M_sun initial, `age` (N,) Gyr and `metallicity` (N,) [M/H], or a
        [`StellarParticles`][diffgal.ifu.StellarParticles].
    - `telescope`: a preset name (see [`telescope_presets`][diffgal.ifu.telescope_presets]) or
        a [`Telescope`][diffgal.ifu.Telescope].
    - `templates`: a [`TemplateGrid`][diffgal.spectra.TemplateGrid]; `None` means the best
        installed real library (E-MILES from `diffgal[emiles]`).
    - `distance_mpc`: distance of a nearby galaxy (z = 0), Mpc.
    - `inclination_deg`, `position_angle_deg`: the viewing angles (see
        [`rotation_matrix`][diffgal.ifu.rotation_matrix]); or pass a (3, 3) `rotation`.
    - `noise`: `None` (noiseless), a noise model, or a number (target S/N per pixel).
    - `key`: a JAX PRNG key, required with `noise`.
    - `redshift`: for a distant galaxy: spectra are redshifted and the distances come from
        Planck15 (leave `distance_mpc` at its default or pass `None`).
    - `psf`, `psf_fwhm_arcsec`: override the telescope's PSF (`"gaussian"` or `"moffat"`).
    - `velscale`, `v_max`: velocity-bin width and range in km/s (defaults: half the finest
        telescope pixel, capped at 30 km/s; the 99.9th percentile of |v_los| in the field
        rounded up to 50 km/s).
    - `spatial`: `"cic"` (area-weighted, default) or `"ngp"`.
    - `chunk_size`: particles per deposit chunk.
    - `output_units`: `"flux"` (erg/s/cm²/Å divided by `flux_scale`) or `"lsun_per_A"`.
    - `flux_scale`: 1 (default) or e.g. 1e-20 as in MUSE products.
    - `sharding`: `None` (one device), `"particles"` or `"spaxels"`; `n_devices` picks how many.
    - `dtype`: float dtype of the computation (default JAX's default float).
    - `ra_deg`, `dec_deg`: sky position of the field centre, for the FITS WCS.

    **Returns:**

    An [`IFUCube`][diffgal.ifu.IFUCube] with `.flux` (n_x, n_y, n_wave) in `cube.unit`
    (erg/s/cm²/Å by default), `.wavelength` (n_wave,) Å and `.to_fits(path)`.
    """
    api = "render"
    particles = as_particles(particles)
    host_check_particles(particles, api)
    tel = get_telescope(telescope)
    if psf is not None or psf_fwhm_arcsec is not None:
        tel = tel.replace(
            psf=psf if psf is not None else (tel.psf if tel.psf != "none" else "gaussian"),
            psf_fwhm_arcsec=psf_fwhm_arcsec if psf_fwhm_arcsec is not None else tel.psf_fwhm_arcsec,
        )
    if redshift is not None:
        if distance_mpc not in (None, 10.0):
            raise ValueError(
                f"`{api}`: give either `distance_mpc` (nearby galaxy, z = 0) or `redshift` "
                f"(distances from Planck15), not both; got distance_mpc={distance_mpc!r} and "
                f"redshift={redshift!r}."
            )
        distance_mpc = None
    if noise is not None and key is None:
        raise ValueError(
            f"`{api}`: `noise` needs a PRNG `key`, e.g. `key=jax.random.key(0)`; diffgal never "
            "uses a hidden constant key."
        )
    if templates is None:
        templates = default_templates()
    rot = (np.asarray(rotation_matrix(inclination_deg, position_angle_deg), np.float64)
           if rotation is None else np.asarray(rotation, np.float64))
    if rot.shape != (3, 3):
        raise ValueError(f"`{api}`: `rotation` must be a (3, 3) matrix; got {rot.shape}.")
    if v_max is None:
        pixel_kpc = _pixel_kpc(tel, distance_mpc, redshift)
        v_max = default_v_max(particles, rot, pixel_kpc, tel)
    key_tuple = (tel, templates, distance_mpc, redshift, rot, velscale, float(v_max), spatial,
                 chunk_size, output_units, flux_scale, str(dtype), ra_deg, dec_deg,
                 float(inclination_deg), float(position_angle_deg))
    renderer = _cached_renderer(
        key_tuple,
        lambda: make_renderer(
            tel, templates, distance_mpc=distance_mpc, redshift=redshift,
            rotation=rot if rotation is not None else None,
            inclination_deg=inclination_deg, position_angle_deg=position_angle_deg,
            velscale=velscale, v_max=float(v_max), spatial=spatial, chunk_size=chunk_size,
            output_units=output_units, flux_scale=flux_scale, dtype=dtype, ra_deg=ra_deg,
            dec_deg=dec_deg,
        ),
    )
    if sharding is None:
        if n_devices not in (None, 1):
            raise ValueError(
                f"`{api}`: `n_devices`={n_devices!r} needs `sharding='particles'` or "
                "`sharding='spaxels'`."
            )
        cube = _render_jit(renderer, particles)
    else:
        cube = render_sharded(renderer, particles, mesh=make_mesh(n_devices), mode=sharding)
    if noise is not None:
        cube = add_noise(key, cube, noise)
    return cube


def _pixel_kpc(tel: Telescope, distance_mpc, redshift) -> float:
    if redshift is None:
        if distance_mpc is None or not float(distance_mpc) > 0:
            raise ValueError(
                f"`render`: `distance_mpc` must be > 0 Mpc; got {distance_mpc!r}."
            )
        d_a = float(distance_mpc)
    else:
        from ._cosmology import angular_diameter_distance_mpc

        d_a = float(angular_diameter_distance_mpc(float(redshift)))
    return tel.pixel_arcsec / _ARCSEC_PER_RAD * d_a * 1e3


@eqx.filter_jit
def _deposit_chunk(renderer: IFURenderer, particles: StellarParticles, w, t):
    layout = renderer.layout(particles)
    dw, dt = renderer.deposit(particles, layout)
    return w + dw, t + dt


@eqx.filter_jit
def _diagnostics(renderer: IFURenderer, particles: StellarParticles):
    return renderer.diagnostics(particles)


@eqx.filter_jit
def _finish_streaming(renderer: IFURenderer, w, t, diagnostics):
    w, t = renderer.blur_and_crop(w, t, renderer.margin, renderer.telescope.n_x)
    return renderer.finish(renderer.synthesise(w, renderer.mask), t, diagnostics)


def render_streaming(renderer: IFURenderer, chunks, *, n_chunks: int | None = None,
                     progress: bool = True) -> IFUCube:
    """Render particles that arrive in chunks (e.g. read from HDF5 piece by piece).

    The deposit grid is accumulated on the device chunk by chunk, with a tqdm progress bar,
    then blurred and synthesised once. The result equals `renderer(all particles)`.

    **Arguments:**

    - `renderer`: an [`IFURenderer`][diffgal.ifu.IFURenderer].
    - `chunks`: an iterable of [`StellarParticles`][diffgal.ifu.StellarParticles].
    - `n_chunks`: the number of chunks, for the progress bar.
    - `progress`: show the progress bar.

    **Returns:**

    The noiseless [`IFUCube`][diffgal.ifu.IFUCube].
    """
    from tqdm.auto import tqdm

    tel = renderer.telescope
    m = renderer.margin
    shape = (tel.n_x + 2 * m, tel.n_y + 2 * m)
    dtype = renderer.bank.dtype
    w = jnp.zeros(shape + (renderer.n_ssp * renderer.n_k,), dtype)
    t = jnp.zeros(shape + (4,), dtype)
    n_clamped = jnp.zeros((), jnp.int32)
    clipped = jnp.zeros((), dtype)
    n_out = jnp.zeros((), jnp.int32)
    for chunk in tqdm(chunks, total=n_chunks, disable=not progress, desc="deposit",
                      unit="chunk"):
        host_check_particles(chunk, "render_streaming")
        w, t = _deposit_chunk(renderer, chunk, w, t)
        a, b, c = _diagnostics(renderer, chunk)
        n_clamped, clipped, n_out = n_clamped + a, clipped + b, n_out + c
    return _finish_streaming(renderer, w, t, (n_clamped, clipped, n_out))
