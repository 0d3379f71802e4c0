"""`diffgal demo`: mock galaxy -> observations -> joint fit -> table, plots and summary.json."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from ._params import DEFAULT_PRIOR, PARAM_NAMES, SUPPORT, GalaxyParams

#: The truth of the demo galaxy.
DEMO_TRUTH = dict(
    imf_slope=-2.4, log10_n_ia=-2.8, log10_tau_ia=-1.3, log10_sfe=-0.25, log10_sfr_peak=0.5,
    outflow_fraction=0.5,
)


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo. `quick()` is the CI-sized variant."""

    n_particles: int = 100_000
    n_stars: int = 500
    n_spaxels: int = 24  # per side, 0.4" spaxels (2x2-binned MUSE)
    pixel_arcsec: float = 0.4
    n_wave: int = 1200  # MUSE sampling from 4750 Å, 1.25 Å
    redshift: float = 0.05
    inclination_deg: float = 60.0
    position_angle_deg: float = 30.0
    age_gyr: float = 12.5
    snr_centre: float = 30.0
    min_snr: float = 5.0
    abundance_error: float = 0.05
    steps: int = 150
    learning_rate: float = 0.05
    start_offset_sigma: float = 1.0  # the start is truth + this x prior sigma x N(0, 1)
    sampling: str = "qmc"  # particle sampling of the mock and the fit (see make_mock_galaxy)
    n_shot_realisations: int = 6  # extra data realisations for the shot-noise covariance
    # The mock data are rendered from this many times more particles than the fit uses: the
    # data's own age shot noise, acting through the per-spaxel amplitude, biases the SFR peak by
    # ~1 sigma at equal numbers and falls as 1/N (a real galaxy has none).
    data_particle_factor: int = 10

    @classmethod
    def quick(cls) -> DemoConfig:
        return cls(n_particles=20_000, n_stars=200, n_spaxels=12, pixel_arcsec=0.8, n_wave=500,
                   steps=60)

    @classmethod
    def tiny(cls) -> DemoConfig:
        """For tests: a few thousand particles, an 8x8 cube of 200 pixels, 60 stars."""
        return cls(n_particles=3000, n_stars=60, n_spaxels=8, pixel_arcsec=1.2, n_wave=200,
                   steps=150, min_snr=3.0)


def demo_telescope(cfg: DemoConfig):
    from ..ifu import Telescope

    return Telescope.from_fov(
        "MUSE-demo", fov_arcsec=cfg.n_spaxels * cfg.pixel_arcsec, pixel_arcsec=cfg.pixel_arcsec,
        wave_start_aa=4750.0, dwave_aa=1.25, n_wave=cfg.n_wave, lsf_fwhm_aa=2.51, medium="air",
    )


def demo_templates():
    """E-MILES when installed, else the synthetic grid; returns (grid, label, is_fallback)."""
    from ..spectra import load_templates

    try:
        from ..ifu import default_templates

        grid = default_templates("emiles")
        return grid, "E-MILES (ppxf 8.2.6)", False
    except ImportError:
        grid = load_templates("synthetic", n_age=12, n_met=6)
        return grid, ("FALLBACK: synthetic analytic grid (not a stellar population; install "
                      "diffgal[emiles] for E-MILES)"), True


