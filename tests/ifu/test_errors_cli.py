"""Bad input gets clear errors naming the argument; the `diffgal ifu` commands work."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffgal.cli import main
from diffgal.ifu import StellarParticles, get_telescope, make_renderer, render
from diffgal.spectra import synthetic_grid


@pytest.fixture(scope="module")
def grid():
    return synthetic_grid()


def good(n=5):
    rng = np.random.default_rng(0)
    return {
        "position": rng.normal(0, 0.01, (n, 3)),
        "velocity": rng.normal(0, 50, (n, 3)),
        "mass": np.full(n, 1e4),
        "age": np.full(n, 3.0),
        "metallicity": np.zeros(n),
    }


SMALL = get_telescope("MUSE").replace(n_x=4, n_y=4, n_wave=100)


def test_mismatched_particle_lengths(grid):
    data = good()
    data["age"] = data["age"][:-1]
    with pytest.raises(ValueError, match=r"share their first axis.*'age': 4"):
        render(data, SMALL, grid)


def test_missing_particle_key(grid):
    data = good()
    del data["velocity"]
    with pytest.raises(ValueError, match=r"lacks the keys \['velocity'\]"):
        render(data, SMALL, grid)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("mass", -1.0, r"`mass` must be >= 0"),
        ("mass", np.nan, r"particle `mass` has 1 non-finite"),
        ("position", np.nan, r"particle `position` has 1 non-finite"),
        ("velocity", np.inf, r"particle `velocity` has 1 non-finite"),
        ("age", -2.0, r"`age` must be >= 0 Gyr"),
    ],
)
def test_bad_particle_values(grid, key, value, message):
    data = good()
    data[key] = np.array(data[key], float)
    data[key][2] = value
    with pytest.raises(ValueError, match=message):
        render(data, SMALL, grid)


def test_bad_values_under_jit_raise_too(grid):
    r = make_renderer(SMALL, grid, v_max=100.0)
    data = good()
    p = StellarParticles(*(jnp.asarray(data[k]) for k in
                           ("position", "velocity", "mass", "age", "metallicity")))
    bad = StellarParticles(p.position, p.velocity, p.mass.at[1].set(jnp.nan), p.age,
                           p.metallicity)
    with pytest.raises(Exception, match=r"particle `mass` must be finite and >= 0"):
        jax.jit(lambda q: r(q).flux)(bad).block_until_ready()


def test_unknown_telescope_lists_presets(grid):
    with pytest.raises(ValueError, match=r"MUSE_WFM.*SAMI|SAMI.*MUSE_WFM"):
        render(good(), "MOOSE", grid)


def test_wavelength_range_outside_the_templates(grid):
    tel = get_telescope("MUSE").replace(n_x=2, n_y=2, wave_start_aa=9000.0, n_wave=2000)
    with pytest.raises(ValueError, match=r"templates cover only 3000.0-10000.0 Å"):
        render(good(), tel, grid)


def test_noise_without_a_key(grid):
    with pytest.raises(ValueError, match=r"`noise` needs a PRNG `key`"):
        render(good(), SMALL, grid, noise=30.0)


def test_distance_and_redshift_together(grid):
    with pytest.raises(ValueError, match=r"either `distance_mpc`.*or `redshift`"):
        render(good(), SMALL, grid, distance_mpc=20.0, redshift=0.05)


def test_cli_mock_then_render(tmp_path, capsys):
    snap = tmp_path / "disk.h5"
    assert main(["ifu", "mock", str(snap), "--n", "3000", "--seed", "1"]) == 0
    out = tmp_path / "cube.fits"
    code = main(["ifu", "render", str(snap), "--telescope", "MUSE", "--out", str(out),
                 "--templates", "synthetic", "--inclination", "45", "--snr", "20",
                 "--no-progress", "--chunk", "1000"])
    assert code == 0
    text = capsys.readouterr().out
    assert "3000 in 3 chunks" in text and "wrote" in text
    from astropy.io import fits

    with fits.open(out) as hdul:
        assert hdul["DATA"].data.shape == (3721, 25, 25)
        assert hdul["STAT"].data.shape == (3721, 25, 25)
        assert np.nansum(hdul["DATA"].data) > 0


def test_cli_render_errors(tmp_path, capsys):
    assert main(["ifu", "render", str(tmp_path / "nope.h5"), "--out", "x.fits"]) == 2
    assert "not found" in capsys.readouterr().err
