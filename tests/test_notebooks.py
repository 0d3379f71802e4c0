"""Execute every `notebooks/*.py` (jupytext percent format) at a small size."""

import os
import pathlib

import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parents[1] / "notebooks").glob("*.py"))

#: What each notebook must leave behind: figures in `DIFFGAL_NOTEBOOK_OUT` and text in its outputs.
EXPECTED = {
    "chemistry_imf_snia": {
        "figures": {"imf_tracks.png", "snia_tracks.png", "final_grid.png"},
        "text": ("gradient check: jax.grad vs central finite difference", "log10_tau_ia"),
    },
    "ifu_mock_disk": {
        "figures": {"white_light.png", "velocity_map.png", "spectra.png", "quicklook.png"},
        "text": ("FITS written: ifu_mock_disk.fits", "particles per spaxel"),
    },
    "inference_chain": {
        "figures": {"sbc_ranks.png", "coverage.png", "tarp.png", "methods.png"},
        "text": ("(a) Gaussian product", "(c) hierarchical NUTS", "SBC KS p-values"),
    },
    "lagrangian_separation": {
        "figures": {"metric_training.png", "separation.png"},
        "text": ("separation (true F): case IV / max(Kepler, damped)", "separation (learned F)"),
    },
    "pipeline_swap": {
        "figures": {"gradients.png"},
        "text": ("gradient of the joint log-likelihood at the prior means", "MaNGA-like"),
    },
}


def _output_text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                parts.append(output.get("text", ""))
            elif "data" in output:
                parts.append(output["data"].get("text/plain", ""))
    return "".join(parts)


def test_notebooks_found():
    assert NOTEBOOKS, "no notebooks/*.py found"
    assert {p.stem for p in NOTEBOOKS} >= set(EXPECTED)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: pathlib.Path, tmp_path, monkeypatch, data_dir):
    jupytext = pytest.importorskip("jupytext")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")

    out = tmp_path / "out"
    # The kernel is a subprocess and inherits this environment.
    monkeypatch.setenv("DIFFGAL_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("DIFFGAL_NOTEBOOK_OUT", str(out))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")  # silences jupyter_core's path deprecation
    monkeypatch.setenv("MPLBACKEND", "Agg")
    if data_dir is not None and "DIFFGAL_DATA_DIR" not in os.environ:
        monkeypatch.setenv("DIFFGAL_DATA_DIR", str(data_dir))

    nb = jupytext.read(path)
    client = nbclient.NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()

    expected = EXPECTED.get(path.stem, {})
    figures = {p.name for p in out.glob("*.png")}
    assert expected.get("figures", set()) <= figures, figures
    text = _output_text(nb)
    for snippet in expected.get("text", ()):
        assert snippet in text, text
    if path.stem == "inference_chain" and "model comparison skipped" not in text:
        # With the TNG tables the notebook also compares yield sets.
        assert "posterior model probability" in text and "compare.png" in figures, text