def demo_setup(seed: int = 0, cfg: DemoConfig | None = None, *, yields="auto", templates=None,
               telescope=None, truth: GalaxyParams | None = None):
    """Everything the demo and the recovery study need: pipeline, truth, observations.

    The observations are made from one particle realisation (with `data_particle_factor` times
    more particles) and noise draw; the likelihood renders a *different* realisation.

    **Returns:** a dict with `pipeline`, `truth`, `galaxy_data`, `galaxy_fit`, `cube`
    (noiseless truth cube), `obs` ([`CubeObservation`][diffgal.pipeline.CubeObservation]),
    `stars`, `start`, `template_label`, `template_fallback`, `config`, and `galaxy_extra`
    (further realisations of the data's sampler, for
    [`shot_noise_covariance`][diffgal.pipeline.shot_noise_covariance]).
    """
    from ..galaxy import make_mock_galaxy
    from ._model import make_pipeline
    from ._observe import draw_birth_times, observe_abundances, observe_cube

    cfg = DemoConfig() if cfg is None else cfg
    if templates is None:
        templates, label, fallback = demo_templates()
    else:
        label, fallback = templates.name, False
    tel = demo_telescope(cfg) if telescope is None else telescope
    pipe = make_pipeline(
        tel, templates, yields=yields, redshift=cfg.redshift,
        inclination_deg=cfg.inclination_deg, position_angle_deg=cfg.position_angle_deg,
        velscale=30.0, v_max=450.0, dtype=jnp.float32,
    )
    dtype = jnp.result_type(float)
    truth = GalaxyParams(**DEMO_TRUTH) if truth is None else truth
    truth = jax.tree.map(lambda x: jnp.asarray(x, dtype), truth)
    keys = jax.random.split(jax.random.key(seed), 6)
    def sample(k, n):
        return make_mock_galaxy(k, n, age_gyr=cfg.age_gyr, sampling=cfg.sampling)

    n_data = cfg.n_particles * cfg.data_particle_factor
    galaxy_data = sample(keys[0], n_data)
    galaxy_fit = sample(keys[1], cfg.n_particles)
    galaxy_extra = [sample(jax.random.fold_in(keys[0], 1 + k), n_data)
                    for k in range(cfg.n_shot_realisations)]
    cube = jax.jit(lambda p, g, m: m.cube(p, g))(truth, galaxy_data, pipe)
    obs = observe_cube(keys[2], cube, snr_centre=cfg.snr_centre, min_snr=cfg.min_snr)
    birth = draw_birth_times(keys[3], pipe, truth, cfg.n_stars, cfg.age_gyr)
    stars = observe_abundances(keys[4], pipe, truth, birth, cfg.age_gyr, cfg.abundance_error)
    offsets = np.asarray(jax.random.normal(keys[5], (len(PARAM_NAMES),)))
    start = {}
    for i, name in enumerate(PARAM_NAMES):
        lo, hi = SUPPORT[name]
        step = cfg.start_offset_sigma * DEFAULT_PRIOR[name][1] * offsets[i]
        x = float(getattr(truth, name)) + step
        margin = 0.02 * (hi - lo)
        start[name] = float(np.clip(x, lo + margin, hi - margin))
    return dict(
        pipeline=pipe, truth=truth, galaxy_data=galaxy_data, galaxy_fit=galaxy_fit,
        galaxy_extra=galaxy_extra, cube=cube,
        obs=obs, stars=stars, start=GalaxyParams(**start), template_label=label,
        template_fallback=fallback, config=cfg,
    )


def run_demo(out: str | os.PathLike, *, quick: bool = False, seed: int = 0,
             show_progress: bool = True, plots: bool = True, echo=print,
             config: DemoConfig | None = None) -> dict:
    """Run the demo and write `summary.json` (and the plots) into `out`.

    `config` overrides the sizes (default: `DemoConfig()`, or `DemoConfig.quick()` with
    `quick=True`).

    **Returns:** the summary dictionary.
    """
    from ._fit import fit, total_uncertainty
    from ._observe import make_likelihood

    t0 = time.perf_counter()
    os.makedirs(out, exist_ok=True)
    cfg = config if config is not None else (DemoConfig.quick() if quick else DemoConfig())
    with jax.enable_x64(True):  # scoped: chemistry and the fit in float64, cube in float32
        s = demo_setup(seed, cfg)
        pipe = s["pipeline"]
        echo(f"templates: {s['template_label']}")
        echo(f"yields: {pipe.chemistry.yields.name}; telescope: {pipe.renderer.telescope.name} "
             f"{pipe.renderer.telescope.shape}; particles: {cfg.n_particles} (fit), "
             f"{cfg.n_particles * cfg.data_particle_factor} (mock data); stars: "
             f"{cfg.n_stars}")
        like = make_likelihood(pipe, s["galaxy_fit"], cube=s["obs"], stars=s["stars"])
        result = fit(like, s["start"], steps=cfg.steps, learning_rate=cfg.learning_rate,
                     show_progress=show_progress)
        result = total_uncertainty(like, result, s["galaxy_extra"])
        truth, start = s["truth"], s["start"]
        table = {}
        for i, name in enumerate(result.free):
            est, sig = float(getattr(result.params, name)), float(result.sigma[i])
            tr = float(getattr(truth, name))
            table[name] = dict(truth=tr, start=float(getattr(start, name)), estimate=est,
                               sigma=sig, sigma_laplace=float(result.sigma_laplace[i]),
                               pull=(est - tr) / sig if sig > 0 else float("nan"))
        terms = {k: float(v) for k, v in like.terms(result.params).items()}
        n_pix = int(np.asarray(s["obs"].mask).sum()) * pipe.renderer.telescope.n_wave
        cube = s["cube"]
        summary = dict(
            parameters=table,
            wall_time_s=None,
            template_library=s["template_label"],
            template_fallback=bool(s["template_fallback"]),
            yield_set=pipe.chemistry.yields.name,
            telescope=pipe.renderer.telescope.name,
            cube_shape=list(pipe.renderer.telescope.shape),
            n_particles=cfg.n_particles,
            n_particles_data=cfg.n_particles * cfg.data_particle_factor,
            n_stars=cfg.n_stars,
            n_spaxels_fitted=int(np.asarray(s["obs"].mask).sum()),
            cube_chi2_per_pixel=-2.0 * terms["cube"] / n_pix,
            abundance_loglik=terms["abundances"],
            n_particles_clamped_to_template_grid=int(cube.n_clamped),
            fit=dict(n_adam=result.n_adam, n_newton=result.n_newton,
                     stopped_early=result.stopped_early,
                     hessian_positive_definite=result.hessian_ok,
                     covariance=np.asarray(result.covariance).tolist(), free=list(result.free)),
            seed=seed,
            quick=quick,
            device=str(jax.devices()[0].device_kind),
            jax_version=jax.__version__,
        )
        echo(_format_table(table))
        if plots:
            try:
                _plots(out, s, result, echo)
            except ImportError as err:  # matplotlib missing
                echo(f"plots skipped: {err} (pip install 'diffgal[plot]')")
    summary["wall_time_s"] = time.perf_counter() - t0
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    echo(f"wrote {os.path.join(out, 'summary.json')} ({summary['wall_time_s']:.1f} s)")
    return summary


