"""`diffgal demo`: one tiny end-to-end run (mock -> observations -> joint fit -> summary and
plots), and the command-line wiring without a run.

The tiny run is not marked `slow` although it takes ~1-2 min on two CPU cores (almost all of
it compiling the likelihood gradient): the demo is the project's main job and must run in CI.
It uses `DemoConfig.tiny()` with 150 optimiser steps instead of 15: steps cost ~20 ms each once
compiled, and with 15 the fit stops short of the optimum (Hessian not positive definite, NaN
sigmas).
"""

import dataclasses
import json
import math
import pathlib

import numpy as np
import pytest

import diffgal.pipeline._demo as demo_module
from diffgal.cli import main
from diffgal.pipeline import PARAM_NAMES
from diffgal.pipeline._demo import DEMO_TRUTH, DemoConfig, run_demo

PLOTS = ("white_light.png", "maps.png", "abundance_planes.png", "loss_curve.png", "corner.png")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    cfg = dataclasses.replace(DemoConfig.tiny(), steps=150)
    lines = []
    summary = run_demo(out, config=cfg, seed=0, show_progress=False, plots=True,
                       echo=lines.append)
    return out, cfg, summary, lines


def test_summary_json_has_every_parameter(demo_run):
    out, cfg, summary, lines = demo_run
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    params = on_disk["parameters"]
    assert tuple(params) == PARAM_NAMES
    for name, row in params.items():
        for key in ("truth", "estimate", "sigma", "start", "pull"):
            assert math.isfinite(row[key]), (name, key, row[key])
        assert row["sigma"] > 0, name
        assert row["truth"] == pytest.approx(DEMO_TRUTH[name], abs=1e-12)
        assert row["pull"] == pytest.approx((row["estimate"] - row["truth"]) / row["sigma"])
    assert on_disk["wall_time_s"] > 0
    assert isinstance(on_disk["template_library"], str) and on_disk["template_library"]
    assert on_disk["cube_shape"] == [cfg.n_spaxels, cfg.n_spaxels, cfg.n_wave]
    assert on_disk["n_particles"] == cfg.n_particles and on_disk["n_stars"] == cfg.n_stars
    assert 0 < on_disk["n_spaxels_fitted"] <= cfg.n_spaxels**2
    assert on_disk["fit"]["hessian_positive_definite"] is True
    cov = np.asarray(on_disk["fit"]["covariance"])
    assert cov.shape == (6, 6) and np.allclose(cov, cov.T)
    assert np.all(np.linalg.eigvalsh(cov) > 0)
    assert math.isfinite(on_disk["cube_chi2_per_pixel"])
    assert math.isfinite(on_disk["abundance_loglik"])
    assert any("wrote" in line for line in lines)


def test_fit_moves_toward_the_truth(demo_run):
    _, _, summary, _ = demo_run
    params = summary["parameters"]
    for name in ("imf_slope", "log10_n_ia"):  # abundance-dominated, well constrained
        row = params[name]
        assert abs(row["estimate"] - row["truth"]) < abs(row["start"] - row["truth"]), (name, row)
    # and every estimate is consistent with the truth within its uncertainty
    pulls = {name: row["pull"] for name, row in params.items()}
    assert all(abs(p) < 5.0 for p in pulls.values()), pulls


def test_plots_are_written(demo_run):
    out = demo_run[0]
    for name in PLOTS:
        path = out / name
        assert path.is_file(), name
        data = path.read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 5_000, name


def test_cli_rejects_an_output_path_that_is_a_file(tmp_path, capsys):
    path = tmp_path / "not-a-folder"
    path.write_text("x")
    assert main(["demo", "--out", str(path), "--quick"]) == 2
    err = capsys.readouterr().err
    assert "diffgal demo: error: --out" in err and "exists and is not a folder" in err


def test_cli_passes_its_options_to_run_demo(tmp_path, monkeypatch):
    calls = []

    def fake_run_demo(out, **kwargs):
        calls.append((out, kwargs))
        return {}

    monkeypatch.setattr(demo_module, "run_demo", fake_run_demo)
    out = tmp_path / "new" / "folder"
    assert main(["demo", "--out", str(out), "--quick", "--seed", "7", "--no-plots"]) == 0
    monkeypatch.chdir(tmp_path)
    assert main(["demo"]) == 0
    (out1, kw1), (out2, kw2) = calls
    assert pathlib.Path(out1) == out
    assert kw1["quick"] is True and kw1["seed"] == 7 and kw1["plots"] is False
    assert pathlib.Path(out2) == pathlib.Path("diffgal-demo")
    assert kw2["quick"] is False and kw2["seed"] == 0 and kw2["plots"] is True

