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
