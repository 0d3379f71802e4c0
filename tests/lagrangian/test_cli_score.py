"""`diffgal lagrangian score`: the metric of a named test system from the command line."""

import json

import jax
import pytest

from diffgal.cli import main
from diffgal.lagrangian import SYSTEMS, get_system, score_system


def test_kepler_and_case_iv_separate_from_the_command_line(tmp_path, capsys):
    record = tmp_path / "kepler.json"
    plot = tmp_path / "plots" / "kepler.png"
    argv = ["lagrangian", "score", "--steps", "1500", "--points", "1024", "--no-progress"]
    assert main([*argv, "--system", "kepler", "--json", str(record), "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    for label in ("H1", "H2", "H3", "analytic g", "  t  ", "  q  ", "  v  "):
        assert label in out
    kepler = json.loads(record.read_text())
    assert plot.read_bytes().startswith(b"\x89PNG")
    assert kepler["lagrangian"] is True
    assert kepler["dtype"] == "float32" and kepler["n_points"] == 1024 and kepler["steps"] == 1500
    assert kepler["H"] < 1e-2
    assert kepler["H"] == pytest.approx(kepler["H1"] + kepler["H2"] + kepler["H3"], rel=1e-5)
    assert max(kepler["analytic_max_residual"]) < 1e-4  # diag(1, r^2), float32
    assert kepler["domain"]["q"][0][0] >= 0.5 and kepler["domain"]["q"][1][0] <= 2.0

    record4 = tmp_path / "case4.json"
    assert main([*argv, "--system", "case4", "--json", str(record4)]) == 0
    case4 = json.loads(record4.read_text())
    assert case4["lagrangian"] is False and "analytic_max_residual" not in case4
    assert case4["H"] > 0.3
    assert case4["H"] / kepler["H"] > 30  # the separation, as printed
    assert jax.config.read("jax_enable_x64")  # --no-x64 (the default) is scoped


def test_learned_force_and_dynamical_time_unit(tmp_path, capsys):
    """Wiring of --learned and --time-unit at a tiny size (the numbers are not meaningful)."""
    record = tmp_path / "case4.json"
    argv = ["lagrangian", "score", "--system", "case4", "--steps", "40", "--points", "256",
            "--time-unit", "dynamical", "--learned", "--trajectories", "16", "--train-steps",
            "5", "--no-progress", "--json", str(record)]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "(dynamical)" in out and "learned force" in out and "H, dynamical" in out
    data = json.loads(record.read_text())
    # case IV on q in [-1, 1]^2: ω² = sqrt(mean(4 q1² + 4 q2² + 1) / 2) ≈ 1.35, τ ≈ 0.86.
    assert data["time_unit"] == pytest.approx(0.86, abs=0.03)
    learned = data["learned"]
    assert learned["n_train"] == 16 and learned["steps"] == 5 and learned["noise"] == 0.05
    assert learned["dynamical"]["time_unit"] > 0
    for key in ("H", "true_H", "heldout_mse", "force_relative_rms_error"):
        assert learned[key] >= 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--system", "pendulumm"], "unknown test system 'pendulumm'"),
        (["--system", "kepler", "--steps", "0"], "--steps >= 1"),
        (["--system", "kepler", "--time-unit", "0"], "--time-unit must be"),
        (["--system", "pendulum", "--learned"], "no default experiment for 'pendulum'"),
    ],
)
def test_bad_arguments_exit_2(argv, message, capsys):
    assert main(["lagrangian", "score", *argv]) == 2
    assert message in capsys.readouterr().err


def test_registry():
    assert {"kepler", "damped", "case4", "case3b", "pendulum", "curl"} <= set(SYSTEMS)
    for name in SYSTEMS:
        system = get_system(name)
        assert (system.multiplier is None) == name.startswith("case")
    with pytest.raises(ValueError, match="`system`: unknown test system 'x'; expected one of"):
        get_system("x")
    with pytest.raises(TypeError, match="`system`"):
        score_system(3.0, key=jax.random.key(0))
