"""`diffgal infer`: usage errors are exit code 2 with a message naming the option."""

import pytest

from diffgal.cli import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["infer", "headline", "--out", "{tmp}/o", "--methods", "a,z"], "--methods"),
        (["infer", "headline", "--out", "{tmp}/o", "--stars", "0"], "--stars"),
        (["infer", "simulate", "--n", "0", "--out", "{tmp}/s"], "--n and --shard-size"),
        (["infer", "train", "emulator", "--sims", "{tmp}/none", "--out", "{tmp}/e"], "manifest"),
    ],
)
def test_usage_errors(tmp_path, capsys, argv, message):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_simulate_then_resume_train_needs_a_checkpoint(tmp_path, capsys):
    sims = tmp_path / "sims"
    argv = ["infer", "simulate", "--n", "30", "--out", str(sims), "--yields", "default",
            "--no-progress"]
    assert main(argv) == 0
    assert main(argv) == 0  # a second call finds every shard done
    assert "wrote 30 runs" in capsys.readouterr().out
    code = main(["infer", "train", "emulator", "--sims", str(sims), "--out",
                 str(tmp_path / "e.eqx"), "--resume"])
    assert code == 2
    assert "--resume: no checkpoint" in capsys.readouterr().err


def _write_csv(path, rows, header):
    path.write_text(",".join(header) + "\n" + "\n".join(",".join(map(str, r)) for r in rows))
    return path


def test_star_tables_and_aggregate(tmp_path, capsys):
    import jax
    import numpy as np

    from diffgal.chemistry import SBI_CHEMPY_COLUMNS
    from diffgal.inference import GLOBAL_NAMES, ChemistryPrior, save_posterior, train_npe

    cols = list(SBI_CHEMPY_COLUMNS)
    # Bad tables are rejected before any model is loaded, naming what is wrong.
    bad = {
        "missing.csv": (cols[:-1], [[0.0] * 7]),
        "nan.csv": (cols, [[0.0] * 8, [0.0] * 7 + [""]]),
        "empty.csv": (cols, []),
    }
    expected = {"missing.csv": "lacks the columns ['[Si/Fe]']", "nan.csv": "NaN/inf entries",
                "empty.csv": "holds no stars"}
    for name, (header, rows) in bad.items():
        path = _write_csv(tmp_path / name, rows, header)
        code = main(["infer", "aggregate", "--posterior", str(tmp_path / "none.eqx"), "--stars",
                     str(path), "--out", str(tmp_path / "agg")])
        assert code == 2
        assert expected[name] in capsys.readouterr().err
    np.save(tmp_path / "seven.npy", np.zeros((3, 7)))
    assert main(["infer", "posterior", "--posterior", "x.eqx", "--stars",
                 str(tmp_path / "seven.npy"), "--out", str(tmp_path / "d.npz")]) == 2
    assert "must have shape (n_star, 8)" in capsys.readouterr().err

    # A marginal NPE on an informative linear toy, then both commands on a CSV in another order.
    prior = ChemistryPrior()
    theta = np.asarray(prior.sample(jax.random.key(0), (3000,)))
    b = np.linspace(-1.0, 1.0, 16).reshape(8, 2) + np.eye(8, 2)
    post = train_npe(jax.random.key(1), theta, theta[:, :2] @ b.T, params=GLOBAL_NAMES,
                     noise=0.2, flow_layers=2, nn_width=16, max_epochs=15,
                     show_progress=False).posterior
    model = save_posterior(tmp_path / "npe.eqx", post)
    stars = np.array([-2.3, -2.89]) @ b.T + 0.2 * np.random.default_rng(0).normal(size=(30, 8))
    order = cols[::-1]
    table = _write_csv(tmp_path / "stars.csv", stars[:, ::-1].tolist(), order)
    assert main(["infer", "posterior", "--posterior", str(model), "--stars", str(table),
                 "--out", str(tmp_path / "d.npz"), "--draws", "50"]) == 0
    with np.load(tmp_path / "d.npz") as f:
        assert f["draws"].shape == (30, 50, 2)
    assert (tmp_path / "d_corner.png").stat().st_size > 0
    assert main(["infer", "aggregate", "--posterior", str(model), "--stars", str(table),
                 "--out", str(tmp_path / "agg"), "--no-nuts"]) == 0
    import json

    summary = json.loads((tmp_path / "agg" / "summary.json").read_text())
    a = summary["methods"]["a_gaussian_product"]
    assert summary["n_stars"] == 30
    assert abs(a["imf_slope"]["mean"] + 2.3) < 0.1 and a["imf_slope"]["sigma"] < 0.1
