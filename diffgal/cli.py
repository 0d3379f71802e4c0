"""The `diffgal` command.

`diffgal info` reports the installation; `diffgal chemistry` runs one one-zone chemical evolution
model and prints the abundances of the star born at the end of it. Run `diffgal --help` for the
options. This module is application code: unlike the library, it may switch JAX to float64.
"""

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_TAU_IA_CHEMPY = 0.04  # Gyr; the value sbi-chempy's simulator uses (spec §2)
_PLANCK15_AGE = 13.797617  # Gyr
_PLOT_MIN_FE_H = -4.0  # tracks are drawn from this [Fe/H] on


class _CLIError(Exception):
    """A problem with the command line or its inputs: printed without a traceback, exit code 2."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `diffgal` command.

    **Arguments:**

    - `argv`: the command-line arguments without the program name; `None` reads `sys.argv[1:]`.

    **Returns:**

    The exit status: 0 on success, 1 when a chemistry run was rejected by the model, 2 for a
    usage error (bad arguments, missing data files).
    """
    parser = _make_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except _CLIError as error:
        print(f"diffgal {args.command}: error: {error}", file=sys.stderr)
        return 2


def _make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffgal", description="Differentiable galaxy modelling in JAX."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = commands.add_parser(
        "info", help="show versions, devices, the data directory and available yield sets"
    )
    info.add_argument("--data-dir", type=Path, default=None, help="data directory to inspect")
    info.set_defaults(run=_info)

    chem = commands.add_parser(
        "chemistry",
        help="run the one-zone chemical evolution model and print the final abundances",
        description=(
            "Evolve one one-zone chemical evolution model (CHEMPY TNG configuration) up to the "
            "birth time and print [X/H] and [X/Fe] of the star born then."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    chem.add_argument("--alpha-imf", type=float, default=-2.3, help="high-mass IMF slope")
    chem.add_argument("--log10-n-ia", type=float, default=-2.89, help="log10 SN Ia per Msun")
    chem.add_argument(
        "--log10-tau-ia",
        type=float,
        default=math.log10(_TAU_IA_CHEMPY),
        help="log10 SN Ia delay time [Gyr]",
    )
    chem.add_argument("--log10-sfe", type=float, default=-0.3, help="log10 SF efficiency [1/Gyr]")
    chem.add_argument("--log10-sfr-peak", type=float, default=0.55, help="log10 SFH peak [Gyr]")
    chem.add_argument("--x-out", type=float, default=0.5, help="outflow fraction of returns")
    chem.add_argument("--t-birth", type=float, default=12.0, help="birth time [Gyr]")
    chem.add_argument("--mode", choices=("faithful", "smooth"), default="faithful")
    chem.add_argument(
        "--yields",
        default="auto",
        help="yield set: 'tng', 'default' or 'auto' (tng when its tables are found, else default)",
    )
    chem.add_argument(
        "--data-dir", type=Path, default=None, help="data directory (default: $DIFFGAL_DATA_DIR)"
    )
    chem.add_argument(
        "--x64",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="compute in float64",
    )
    chem.add_argument("--plot", type=Path, default=None, metavar="PATH", help="save tracks here")
    chem.add_argument(
        "--json", type=Path, default=None, metavar="PATH", help="write the abundances as JSON"
    )
    chem.set_defaults(run=_chemistry)
    _add_ifu_parser(commands)
    _add_lagrangian_parser(commands)
    _add_infer_parser(commands)
    return parser


def _add_infer_parser(commands) -> None:
    inf = commands.add_parser(
        "infer",
        help="inference: simulate, train emulator/NPE, the headline, compare yield sets",
    )
    sub = inf.add_subparsers(dest="infer_command", required=True, metavar="INFER_COMMAND")
    fmt = argparse.ArgumentDefaultsHelpFormatter

    head = sub.add_parser(
        "headline",
        help="global alpha_IMF and log10 N_Ia from a mock galaxy: methods a, b, c and MAP",
        description=(
            "Simulate the training set (faithful mode), train the emulator and the marginal NPE "
            "(cached), draw a mock galaxy from the model and report the Gaussian product (a), "
            "the factorised potential (b), hierarchical NUTS (c) and the joint MAP side by side "
            "in OUT/summary.json."
        ),
        formatter_class=fmt,
    )
    head.add_argument("--stars", type=int, default=1000, help="stars in the mock galaxy")
    head.add_argument("--seed", type=int, default=0, help="seed of the mock galaxy")
    head.add_argument("--out", type=Path, required=True, help="output folder")
    head.add_argument("--train-seed", type=int, default=0, help="seed of the training set")
    head.add_argument("--n-train", type=int, default=100_000, help="training simulations")
    head.add_argument("--cache", type=Path, default=None,
                      help="folder for simulations and trained models (default OUT/cache)")
    head.add_argument("--methods", default="a,b,c,map", help="comma-separated: a, b, c, map")
    head.add_argument("--nuts-warmup", type=int, default=300, help="NUTS warm-up (method c)")
    head.add_argument("--nuts-samples", type=int, default=300, help="NUTS draws (method c)")
    head.add_argument("--map-steps", type=int, default=300, help="Adam steps of the MAP")
    head.add_argument("--coverage-sets", type=int, default=0,
                      help="independent mock galaxies for the 68%% coverage of a and b")
    head.add_argument("--coverage-stars", type=int, default=100,
                      help="stars per coverage galaxy")
    head.add_argument("--data-dir", type=Path, default=None, help="diffgal data directory")
    head.add_argument("--x64", action=argparse.BooleanOptionalAction, default=False,
                      help="compute in float64")
    head.add_argument("--no-progress", action="store_true", help="hide progress bars")
    head.set_defaults(run=_infer_headline)

    sim = sub.add_parser(
        "simulate", help="simulate a training set into HDF5 shards (resumable)",
        formatter_class=fmt,
    )
    sim.add_argument("--n", type=int, required=True, help="number of runs")
    sim.add_argument("--out", type=Path, required=True, help="output folder")
    sim.add_argument("--seed", type=int, default=0, help="random seed")
    sim.add_argument("--mode", choices=("faithful", "smooth"), default="faithful")
    sim.add_argument("--yields", default="tng", help="yield set")
    sim.add_argument("--shard-size", type=int, default=20_000, help="runs per shard")
    sim.add_argument("--data-dir", type=Path, default=None, help="diffgal data directory")
    sim.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    sim.set_defaults(run=_infer_simulate)

    train = sub.add_parser(
        "train", help="train the emulator or an NPE on a simulated set (checkpointed)",
        formatter_class=fmt,
    )
    train.add_argument("what", choices=("emulator", "npe", "npe-globals"))
    train.add_argument("--sims", type=Path, required=True, help="folder from `infer simulate`")
    train.add_argument("--out", type=Path, required=True, help="model file to write")
    train.add_argument("--seed", type=int, default=0, help="random seed")
    train.add_argument("--epochs", type=int, default=100, help="maximum epochs")
    train.add_argument("--noise", type=float, default=0.05, help="NPE noise [dex]")
    train.add_argument("--embedding", default=None,
                       help="NPE summary network OUTPUT_DIM,WIDTH,DEPTH (e.g. 16,64,2)")
    train.add_argument("--resume", action="store_true", help="continue from OUT.ckpt")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    train.set_defaults(run=_infer_train)

    diag = sub.add_parser(
        "diagnose",
        help="SBC, expected coverage and TARP of a trained NPE on held-out simulations",
        formatter_class=fmt,
    )
    diag.add_argument("--posterior", type=Path, required=True, help="file from `infer train`")
    diag.add_argument("--sims", type=Path, required=True,
                      help="held-out set from `infer simulate` (not the training set)")
    diag.add_argument("--out", type=Path, required=True, help="folder for JSON and plots")
    diag.add_argument("--n", type=int, default=1000, help="held-out pairs to use")
    diag.add_argument("--draws", type=int, default=1000, help="posterior draws per pair")
    diag.add_argument("--seed", type=int, default=0, help="random seed")
    diag.set_defaults(run=_infer_diagnose)

    post = sub.add_parser(
        "posterior", help="draw posterior samples for every star of a table", formatter_class=fmt
    )
    post.add_argument("--posterior", type=Path, required=True, help="file from `infer train`")
    post.add_argument("--stars", type=Path, required=True,
                      help="star table: CSV with a header naming the 8 abundance columns, or "
                      ".npy / .npz (x_obs)")
    post.add_argument("--out", type=Path, required=True, help="output .npz (draws, summary)")
    post.add_argument("--draws", type=int, default=1000, help="draws per star")
    post.add_argument("--seed", type=int, default=0, help="random seed")
    post.set_defaults(run=_infer_posterior)

    agg = sub.add_parser(
        "aggregate",
        help="combine a star table into the posterior of alpha_IMF and log10 N_Ia (a and b)",
        formatter_class=fmt,
    )
    agg.add_argument("--posterior", type=Path, required=True,
                     help="marginal NPE of the globals (`infer train npe-globals`)")
    agg.add_argument("--stars", type=Path, required=True, help="star table (as for posterior)")
    agg.add_argument("--out", type=Path, required=True, help="folder for summary.json")
    agg.add_argument("--no-nuts", action="store_true", help="skip NUTS on the 2-D potential")
    agg.add_argument("--seed", type=int, default=0, help="random seed")
    agg.set_defaults(run=_infer_aggregate)

    cmp_ = sub.add_parser(
        "compare",
        help="posterior probabilities of yield sets for a star table or a mock galaxy",
        description=(
            "Train (cached, resumable) an emulator, a 6-D NPE and a marginal NPE of the globals "
            "for every candidate yield set, then compute each set's evidence (per-star "
            "importance sampling with the NPE as proposal and the emulator as likelihood, times "
            "the quadrature over the shared alpha_IMF and log10 N_Ia) and the posterior model "
            "probabilities, with a bootstrap over stars, the probability against the number of "
            "stars and a posterior predictive check of the winner. Writes OUT/summary.json and "
            "OUT/compare.png; --calibration-sets adds the calibration over mock sets."
        ),
        formatter_class=fmt,
    )
    cmp_.add_argument("--sets", default="tng,default,mixed",
                      help="comma-separated candidate yield sets: tng, default, mixed, or "
                      "CC/AGB/SNIa combinations such as default/tng/tng")
    cmp_.add_argument("--stars-file", type=Path, default=None,
                      help="star table (as for `infer posterior`); default: a mock galaxy")
    cmp_.add_argument("--mock", default="tng", help="yield set of the mock galaxy")
    cmp_.add_argument("--stars", type=int, default=100, help="stars in the mock galaxy")
    cmp_.add_argument("--seed", type=int, default=0, help="seed of the mock and the sampling")
    cmp_.add_argument("--out", type=Path, required=True, help="output folder")
    cmp_.add_argument("--cache", type=Path, default=None,
                      help="folder for simulations and trained models (default OUT/cache)")
    cmp_.add_argument("--train-seed", type=int, default=0, help="seed of the training sets")
    cmp_.add_argument("--n-train", type=int, default=100_000, help="training runs per set")
    cmp_.add_argument("--n-test", type=int, default=2000, help="held-out runs per set")
    cmp_.add_argument("--epochs", type=int, default=None,
                      help="cap on the epochs of every training stage (default: their own)")
    cmp_.add_argument("--draws", type=int, default=512, help="importance draws per star")
    cmp_.add_argument("--grid", type=int, default=64, help="quadrature points per axis")
    cmp_.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples")
    cmp_.add_argument("--curve", default="1,3,10,30",
                      help="comma-separated star counts for probability vs N ('' skips)")
    cmp_.add_argument("--calibration-sets", type=int, default=0,
                      help="mock sets for the calibration (0 skips it)")
    cmp_.add_argument("--calibration-stars", type=int, default=100, help="stars per mock set")
    cmp_.add_argument("--data-dir", type=Path, default=None, help="diffgal data directory")
    cmp_.add_argument("--x64", action=argparse.BooleanOptionalAction, default=False,
                      help="compute in float64")
    cmp_.add_argument("--no-progress", action="store_true", help="hide progress bars")
    cmp_.set_defaults(run=_infer_compare)


def _add_lagrangian_parser(commands) -> None:
    from diffgal.lagrangian._score import SYSTEMS

    lag = commands.add_parser(
        "lagrangian", help="Helmholtz metrics: is a second-order ODE Euler-Lagrange?"
    )
    sub = lag.add_subparsers(dest="lagrangian_command", required=True, metavar="LAGRANGIAN_COMMAND")
    names = ", ".join(f"{name} ({text})" for name, (_, text) in SYSTEMS.items())
    score = sub.add_parser(
        "score",
        help="fit a multiplier g to a test system's force and print the metric components",
        description=(
            "Sample points uniformly in a test system's default (t, q, v) box, train a multiplier "
            "network g alone on the true force (learned-g Helmholtz metric) and print H = H1 + H2 "
            "+ H3. H <= 1e-3 means Euler-Lagrange on that box; O(0.1-1) means no Lagrangian "
            f"there. Systems: {names}."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    score.add_argument("--system", required=True, metavar="NAME",
                       help=f"one of {', '.join(SYSTEMS)}")
    score.add_argument("--steps", type=int, default=4000, help="Adam steps of the g fit")
    score.add_argument("--points", type=int, default=4096, help="points sampled in the box")
    score.add_argument("--seed", type=int, default=0, help="random seed")
    score.add_argument(
        "--signatures",
        choices=("definite", "all"),
        default="definite",
        help="search positive-definite g only, or every signature (needed for the curl force)",
    )
    score.add_argument("--time-unit", default="system", metavar="UNIT",
                       help="time unit of the metric: 'system' (the system's own units, the "
                       "spec's convention), 'dynamical' (the force's dynamical time) or a number")
    score.add_argument("--learned", action="store_true",
                       help="also learn the force with a plain second-order neural ODE from "
                       "noisy positions (kepler, damped, case4) and score the learned force")
    score.add_argument("--noise", type=float, default=0.05,
                       help="relative position noise of the trajectories (--learned)")
    score.add_argument("--trajectories", type=int, default=1024,
                       help="training trajectories (--learned)")
    score.add_argument("--train-steps", type=int, default=6000,
                       help="training steps of the neural ODE (--learned)")
    score.add_argument("--x64", action=argparse.BooleanOptionalAction, default=False,
                       help="compute in float64")
    score.add_argument("--json", type=Path, default=None, metavar="PATH",
                       help="write the result as JSON")
    score.add_argument("--plot", type=Path, default=None, metavar="PATH",
                       help="save the metric's training curve here")
    score.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    score.set_defaults(run=_lagrangian_score)


def _add_ifu_parser(commands) -> None:
    ifu = commands.add_parser("ifu", help="IFU cubes: render a snapshot, make a mock disc")
    sub = ifu.add_subparsers(dest="ifu_command", required=True, metavar="IFU_COMMAND")
    rend = sub.add_parser(
        "render",
        help="render a star-particle HDF5 snapshot into a FITS (or HDF5) cube",
        description=(
            "Render a star-particle snapshot (diffgal HDF5 star-particle format) into an IFU "
            "cube, streaming the particles in chunks with a progress bar, and write FITS "
            "(.fits) or HDF5 (.h5/.hdf5) plus an optional quick-look PNG."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    rend.add_argument("snapshot", type=Path, help="star-particle HDF5 file")
    rend.add_argument("--telescope", default="MUSE", help="preset name (see `diffgal info`)")
    rend.add_argument("--out", type=Path, required=True, help="output cube (.fits or .h5)")
    rend.add_argument(
        "--templates",
        default="auto",
        help="template library: auto (best installed real library), emiles, bc03_miles, "
        "synthetic (tests only)",
    )
    rend.add_argument("--distance-mpc", type=float, default=10.0, help="distance (z = 0)")
    rend.add_argument("--redshift", type=float, default=None, help="redshift (Planck15)")
    rend.add_argument("--inclination", type=float, default=0.0, help="inclination [deg]")
    rend.add_argument("--position-angle", type=float, default=0.0, help="position angle [deg]")
    rend.add_argument("--psf-fwhm", type=float, default=None, help="Gaussian PSF FWHM [arcsec]")
    rend.add_argument("--v-max", type=float, default=None, help="velocity range [km/s]")
    rend.add_argument("--snr", type=float, default=None, help="add noise at this S/N per pixel")
    rend.add_argument("--seed", type=int, default=0, help="noise seed")
    rend.add_argument("--flux-scale", type=float, default=1e-20, help="flux unit in erg/s/cm2/A")
    rend.add_argument("--chunk", type=int, default=1 << 18, help="particles per host chunk")
    rend.add_argument("--quicklook", type=Path, default=None, help="save a quick-look PNG here")
    rend.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    rend.set_defaults(run=_ifu_render)
    mock = sub.add_parser(
        "mock",
        help="write a mock rotating exponential disc as a star-particle HDF5 file",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    mock.add_argument("out", type=Path, help="output HDF5 file")
    mock.add_argument("--n", type=int, default=100_000, help="number of star particles")
    mock.add_argument("--r-d-kpc", type=float, default=0.1, help="disc scale length [kpc]")
    mock.add_argument("--mass", type=float, default=1e9, help="stellar mass [Msun]")
    mock.add_argument("--seed", type=int, default=0, help="random seed")
    mock.set_defaults(run=_ifu_mock)

    demo = commands.add_parser(
        "demo",
        help="mock galaxy -> IFU cube + stellar abundances -> joint gradient fit (the main job)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    demo.add_argument("--out", type=Path, default=Path("diffgal-demo"),
                      help="output folder (summary.json and the plots)")
    demo.add_argument("--quick", action="store_true",
                      help="a small configuration (2e4 particles, 12x12 spaxels, 200 stars)")
    demo.add_argument("--seed", type=int, default=0, help="random seed of the mock and the start")
    demo.add_argument("--no-plots", action="store_true", help="skip the figures")
    demo.set_defaults(run=_demo)


# --------------------------------------------------------------------------------------------
# diffgal lagrangian


def _lagrangian_score(args: argparse.Namespace) -> int:
    import jax
    import numpy as np

    from diffgal.lagrangian._score import SYSTEMS, score_system

    if args.system not in SYSTEMS:
        raise _CLIError(
            f"--system: unknown test system {args.system!r}; expected one of "
            f"{', '.join(SYSTEMS)}."
        )
    if args.steps < 1 or args.points < 2:
        raise _CLIError(f"need --steps >= 1 and --points >= 2; got {args.steps}, {args.points}.")
    for path in (args.json, args.plot):
        if path is not None:
            _ensure_parent(path)
    signatures = (0,) if args.signatures == "definite" else "all"
    time_unit = _time_unit(args.time_unit)
    progress = not args.no_progress and sys.stderr.isatty()
    if args.learned:
        from diffgal.lagrangian import EXPERIMENTS

        if args.system not in EXPERIMENTS:
            raise _CLIError(
                f"--learned: no default experiment for {args.system!r}; use one of "
                f"{', '.join(EXPERIMENTS)}."
            )
        if args.noise < 0 or args.trajectories < 2 or args.train_steps < 1:
            raise _CLIError(
                "--learned needs --noise >= 0, --trajectories >= 2 and --train-steps >= 1; got "
                f"{args.noise}, {args.trajectories}, {args.train_steps}."
            )
    with jax.enable_x64(args.x64):
        result = score_system(
            args.system,
            key=jax.random.key(args.seed),
            n_points=args.points,
            steps=args.steps,
            signatures=signatures,
            time_unit=time_unit,
            show_progress=progress,
        )
        learned = _learned_score(args, progress) if args.learned else None
    history = result.pop("history")
    domain = result["domain"]
    verdict = "Lagrangian" if result["lagrangian"] else "not Lagrangian"
    print(f"system         {args.system}: {SYSTEMS[args.system][1]}")
    print(f"known          {verdict}")
    print(f"points         {result['n_points']} uniform in the default box ({result['dtype']})")
    print(f"  t            [{domain['t'][0]:.3g}, {domain['t'][1]:.3g}]")
    for label in ("q", "v"):
        lo, hi = domain[label]
        ranges = ", ".join(f"[{a:.3g}, {b:.3g}]" for a, b in zip(lo, hi, strict=True))
        print(f"  {label}            {ranges}")
    print(f"g fit          {result['steps']} Adam steps, signatures {args.signatures}, "
          f"{result['wall_s']:.1f} s")
    unit = result["time_unit"]
    unit_text = "the system's own" if args.time_unit == "system" else f"{unit:.4g}"
    print(f"time unit      {unit_text}" + (" (dynamical)" if args.time_unit == "dynamical" else ""))
    print(f"H              {result['H']:.4g}   (start {result['H_initial']:.4g})")
    for part in ("H1", "H2", "H3"):
        print(f"{part}             {result[part]:.4g}")
    if "analytic_max_residual" in result:
        r1, r2, r3 = result["analytic_max_residual"]
        print(f"analytic g     max |R1| {r1:.2g}, |R2| {r2:.2g}, |R3| {r3:.2g}")
        median = np.asarray(result["learned_vs_analytic_median"])
        print(f"learned vs analytic g (median, after scale alignment): diag "
              f"{np.diag(median).round(4).tolist()}")
    if learned is not None:
        dyn = learned["dynamical"]
        print(f"learned force  plain second-order neural ODE, {learned['n_train']} trajectories "
              f"with {learned['noise']:.0%} position noise, {learned['steps']} steps "
              f"({learned['train_s']:.0f} s)")
        print(f"  held-out MSE {learned['heldout_mse']:.4g} (normalised), force error "
              f"{learned['force_relative_rms_error']:.3g} (relative RMS)")
        print(f"  H            {learned['H']:.4g}   (H1 {learned['H1']:.3g}, H2 "
              f"{learned['H2']:.3g}, H3 {learned['H3']:.3g}; true force on the same points "
              f"{learned['true_H']:.3g})")
        print(f"  H, dynamical {dyn['H']:.4g}   (time unit {dyn['time_unit']:.3g}; true force "
              f"{learned['true_dynamical']['H']:.3g})")
        result["learned"] = learned
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.plot is not None:
        _plot_metric_history(history, args.plot, f"{args.system}: learned-g Helmholtz metric")
        print(f"wrote {args.plot}")
    return 0


def _time_unit(text: str):
    if text == "system":
        return None
    if text == "dynamical":
        return "dynamical"
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value > 0):
        raise _CLIError(
            f"--time-unit must be 'system', 'dynamical' or a positive number; got {text!r}."
        )
    return value


def _learned_score(args: argparse.Namespace, progress: bool) -> dict:
    import jax

    from diffgal.lagrangian import learn_force, score_learned_force

    key = jax.random.key(args.seed + 1)
    learned = learn_force(key, args.system, n_train=args.trajectories, noise=args.noise,
                          steps=args.train_steps, show_progress=progress)
    return score_learned_force(learned, key=jax.random.fold_in(key, 7), metric_steps=args.steps,
                               show_progress=progress)


def _plot_metric_history(history, path: Path, title: str) -> None:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise _CLIError("--plot needs matplotlib: pip install 'diffgal[plot]'.") from None
    fig = Figure(figsize=(5.0, 3.4), layout="constrained")
    ax = fig.subplots()
    ax.semilogy(history, linewidth=0.8)
    ax.set_xlabel("Adam step")
    ax.set_ylabel("mini-batch H")
    ax.set_title(title)
    fig.savefig(path, dpi=120)


# --------------------------------------------------------------------------------------------
# diffgal demo


def _infer_headline(args: argparse.Namespace) -> int:
    import jax

    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    bad = [m for m in methods if m not in ("a", "b", "c", "map")]
    if bad or not methods:
        raise _CLIError(f"--methods: expected a comma-separated subset of a,b,c,map; got "
                        f"{args.methods!r}.")
    if args.stars < 1:
        raise _CLIError(f"--stars: need at least 1 star; got {args.stars}.")
    if args.out.exists() and not args.out.is_dir():
        raise _CLIError(f"--out {str(args.out)!r} exists and is not a folder; pick another path.")
    from diffgal.inference._headline import run_headline

    previous = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", bool(args.x64))
    try:
        summary = run_headline(
            args.out, stars=args.stars, seed=args.seed, train_seed=args.train_seed,
            n_train=args.n_train, cache=args.cache, data_dir=args.data_dir, methods=methods,
            nuts_warmup=args.nuts_warmup, nuts_samples=args.nuts_samples,
            map_steps=args.map_steps, coverage_sets=args.coverage_sets,
            coverage_stars=args.coverage_stars, show_progress=not args.no_progress,
        )
    except (FileNotFoundError, ValueError) as error:  # e.g. a corrupted model in the cache
        raise _CLIError(str(error)) from None
    finally:
        jax.config.update("jax_enable_x64", previous)
    print(f"{'method':24s} {'alpha_IMF':>22s} {'log10 N_Ia':>22s} {'rho':>6s} {'wall s':>8s}")
    for name, r in summary["methods"].items():
        cells = [
            f"{r[p]['mean']:.4f} +/- {r[p]['sigma']:.4f} ({r[p]['distance_sigma']:+.1f}s)"
            for p in ("imf_slope", "log10_n_ia")
        ]
        print(f"{name:24s} {cells[0]:>22s} {cells[1]:>22s} {r['correlation']:6.2f} "
              f"{r['wall_s']:8.1f}")
    if summary["coverage"]:
        for name, frac in summary["coverage"]["fraction"].items():
            print(f"68% coverage {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in frac.items()))
    print(f"wrote {args.out / 'summary.json'}")
    return 0


def _infer_simulate(args: argparse.Namespace) -> int:
    import jax

    from diffgal.inference import simulate_training_set

    if args.n < 1 or args.shard_size < 1:
        raise _CLIError(f"--n and --shard-size must be >= 1; got {args.n}, {args.shard_size}.")
    try:
        path = simulate_training_set(
            jax.random.key(args.seed), args.out, args.n, mode=args.mode, yields=args.yields,
            data_dir=args.data_dir, shard_size=args.shard_size,
            show_progress=not args.no_progress,
        )
    except (FileNotFoundError, ValueError) as error:
        raise _CLIError(str(error)) from None
    print(f"wrote {args.n} runs to {path}")
    return 0


def _infer_train(args: argparse.Namespace) -> int:
    import jax

    from diffgal.chemistry import CHEMPY_COLUMNS, SBI_CHEMPY_COLUMNS
    from diffgal.inference import (
        GLOBAL_NAMES,
        fit_emulator,
        load_training_set,
        save_emulator,
        save_posterior,
        train_npe,
    )

    try:
        sims = load_training_set(args.sims)
    except (FileNotFoundError, ValueError) as error:
        raise _CLIError(str(error)) from None
    ckpt = args.out.with_name(args.out.name + ".ckpt")
    if args.resume and not ckpt.is_file():
        raise _CLIError(f"--resume: no checkpoint {str(ckpt)!r} to resume from.")
    key = jax.random.key(args.seed)
    progress = not args.no_progress
    summary: dict[str, Any] = {"what": args.what, "n": int(sims.theta.shape[0])}
    if args.what == "emulator":
        fit = fit_emulator(key, sims.theta, sims.x, max_epochs=args.epochs, checkpoint=ckpt,
                           resume=args.resume, show_progress=progress)
        save_emulator(args.out, fit.emulator)
        history = fit.history
    else:
        cols = [CHEMPY_COLUMNS.index(c) for c in SBI_CHEMPY_COLUMNS]
        params = GLOBAL_NAMES if args.what == "npe-globals" else None
        kwargs = {} if params is None else {"params": params}
        if args.embedding:
            kwargs["embedding"] = _int_list("--embedding", args.embedding)
            if len(kwargs["embedding"]) != 3:
                raise _CLIError(f"--embedding: expected OUTPUT_DIM,WIDTH,DEPTH; got "
                                f"{args.embedding!r}.")
        fit = train_npe(key, sims.theta, sims.x[:, cols], noise=args.noise,
                        max_epochs=args.epochs, checkpoint=ckpt, resume=args.resume,
                        show_progress=progress, **kwargs)
        save_posterior(args.out, fit.posterior)
        history = fit.history
    summary.update(best_epoch=history["best_epoch"], best_val=history["best_val"],
                   seconds=history["seconds"])
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    return 0


def _infer_diagnose(args: argparse.Namespace) -> int:
    import jax

    from diffgal.chemistry import CHEMPY_COLUMNS
    from diffgal.inference import calibrate, load_posterior, load_training_set

    if args.n < 1 or args.draws < 2:
        raise _CLIError(f"need --n >= 1 and --draws >= 2; got {args.n}, {args.draws}.")
    try:
        posterior = load_posterior(args.posterior)
        test = load_training_set(args.sims, n=args.n)
    except (FileNotFoundError, ValueError) as error:
        raise _CLIError(str(error)) from None
    cols = [CHEMPY_COLUMNS.index(c) for c in posterior.x_columns]
    report = calibrate(jax.random.key(args.seed), posterior, test.theta, test.x[:, cols],
                       n_draws=args.draws, plots=args.out)
    (args.out / "calibration.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


def _read_posterior_and_stars(args):
    from diffgal.inference import load_posterior, read_star_table

    try:
        posterior = load_posterior(args.posterior)
        x_obs = read_star_table(args.stars, posterior.x_columns)
    except (FileNotFoundError, ValueError) as error:
        raise _CLIError(str(error)) from None
    return posterior, x_obs


def _infer_posterior(args: argparse.Namespace) -> int:
    import jax
    import numpy as np

    if args.draws < 2:
        raise _CLIError(f"--draws: need at least 2; got {args.draws}.")
    posterior, x_obs = _read_posterior_and_stars(args)
    draws = np.asarray(posterior.sample_per_star(jax.random.key(args.seed), args.draws,
                                                 x_obs.astype(posterior.u_mean.dtype)))
    _ensure_parent(args.out)
    np.savez(args.out, draws=draws, params=np.array(posterior.params),
             mean=draws.mean(1), sd=draws.std(1))
    print(f"{draws.shape[0]} stars x {args.draws} draws of {', '.join(posterior.params)} "
          f"-> {args.out}")
    import matplotlib

    matplotlib.use("Agg")
    from diffgal.inference import plot_corner

    corner = args.out.with_name(args.out.stem + "_corner.png")
    fig = plot_corner(draws[0], names=list(posterior.params))
    fig.suptitle("first star of the table", fontsize=9)
    fig.savefig(corner, dpi=110)
    matplotlib.pyplot.close(fig)
    print(f"corner plot of the first star -> {corner}")
    for name, m, s in zip(posterior.params, draws.mean((0, 1)), draws.std(1).mean(0),
                          strict=True):
        print(f"  {name:18s} mean over stars {m:8.4f}   typical sd {s:.4f}")
    return 0


def _infer_aggregate(args: argparse.Namespace) -> int:
    import jax

    from diffgal.inference import aggregate_stars

    posterior, x_obs = _read_posterior_and_stars(args)
    try:
        results = aggregate_stars(jax.random.key(args.seed), posterior, x_obs,
                                  nuts=not args.no_nuts)
    except ValueError as error:
        raise _CLIError(str(error)) from None
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {"n_stars": int(x_obs.shape[0]), "methods": results}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    for name, r in results.items():
        cells = [f"{r[p]['mean']:.4f} +/- {r[p]['sigma']:.4f}" for p in ("imf_slope",
                                                                          "log10_n_ia")]
        print(f"{name:24s} alpha_IMF {cells[0]:>18s}   log10 N_Ia {cells[1]:>18s}")
    print(f"wrote {args.out / 'summary.json'}")
    return 0


def _int_list(option: str, text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise _CLIError(f"{option}: expected comma-separated integers; got {text!r}.") from None
    if any(v < 1 for v in values):
        raise _CLIError(f"{option}: every value must be >= 1; got {text!r}.")
    return values


def _infer_compare(args: argparse.Namespace) -> int:
    import jax

    from diffgal.inference import CANDIDATE_SETS, read_star_table, run_compare

    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    if len(set(sets)) < 2:
        raise _CLIError(f"--sets: name at least two different yield sets (e.g. "
                        f"{','.join(CANDIDATE_SETS)}); got {args.sets!r}.")
    for name in (*sets, args.mock):
        if name not in CANDIDATE_SETS and name.count("/") != 2 and not Path(name).is_file():
            raise _CLIError(f"unknown yield set {name!r} (in --sets or --mock): use "
                            f"{', '.join(CANDIDATE_SETS)}, a CC/AGB/SNIa combination such as "
                            "default/tng/tng, or the path of a yield HDF5 file.")
    for option, value, low in (("--stars", args.stars, 1), ("--n-train", args.n_train, 100),
                               ("--n-test", args.n_test, 1), ("--draws", args.draws, 2),
                               ("--grid", args.grid, 8), ("--bootstrap", args.bootstrap, 0),
                               ("--calibration-sets", args.calibration_sets, 0),
                               ("--calibration-stars", args.calibration_stars, 1)):
        if value < low:
            raise _CLIError(f"{option}: must be >= {low}; got {value}.")
    if args.epochs is not None and args.epochs < 1:
        raise _CLIError(f"--epochs: must be >= 1; got {args.epochs}.")
    curve = _int_list("--curve", args.curve)
    if args.out.exists() and not args.out.is_dir():
        raise _CLIError(f"--out {str(args.out)!r} exists and is not a folder; pick another path.")
    x_obs = None
    if args.stars_file is not None:
        try:
            x_obs = read_star_table(args.stars_file)
        except (FileNotFoundError, ValueError) as error:
            raise _CLIError(str(error)) from None
    previous = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", bool(args.x64))
    try:
        summary = run_compare(
            args.out, sets=sets, x_obs=x_obs, mock=args.mock, stars=args.stars, seed=args.seed,
            train_seed=args.train_seed, n_train=args.n_train, n_test=args.n_test,
            epochs=args.epochs, cache=args.cache, n_draws=args.draws, n_grid=args.grid,
            n_bootstrap=args.bootstrap, curve=curve, calibration_sets=args.calibration_sets,
            calibration_stars=args.calibration_stars, data_dir=args.data_dir,
            show_progress=not args.no_progress,
        )
    except (FileNotFoundError, ValueError) as error:  # e.g. a corrupted model in the cache
        raise _CLIError(str(error)) from None
    finally:
        jax.config.update("jax_enable_x64", previous)
    boot = summary.get("bootstrap")
    print(f"{'yield set':22s} {'log evidence':>14s} {'probability':>12s} {'bootstrap 16-84%':>20s}")
    for name in summary["models"]:
        band = ""
        if boot:
            lo, hi = boot["probability_16_84"][name]
            band = f"{lo:.3f}-{hi:.3f}"
        print(f"{name:22s} {summary['log_evidence'][name]:14.2f} "
              f"{summary['probability'][name]:12.4f} {band:>20s}")
    ppc = summary.get("ppc_winner")
    if ppc:
        print(f"winner {summary['winner']}: posterior predictive p < 0.05 for "
              f"{100 * ppc['fraction_below_0.05']:.1f}% of stars, chi2/dof "
              f"{ppc['mean_chi2_per_dof']:.2f}")
    cal = summary.get("calibration")
    if cal:
        print(f"calibration: {cal['n_sets']} sets of {cal['n_stars']} stars, "
              f"{100 * cal['fraction_correct']:.0f}% correct, max reliability difference "
              f"{cal['max_reliability_difference']:.3f}")
    print(f"wrote {args.out / 'summary.json'}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from diffgal.pipeline._demo import run_demo

    if args.out.exists() and not args.out.is_dir():
        raise _CLIError(f"--out {str(args.out)!r} exists and is not a folder; pick another path.")
    run_demo(args.out, quick=args.quick, seed=args.seed, plots=not args.no_plots,
             show_progress=sys.stderr.isatty())
    return 0


# --------------------------------------------------------------------------------------------
# diffgal info


def _info(args: argparse.Namespace) -> int:
    import jax

    import diffgal

    print(f"diffgal        {diffgal.__version__}")
    print(f"jax            {jax.__version__}")
    print(f"backend        {jax.default_backend()}")
    print(f"devices        {', '.join(str(device) for device in jax.devices())}")
    print(f"x64 enabled    {jax.config.read('jax_enable_x64')}")
    print(f"data directory {_describe_data_dir(args.data_dir)}")
    print("yield sets")
    try:
        yield_sets = diffgal.chemistry.available_yield_sets(data_dir=args.data_dir)
    except Exception as error:  # report, do not crash: `info` is what users run when things break
        print(f"  could not list yield sets: {type(error).__name__}: {error}")
    else:
        width = max((len(name) for name in yield_sets), default=0)
        for name, status in yield_sets.items():
            print(f"  {name:<{width}}  {_describe_status(status)}")
    from diffgal.ifu import telescope_presets
    from diffgal.spectra import available_template_libraries

    print("templates")
    for name, status in available_template_libraries().items():
        print(f"  {name:<12}  {status}")
    print(f"telescopes     {', '.join(telescope_presets())}")
    return 0


def _describe_data_dir(explicit: Path | None) -> str:
    if explicit is not None:
        return f"{explicit} (from --data-dir)"
    import diffgal

    try:
        path = diffgal.data_dir()
    except Exception as error:
        return f"not set ({error})"
    return "not set (set DIFFGAL_DATA_DIR)" if path is None else str(path)


def _describe_status(status: object) -> str:
    if status is True or status == "available":
        return "available"
    if status is False:
        return "not available"
    return f"not available: {status}"


# --------------------------------------------------------------------------------------------
# diffgal ifu


def _ifu_mock(args: argparse.Namespace) -> int:
    import jax

    from diffgal.galaxy import exponential_disk, save_particles_hdf5

    if args.n < 1:
        raise _CLIError(f"--n must be >= 1; got {args.n}.")
    disk = exponential_disk(
        jax.random.key(args.seed),
        args.n,
        mass_msun=args.mass,
        r_d_kpc=args.r_d_kpc,
        h_z_kpc=0.2 * args.r_d_kpc,
        r_turn_kpc=0.3 * args.r_d_kpc,
    )
    save_particles_hdf5(args.out, disk, attrs={"generator": "diffgal.galaxy.exponential_disk",
                                               "seed": args.seed, "r_d_kpc": args.r_d_kpc})
    print(f"wrote {args.n} star particles to {args.out}")
    return 0


def _ifu_render(args: argparse.Namespace) -> int:
    import time

    import jax
    import numpy as np

    from diffgal.ifu import add_noise, get_telescope, make_renderer, render_streaming
    from diffgal.ifu._particles import load_particles_hdf5, n_particles_hdf5
    from diffgal.ifu._render import default_v_max, rotation_matrix
    from diffgal.spectra import load_templates

    start = time.perf_counter()
    if not args.snapshot.is_file():
        raise _CLIError(f"snapshot {str(args.snapshot)!r} not found.")
    suffix = args.out.suffix.lower()
    if suffix not in (".fits", ".h5", ".hdf5"):
        raise _CLIError(f"--out must end in .fits, .h5 or .hdf5; got {str(args.out)!r}.")
    if args.chunk < 1:
        raise _CLIError(f"--chunk must be >= 1; got {args.chunk}.")
    try:
        telescope = get_telescope(args.telescope)
        if args.psf_fwhm:
            telescope = telescope.replace(psf="gaussian", psf_fwhm_arcsec=args.psf_fwhm)
        templates = load_templates(args.templates)
    except (ValueError, ImportError) as error:
        raise _CLIError(str(error)) from None
    n = n_particles_hdf5(args.snapshot)
    chunks = [(i, min(i + args.chunk, n)) for i in range(0, n, args.chunk)]
    v_max = args.v_max
    if v_max is None:  # from a subsample of up to 1e6 particles
        sample = load_particles_hdf5(args.snapshot, stop=min(n, 1_000_000))
        from diffgal.ifu._api import _pixel_kpc

        pixel = _pixel_kpc(telescope, None if args.redshift else args.distance_mpc, args.redshift)
        rot = np.asarray(rotation_matrix(args.inclination, args.position_angle))
        v_max = default_v_max(sample, rot, pixel, telescope)
    try:
        renderer = make_renderer(
            telescope, templates,
            distance_mpc=None if args.redshift else args.distance_mpc,
            redshift=args.redshift, inclination_deg=args.inclination,
            position_angle_deg=args.position_angle, v_max=v_max, flux_scale=args.flux_scale,
        )
        cube = render_streaming(
            renderer,
            (load_particles_hdf5(args.snapshot, start=a, stop=b) for a, b in chunks),
            n_chunks=len(chunks),
            progress=not args.no_progress,
        )
    except ValueError as error:
        raise _CLIError(str(error)) from None
    if args.snr is not None:
        cube = add_noise(jax.random.key(args.seed), cube, args.snr)
    if suffix == ".fits":
        cube.to_fits(args.out)
    else:
        cube.to_hdf5(args.out)
    if args.quicklook is not None:
        from diffgal.ifu._plot import quicklook

        quicklook(cube, args.quicklook)
    meta = dict(cube.meta)
    flux = np.asarray(cube.flux)
    print(f"telescope      {telescope.name} {cube.shape} ({cube.unit})")
    print(f"templates      {templates.name} ({templates.licence})")
    print(f"particles      {n} in {len(chunks)} chunks; {int(cube.n_outside_fov)} outside the "
          f"field; {int(cube.n_clamped)} clamped to the template grid; "
          f"{float(cube.clipped_velocity_mass):.3g} Msun beyond v_max = {meta['v_max_kms']} km/s")
    print(f"distance       {meta['distance_mpc']:.4g} Mpc, {meta['pixel_kpc']:.4g} kpc/spaxel")
    print(f"LSF            requested {meta['lsf_fwhm_requested_aa']} A, effective "
          f"{meta['lsf_fwhm_effective_aa']:.3f} A (templates coarser on "
          f"{100 * meta['lsf_clipped_fraction']:.1f}% of the band)")
    print(f"total flux     {float(np.sum(flux)):.4g} (sum over cube, {cube.unit})")
    print(f"wrote          {args.out}" + (f" and {args.quicklook}" if args.quicklook else ""))
    print(f"wall time      {time.perf_counter() - start:.1f} s")
    return 0


# --------------------------------------------------------------------------------------------
# diffgal chemistry


def _chemistry(args: argparse.Namespace) -> int:
    if not 0.0 < args.t_birth <= _PLANCK15_AGE:
        raise _CLIError(
            f"--t-birth must lie in (0, {_PLANCK15_AGE}] Gyr (the age of the Universe); "
            f"got {args.t_birth}."
        )
    if not 0.0 <= args.x_out <= 1.0:
        raise _CLIError(f"--x-out is a fraction and must lie in [0, 1]; got {args.x_out}.")

    import jax

    previous_x64 = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", args.x64)
    try:
        return _run_chemistry(args)
    finally:  # `main` can be called in-process (tests): leave the global flag as it was
        jax.config.update("jax_enable_x64", previous_x64)


def _run_chemistry(args: argparse.Namespace) -> int:
    import equinox as eqx
    import numpy as np

    from diffgal.chemistry import ChemistryParams, GCEOptions, evolve, load_yields

    name, why = _choose_yields(args.yields, args.data_dir)
    try:
        yields = load_yields(name, data_dir=args.data_dir)
    except (FileNotFoundError, KeyError, ValueError) as error:
        raise _CLIError(f"could not load yield set {name!r}: {error}") from None

    values = {
        "imf_slope": args.alpha_imf,
        "log10_n_ia": args.log10_n_ia,
        "log10_tau_ia": args.log10_tau_ia,
        "log10_sfe": args.log10_sfe,
        "log10_sfr_peak": args.log10_sfr_peak,
        "outflow_fraction": args.x_out,
        "birth_time": args.t_birth,
    }
    params = ChemistryParams(**values)
    options = GCEOptions.faithful() if args.mode == "faithful" else GCEOptions.smooth()
    try:
        hist = eqx.filter_jit(evolve)(params, yields=yields, options=options, throw=False)
    except Exception as error:  # eqx.error_if raises a runtime error carrying our message
        lines = [line for line in str(error).splitlines() if "`" in line]
        raise _CLIError(lines[0].strip() if lines else str(error)) from None

    elements = tuple(hist.elements)
    x_h = np.asarray(hist.x_h())[-1]
    x_fe = np.asarray(hist.x_fe())[-1]
    fe_h = float(np.asarray(hist.fe_h())[-1])
    failed = bool(np.asarray(hist.failed))
    reason = hist.failure_reason

    print(f"yields     {name} ({why})")
    print(f"mode       {args.mode}, {'float64' if args.x64 else 'float32'}")
    print("parameters " + ", ".join(f"{key}={value:.6g}" for key, value in values.items()))
    print()
    print(f"abundances of the star born at t = {args.t_birth:g} Gyr")
    print(f"  {'element':<8}{'[X/H]':>10}{'[X/Fe]':>10}")
    for i, element in enumerate(elements):
        print(f"  {element:<8}{x_h[i]:>+10.4f}{x_fe[i]:>+10.4f}")
    print(f"  [Fe/H] = {fe_h:+.4f}")
    print(f"status     {'FAILED: ' + reason if failed else 'ok'}")

    if args.json is not None:
        record = {
            "yields": name,
            "mode": args.mode,
            "x64": args.x64,
            "parameters": values,
            "failed": failed,
            "failure_reason": reason,
            "birth": {
                "fe_h": _finite_or_none(fe_h),
                "x_h": {e: _finite_or_none(x_h[i]) for i, e in enumerate(elements)},
                "x_fe": {e: _finite_or_none(x_fe[i]) for i, e in enumerate(elements)},
            },
            "tracks": {
                "time": _to_list(hist.time),
                "elements": list(elements),
                "fe_h": _to_list(hist.fe_h()),
                "x_fe": _to_list(hist.x_fe()),
                "ism_mass": _to_list(hist.ism_mass),
                "corona_mass": _to_list(hist.corona_mass),
            },
        }
        _ensure_parent(args.json)
        args.json.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote      {args.json}")
    if args.plot is not None:
        _plot_tracks(args.plot, hist, args.t_birth)
        print(f"wrote      {args.plot}")
    return 1 if failed else 0


def _choose_yields(requested: str, data_dir: Path | None) -> tuple[str, str]:
    if requested != "auto":
        return requested, "requested with --yields"
    try:
        from diffgal._data import tng_files_present
    except ImportError:
        return "default", "auto: TNG detection unavailable in this installation"
    if tng_files_present(data_dir):
        return "tng", "auto: TNG tables found in the data directory"
    return "default", (
        "auto: TNG tables not found; set DIFFGAL_DATA_DIR or --data-dir, or run "
        "diffgal.fetch_tng_yields(), to use them"
    )


def _finite_or_none(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _to_list(array: Any) -> Any:
    """Nested lists of floats, with `None` for non-finite values (JSON has no NaN or inf)."""
    import numpy as np

    def clean(value: Any) -> Any:
        return [clean(v) for v in value] if isinstance(value, list) else _finite_or_none(value)

    return clean(np.asarray(array, dtype=float).tolist())


def _ensure_parent(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)


def _plot_tracks(path: Path, hist: Any, birth_time: float) -> None:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise _CLIError(
            '--plot needs matplotlib; install it with `pip install -e ".[plot]"`.'
        ) from None
    import numpy as np

    def finite(array: Any) -> np.ndarray:
        array = np.asarray(array, dtype=float)
        return np.where(np.isfinite(array), array, np.nan)

    elements = tuple(hist.elements)
    shown = [e for e in elements if e not in ("H", "Fe")]
    time = finite(hist.time)
    fe_h = finite(hist.fe_h())
    x_fe = finite(hist.x_fe())
    ism = finite(hist.ism_mass).sum(axis=-1)
    corona = finite(hist.corona_mass).sum(axis=-1)

    n_panels = len(shown) + 1
    n_cols = min(4, n_panels)
    n_rows = math.ceil(n_panels / n_cols)
    fig = Figure(figsize=(3.6 * n_cols, 3.0 * n_rows), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
    # The first enriched nodes can sit near [Fe/H] = -10; draw the range where stars are observed.
    visible = fe_h >= _PLOT_MIN_FE_H
    for ax, element in zip(axes, shown, strict=False):
        column = x_fe[:, elements.index(element)]
        ax.plot(fe_h[visible], column[visible], "-o", color="C0", markersize=2.5, linewidth=1)
        ax.plot(fe_h[-1], column[-1], "*", color="C3", markersize=12, label="birth")
        ax.set_xlabel("[Fe/H]")
        ax.set_ylabel(f"[{element}/Fe]")
        ax.ticklabel_format(useOffset=False)
    axes[0].legend(loc="best", fontsize="small")

    ax = axes[len(shown)]
    ax.plot(time, ism, "-o", markersize=2.5, label="ISM gas")
    ax.plot(time, corona, "-s", markersize=2.5, label="corona")
    ax.axvline(birth_time, color="C3", linestyle=":", label="birth")
    ax.set_xlabel("time [Gyr]")
    ax.set_ylabel("mass [per unit mass formed]")
    ax.legend(loc="best", fontsize="small")
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    fig.suptitle(f"diffgal chemistry: star born at t = {birth_time:g} Gyr")

    _ensure_parent(path)
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