def _format_table(table: dict) -> str:
    lines = [f"{'parameter':<18}{'truth':>9}{'start':>9}{'fit':>9}{'sigma':>9}"
             f"{'(Laplace)':>10}{'pull':>7}"]
    for name, r in table.items():
        lines.append(f"{name:<18}{r['truth']:>9.3f}{r['start']:>9.3f}{r['estimate']:>9.3f}"
                     f"{r['sigma']:>9.4f}{r['sigma_laplace']:>10.4f}{r['pull']:>7.2f}")
    lines.append("sigma: Laplace + particle shot noise (sandwich over extra realisations); "
                 "pull = (fit - truth) / sigma")
    return "\n".join(lines)


# --- plots -----------------------------------------------------------------------------------


def _projected_maps(pipe, particles):
    """Mass-weighted [M/H] and particle-count maps on the cube's spaxel grid (NGP)."""
    r = pipe.renderer
    tel = r.telescope
    pos = np.asarray(particles.position, np.float64) @ np.asarray(r.rotation, np.float64).T
    pix = float(r.pixel_kpc)
    ix = np.floor(pos[:, 0] / pix + tel.n_x / 2).astype(int)
    iy = np.floor(pos[:, 1] / pix + tel.n_y / 2).astype(int)
    ok = (ix >= 0) & (ix < tel.n_x) & (iy >= 0) & (iy < tel.n_y)
    m = np.asarray(particles.mass, np.float64)[ok]
    mh = np.asarray(particles.metallicity, np.float64)[ok]
    mass = np.zeros((tel.n_x, tel.n_y))
    np.add.at(mass, (ix[ok], iy[ok]), m)
    mmh = np.zeros((tel.n_x, tel.n_y))
    np.add.at(mmh, (ix[ok], iy[ok]), m * mh)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mass > 0, mmh / mass, np.nan)


