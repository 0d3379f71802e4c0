"""The figure of docs/lagrangian.md: the learned-g Helmholtz metric separates Lagrangian forces
from Douglas' case IV, for the true forces and for forces learned from 5 %-noisy positions.

Left: the mini-batch metric while g is trained on each true force (4096 points in the system's
default box, 4000 Adam steps, float32; computed here, about a minute). Right: the final metric
per seed for the true force, the plain second-order neural ODE and the Lagrangian neural ODE,
read from `benchmarks/results/lagrangian.json` (run `benchmarks/lagrangian.py` first).

    python benchmarks/lagrangian_figure.py      # writes docs/images/lagrangian_separation.png
"""

from __future__ import annotations

import argparse
import json
import pathlib

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from diffgal.lagrangian import score_system  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
SYSTEMS = {"kepler": "Kepler (polar)", "damped": "damped oscillator", "case4": "Douglas case IV"}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default=str(HERE / "results" / "lagrangian.json"))
    parser.add_argument(
        "--out", default=str(HERE.parent / "docs" / "images" / "lagrangian_separation.png")
    )
    parser.add_argument("--steps", type=int, default=4000, help="g steps for the true forces")
    args = parser.parse_args(argv)
    report = json.loads(pathlib.Path(args.results).read_text())
    experiments = report.get("experiments")
    if not experiments:
        raise SystemExit(f"{args.results} holds no experiments; run benchmarks/lagrangian.py")

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for name, label in SYSTEMS.items():
        score = score_system(name, key=jax.random.key(1), n_points=4096, steps=args.steps)
        left.semilogy(score["history"], linewidth=0.7, label=f"{label}: H = {score['H']:.2g}")
    left.set_xlabel("Adam step of the g fit")
    left.set_ylabel("mini-batch H")
    left.set_title("true forces, default boxes")
    left.legend(fontsize="small")

    seeds = sorted(experiments, key=int)
    kinds = (("true", "true F", "o"), ("plain", "plain neural ODE", "s"),
             ("lnode_decay", "Lagrangian neural ODE", "^"))  # fmt: skip
    x = np.arange(len(SYSTEMS))
    for j, (kind, label, marker) in enumerate(kinds):
        for i, name in enumerate(SYSTEMS):
            values = []
            for seed in seeds:
                entry = experiments[seed].get(name, {})
                if kind == "true" and "plain" in entry:
                    values.append(entry["plain"]["true_H"])
                elif kind in entry:
                    values.append(entry[kind]["H"])
            if values:
                right.scatter(np.full(len(values), x[i] + 0.22 * (j - 1)), values, marker=marker,
                              color=f"C{j}", label=label if i == 0 else None)  # fmt: skip
    lowest_case4 = min(experiments[s]["case4"]["plain"]["H"] for s in seeds)
    right.axhline(lowest_case4 / 30, color="k", linestyle=":", linewidth=1,
                  label="lowest learned case IV / 30")  # fmt: skip
    right.set_yscale("log")
    right.set_xticks(x, list(SYSTEMS.values()))
    right.set_ylabel("Helmholtz metric H (system units)")
    right.set_title(f"forces learned from 5 % noisy positions, seeds {', '.join(seeds)}")
    right.legend(fontsize="small")
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
