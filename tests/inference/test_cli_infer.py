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
    # A marginal NPE on an informative linear toy.
    prior = ChemistryPrior()
    theta = np.asarray(prior.sample(jax.random.key(0), (3000,)))
    b = np.linspace(-1.0, 1.0, 16).reshape(8, 2) + np.eye(8, 2)
    post = train_npe(jax.random.key(1), theta, theta[:, :2] @ b.T, params=GLOBAL_NAMES,
                     noise=0.2, flow_layers=2, nn_width=16, max_epochs=15,
                     show_progress=False).posterior
    model = save_posterior(tmp_path / "npe.eqx", post)

    # Bad tables are rejected, naming what is wrong; a missing model is named first.
    table = _write_csv(tmp_path / "ok.csv", [[0.0] * 8], cols)
    assert main(["infer", "aggregate", "--posterior", str(tmp_path / "none.eqx"), "--stars",
                 str(table), "--out", str(tmp_path / "agg")]) == 2
    assert "none.eqx' does not exist" in capsys.readouterr().err
    bad = {
        "missing.csv": (cols[:-1], [[0.0] * 7]),
        "nan.csv": (cols, [[0.0] * 8, [0.0] * 7 + [""]]),
        "empty.csv": (cols, []),
    }
    expected = {"missing.csv": "lacks the columns ['[Si/Fe]']", "nan.csv": "NaN/inf entries",
                "empty.csv": "holds no stars"}
    for name, (header, rows) in bad.items():
        path = _write_csv(tmp_path / name, rows, header)
        code = main(["infer", "aggregate", "--posterior", str(model), "--stars",
                     str(path), "--out", str(tmp_path / "agg")])
        assert code == 2
        assert expected[name] in capsys.readouterr().err
    np.save(tmp_path / "seven.npy", np.zeros((3, 7)))
    assert main(["infer", "posterior", "--posterior", str(model), "--stars",
                 str(tmp_path / "seven.npy"), "--out", str(tmp_path / "d.npz")]) == 2
    assert "must have shape (n_star, 8)" in capsys.readouterr().err

    # Both commands on a CSV in another order.
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


@pytest.mark.parametrize(
    ("argv", "cached"),
    [
        (["infer", "headline", "--methods", "a"], "npe_globals_100.eqx"),
        (["infer", "compare", "--sets", "default,tng", "--mock", "default"],
         "default/emulator_100.eqx"),
    ],
)
@pytest.mark.parametrize("content", ["garbage", "emulator"])
def test_a_bad_cached_model_is_a_usage_error_before_any_simulation(
    tmp_path, capsys, monkeypatch, argv, cached, content
):
    import jax

    import diffgal.inference._compare as compare
    import diffgal.inference._headline as headline
    from diffgal.inference import Emulator, save_emulator

    def no_simulation(*args, **kwargs):
        raise AssertionError("simulated before checking the cached models")

    monkeypatch.setattr(headline, "simulate_training_set", no_simulation)
    monkeypatch.setattr(compare, "simulate_training_set", no_simulation)
    path = tmp_path / "cache" / cached
    path.parent.mkdir(parents=True)
    if content == "garbage":
        path.write_bytes(b"\x00not a model\n\xff")
    else:  # a file of another kind: an emulator where an NPE is expected, or the reverse
        if "emulator" in cached:
            path.write_bytes(b'{"format": "diffgal.inference.posterior/1"}\n')
        else:
            save_emulator(path, Emulator(width_sizes=(2,), key=jax.random.key(0)))
    code = main([*argv, "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"),
                 "--n-train", "100", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert str(path) in err and "Delete it to train it again" in err and "--cache" in err


def test_load_cached_names_a_mismatched_model(tmp_path):
    import types

    from diffgal.inference import GLOBAL_NAMES
    from diffgal.inference._training import load_cached

    six = types.SimpleNamespace(params=("imf_slope", "log10_n_ia", "log10_sfe"))
    with pytest.raises(ValueError, match=r"`f`: the cached network .*m.eqx.*`params` \('imf_sl"):
        load_cached("f", tmp_path / "m.eqx", lambda p: six, params=GLOBAL_NAMES)
    assert load_cached("f", tmp_path / "m.eqx", lambda p: six, params=six.params) is six


def test_star_tables_are_read_in_the_posterior_columns(tmp_path, monkeypatch):
    import argparse

    import jax.numpy as jnp
    import numpy as np

    import diffgal.inference as inference
    from diffgal.cli import _read_posterior_and_stars
    from diffgal.inference import GLOBAL_NAMES, ChemistryPrior, Posterior

    columns = ("[Mg/Fe]", "[Fe/H]", "[O/Fe]")  # a posterior trained on three abundances
    shell = Posterior(flow=None, prior=ChemistryPrior(), u_mean=jnp.zeros(2), u_std=jnp.ones(2),
                      x_mean=jnp.zeros(3), x_std=jnp.ones(3), params=GLOBAL_NAMES,
                      x_columns=columns, config=())
    monkeypatch.setattr(inference, "load_posterior", lambda path: shell)
    table = _write_csv(tmp_path / "stars.csv", [[1, 2, 3, 4], [5, 6, 7, 8]],
                       ["[O/Fe]", "[C/Fe]", "[Fe/H]", "[Mg/Fe]"])
    args = argparse.Namespace(posterior=tmp_path / "npe.eqx", stars=table)
    posterior, x_obs = _read_posterior_and_stars(args)
    assert posterior is shell
    np.testing.assert_array_equal(x_obs, [[4, 3, 1], [8, 7, 5]])
