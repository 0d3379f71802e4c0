"""The HDF5 star-particle format and the streaming renderer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffgal.galaxy import exponential_disk
from diffgal.ifu import (
    StellarParticles,
    get_telescope,
    load_particles_hdf5,
    make_renderer,
    render_streaming,
    save_particles_hdf5,
)
from diffgal.spectra import synthetic_grid


def test_particle_file_round_trip_and_hyperslab(tmp_path):
    disk = exponential_disk(jax.random.key(3), 500)
    path = tmp_path / "stars.h5"
    save_particles_hdf5(path, disk, attrs={"source": "test"})
    back = load_particles_hdf5(path)
    for key in ("position", "velocity", "mass", "age", "metallicity"):
        np.testing.assert_array_equal(np.asarray(getattr(back, key)),
                                      np.asarray(getattr(disk, key)))
    part = load_particles_hdf5(path, start=100, stop=250)
    assert part.mass.shape == (150,)
    np.testing.assert_array_equal(np.asarray(part.age), np.asarray(disk.age)[100:250])
    import h5py

    with h5py.File(path) as f:
        assert f.attrs["format"] == "diffgal-star-particles"
        assert f["stars/position"].attrs["units"] == "kpc"


def test_missing_file_and_group(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_particles_hdf5(tmp_path / "none.h5")
    import h5py

    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f.create_dataset("x", data=[1])
    with pytest.raises(ValueError, match="no `/stars` group"):
        load_particles_hdf5(tmp_path / "bad.h5")


def test_streaming_equals_one_call():
    tel = get_telescope("MUSE").replace(n_x=10, n_y=10, n_wave=200, psf="gaussian",
                                        psf_fwhm_arcsec=0.4)
    r = make_renderer(tel, synthetic_grid(), v_max=300.0)
    disk = exponential_disk(jax.random.key(0), 3000, r_d_kpc=0.03, h_z_kpc=0.01, r_turn_kpc=0.01)
    whole = r(disk)
    chunks = [jax.tree.map(lambda a, i=i: a[i : i + 700], disk) for i in range(0, 3000, 700)]
    streamed = render_streaming(r, chunks, n_chunks=len(chunks), progress=False)
    np.testing.assert_allclose(np.asarray(streamed.flux), np.asarray(whole.flux), rtol=1e-10,
                               atol=1e-12 * float(jnp.max(whole.flux)))
    assert int(streamed.n_outside_fov) == int(whole.n_outside_fov)


def test_current_masses_need_a_surviving_fraction():
    grid = synthetic_grid()
    from diffgal.spectra import TemplateGrid

    bare = TemplateGrid(grid.log_age_gyr, grid.metallicity_mh, grid.wave_aa, grid.flux)
    tel = get_telescope("MUSE").replace(n_x=2, n_y=2, n_wave=50)
    r = make_renderer(tel, bare, v_max=100.0)
    p = StellarParticles(jnp.zeros((1, 3)), jnp.zeros((1, 3)), jnp.ones(1), jnp.ones(1),
                         jnp.zeros(1), mass_kind="current")
    with pytest.raises(ValueError, match="surviving-mass fraction"):
        r(p)
