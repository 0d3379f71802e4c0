import json

import jax
import pytest

from diffgal.cli import main


def test_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "diffgal" in out
    assert f"jax            {jax.__version__}" in out
    assert "yield sets" in out
    assert "default" in out
    assert "templates" in out


def test_chemistry_default_yields_plot_and_json(tmp_path, capsys):
    plot = tmp_path / "tmp" / "tracks.png"
    record = tmp_path / "abundances.json"
    status = main(["chemistry", "--yields", "default", "--plot", str(plot), "--json", str(record)])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "[Fe/H]" in out
    assert "status     ok" in out
    assert plot.read_bytes().startswith(b"\x89PNG")
    data = json.loads(record.read_text())
    assert data["yields"] == "default"
    assert not data["failed"]
    assert set(data["birth"]["x_fe"]) >= {"C", "N", "O", "Mg", "Fe"}
    assert len(data["tracks"]["time"]) == 28


def test_chemistry_no_x64_restores_flag(capsys):
    assert jax.config.read("jax_enable_x64")
    assert main(["chemistry", "--yields", "default", "--no-x64", "--mode", "smooth"]) == 0
    assert "float32" in capsys.readouterr().out
    assert jax.config.read("jax_enable_x64")


def test_chemistry_auto_picks_tng(tng_data_dir, capsys):
    assert main(["chemistry", "--yields", "auto", "--data-dir", str(tng_data_dir)]) == 0
    out = capsys.readouterr().out
    assert "yields     tng" in out
    assert "[Fe/H]" in out


def test_chemistry_auto_falls_back_to_default(tmp_path, capsys):
    assert main(["chemistry", "--data-dir", str(tmp_path)]) == 0
    assert "yields     default" in capsys.readouterr().out


def test_missing_tng_tables_is_a_clean_error(tmp_path, capsys):
    assert main(["chemistry", "--yields", "tng", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "error" in err
    assert "DIFFGAL_DATA_DIR" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["chemistry", "--x-out", "1.5"],
        ["chemistry", "--t-birth", "-1"],
        ["chemistry", "--t-birth", "20"],
    ],
)
def test_bad_values_exit_2(argv, capsys):
    assert main(argv) == 2
    assert "error" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv", [[], ["nonsense"], ["chemistry", "--alpha-imf", "steep"], ["chemistry", "--mode", "x"]]
)
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as excinfo:
        main(argv)
    assert excinfo.value.code == 2
    assert "usage" in capsys.readouterr().err