def _plots(out, s, result, echo):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pipe, cube, obs = s["pipeline"], s["cube"], s["obs"]
    written = []

    def save(fig, name):
        path = os.path.join(out, name)
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(name)

    # White-light image of the observed cube.
    wl = np.asarray(jnp.sum(obs.flux, -1)) * 1.25
    fig, ax = plt.subplots(figsize=(4.5, 4))
    im = ax.imshow(np.log10(np.maximum(wl, wl.max() * 1e-4)).T, origin="lower")
    ax.contour(np.asarray(obs.mask).T.astype(float), levels=[0.5], colors="w", linewidths=0.8)
    fig.colorbar(im, ax=ax, label=f"log10 white light [{cube.unit} Å]")
    ax.set_title("observed white-light image (contour: fitted spaxels)")
    save(fig, "white_light.png")

    # Velocity and [M/H] maps (truth particles) next to the best fit's.
    particles_fit = pipe.particles(result.params, s["galaxy_fit"])
    particles_true = pipe.particles(s["truth"], s["galaxy_data"])
    v = np.asarray(cube.velocity_map)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    im = axes[0].imshow(v.T, origin="lower", cmap="RdBu_r")
    fig.colorbar(im, ax=axes[0], label="v_los [km/s]")
    axes[0].set_title("light-weighted velocity (truth cube)")
    for ax, p, title in ((axes[1], particles_true, "truth"), (axes[2], particles_fit, "fit")):
        im = ax.imshow(_projected_maps(pipe, p).T, origin="lower", vmin=-0.8, vmax=0.5)
        fig.colorbar(im, ax=ax, label="mass-weighted [M/H]")
        ax.set_title(f"[M/H] map ({title})")
    save(fig, "maps.png")

    # Abundance planes with model tracks.
    stars = s["stars"]
    t_obs = s["galaxy_fit"].age_gyr
    tt = jnp.linspace(0.6, t_obs, 200)
    tracks = {
        "truth": np.asarray(pipe.abundances(s["truth"], tt, t_obs)),
        "start": np.asarray(pipe.abundances(s["start"], tt, t_obs)),
        "fit": np.asarray(pipe.abundances(result.params, tt, t_obs)),
    }
    cols = pipe.columns
    n = len(cols) - 1
    ncol = min(3, n)
    nrow = math.ceil(n / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.4 * nrow), squeeze=False)
    vals = np.asarray(stars.values)
    errs = np.asarray(stars.errors)
    for k in range(n):
        ax = axes.flat[k]
        ax.errorbar(vals[:, 0], vals[:, k + 1], xerr=errs[:, 0], yerr=errs[:, k + 1], fmt=".",
                    ms=2, alpha=0.3, color="grey", lw=0.5, label="stars")
        for name, style in (("truth", "k-"), ("start", "C1:"), ("fit", "C0--")):
            ax.plot(tracks[name][:, 0], tracks[name][:, k + 1], style, label=name)
        ax.set_xlabel(cols[0])
        ax.set_ylabel(cols[k + 1])
        ax.set_xlim(-1.2, 0.7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    save(fig, "abundance_planes.png")

    # Loss curve.
    fig, ax = plt.subplots(figsize=(5, 3.5))
    loss = np.asarray(result.loss_history)
    ax.plot(np.arange(len(loss)), loss - loss.min() + 1.0)
    ax.axvline(result.n_adam - 0.5, color="grey", ls=":", label="Adam -> Newton")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("-log p - min + 1")
    ax.legend()
    save(fig, "loss_curve.png")

    # Corner plot of the Laplace posterior.
    if result.hessian_ok:
        fig = corner_plot(np.asarray(result.params.to_array())[[PARAM_NAMES.index(n) for n in
                                                                  result.free]],
                          np.asarray(result.covariance), result.free,
                          truth=[float(getattr(s["truth"], n)) for n in result.free])
        save(fig, "corner.png")
    echo("plots: " + ", ".join(written))


def corner_plot(mean, cov, names, truth=None, n_samples: int = 4000, seed: int = 0):
    """A corner plot of the Gaussian N(mean, cov): histograms and 1/2-sigma ellipses."""
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    samples = rng.multivariate_normal(mean, cov, n_samples)
    k = len(names)
    fig, axes = plt.subplots(k, k, figsize=(1.9 * k, 1.9 * k), squeeze=False)
    for i in range(k):
        for j in range(k):
            ax = axes[i, j]
            if j > i:
                ax.axis("off")
                continue
            if i == j:
                ax.hist(samples[:, i], 40, histtype="step", color="C0")
                if truth is not None:
                    ax.axvline(truth[i], color="k")
                ax.set_yticks([])
            else:
                ax.plot(samples[:, j], samples[:, i], ",", alpha=0.3, color="C0")
                if truth is not None:
                    ax.plot(truth[j], truth[i], "k+", ms=8)
            if i == k - 1:
                ax.set_xlabel(names[j], fontsize=7)
            else:
                ax.set_xticklabels([])
            if j == 0 and i > 0:
                ax.set_ylabel(names[i], fontsize=7)
            elif j > 0:
                ax.set_yticklabels([])
            ax.tick_params(labelsize=6)
    fig.suptitle("Laplace posterior (black: truth)", fontsize=9)
    return fig
