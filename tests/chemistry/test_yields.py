"""Yield-set loaders: TNG (CHEMPY files, hash-checked), crimsons default set, user HDF5."""

import pathlib
import shutil
import sys

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffgal import _data
from diffgal.chemistry import _yields
from diffgal.chemistry._yields import (
    AGB_MASS_RANGE,
    CC_MASS_RANGE,
    DEFAULT_ELEMENTS,
    Yields,
    available_yield_sets,
    initial_composition,
    load_yields,
    write_yields_hdf5,
)

TNG_SPECIES = ("H", "He", "C", "N", "O", "Ne", "Mg", "Si", "S", "Ca", "Fe")
CRIMSONS_SPECIES = (
    "H", "He", "Li", "Be", "B", "C", "N", "O", "F", "Ne", "Na", "Mg", "Al", "Si", "P", "S",
    "Cl", "Ar", "K", "Ca", "Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn",
)  # fmt: skip


def _arrays(yields: Yields) -> dict[str, np.ndarray]:
    out = {}
    for channel in ("cc", "agb"):
        table = getattr(yields, channel)
        for field in (
            "metallicities",
            "masses",
            "net_yields",
            "ejected_fraction",
            "remnant_fraction",
        ):
            out[f"{channel}.{field}"] = np.asarray(getattr(table, field))
    out["snia.yields_per_event"] = np.asarray(yields.snia.yields_per_event)
    out["snia.ejecta_mass"] = np.asarray(yields.snia.ejecta_mass)
    return out


def _copy_tng(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
    folder = dst / "yields" / "tng"
    folder.mkdir(parents=True)
    for name in _data.TNG_SHA256:
        shutil.copyfile(src / "yields" / "tng" / name, folder / name)
    return folder


# ---- data directory and TNG files -----------------------------------------------------------


def test_data_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("DIFFGAL_DATA_DIR", raising=False)
    assert _data.data_dir() is None
    monkeypatch.setenv("DIFFGAL_DATA_DIR", str(tmp_path / "env"))
    assert _data.data_dir() == tmp_path / "env"
    assert _data.data_dir(tmp_path / "explicit") == tmp_path / "explicit"


def test_tng_registry_urls_are_pinned():
    assert set(_data.TNG_SHA256) == {"SNII.hdf5", "AGB.hdf5", "SNIa.hdf5"}
    for name, url in _data.TNG_URLS.items():
        assert url == (
            "https://raw.githubusercontent.com/jan-rybizki/Chempy/"
            f"18260a0647b448a8a937384271c8a4de8702aefe/Chempy/input/yields/TNG/{name}"
        )
        assert len(_data.TNG_SHA256[name]) == 64


def test_missing_tng_files_message(tmp_path):
    assert not _data.tng_files_present(tmp_path)
    with pytest.raises(FileNotFoundError) as info:
        _data.tng_yield_paths(tmp_path)
    message = str(info.value)
    assert "DIFFGAL_DATA_DIR" in message and "fetch_tng_yields" in message
    assert "yields/tng" in message
    with pytest.raises(FileNotFoundError, match="DIFFGAL_DATA_DIR"):
        load_yields("tng", data_dir=tmp_path)
    assert "fetch_tng_yields" in available_yield_sets(tmp_path)["tng"]


def test_tng_paths_verified(tng_data_dir):
    paths = _data.tng_yield_paths(tng_data_dir)
    assert set(paths) == set(_data.TNG_SHA256)
    assert all(p.is_file() for p in paths.values())
    assert _data.tng_files_present(tng_data_dir)
    assert available_yield_sets(tng_data_dir)["tng"] == "available"


def test_tampered_copy_is_rejected(tng_data_dir, tmp_path):
    folder = _copy_tng(tng_data_dir, tmp_path)
    assert _data.tng_yield_paths(tmp_path)["SNII.hdf5"].parent == folder  # intact copy is fine
    target = folder / "SNII.hdf5"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(ValueError) as info:
        _data.tng_yield_paths(tmp_path)
    message = str(info.value)
    assert "SNII.hdf5" in message and _data.TNG_SHA256["SNII.hdf5"] in message
    with pytest.raises(ValueError, match="SHA-256"):
        load_yields("tng", data_dir=tmp_path)


def test_fetch_reuses_verified_files_offline(tng_data_dir, tmp_path):
    pytest.importorskip("pooch")
    folder = _copy_tng(tng_data_dir, tmp_path)
    paths = _data.fetch_tng_yields(tmp_path)  # hashes match: pooch does not download
    assert {p.parent for p in paths.values()} == {folder}


def test_fetch_without_pooch_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "pooch", None)
    with pytest.raises(ImportError, match=r'pip install "diffgal\[data\]"'):
        _data.fetch_tng_yields(tmp_path)


# ---- TNG yield set ------------------------------------------------------------------------


def test_tng_cc_table(tng_data_dir):
    yields = load_yields("tng", data_dir=tng_data_dir)
    cc = yields.cc
    assert yields.name == "tng" and yields.elements == DEFAULT_ELEMENTS
    np.testing.assert_array_equal(cc.masses, [100, 60, 40, 30, 25, 20, 18, 15, 13, 12, 9, 8])
    np.testing.assert_array_equal(cc.metallicities, np.float32([0.0, 0.001, 0.004, 0.02]))
    assert cc.metallicities[1] == 0.0010000000474974513  # float32 as stored
    assert cc.mass_range == CC_MASS_RANGE and cc.log_z_floor == 1e-10
    assert cc.net_yields.shape == (4, 12, 9)
    assert cc.ejected_fraction.shape == cc.remnant_fraction.shape == (4, 12)
    for array in _arrays(yields).values():
        assert isinstance(array, np.ndarray) and array.dtype == np.float64
    # Ejecta fraction 0.60-0.80 for 8-40 Msun at Z = 0 (the TNG README); 0.43 at 60 Msun.
    low = cc.masses <= 40
    assert np.all((cc.ejected_fraction[0, low] > 0.4) & (cc.ejected_fraction[0, low] < 0.85))
    np.testing.assert_allclose(cc.ejected_fraction[0, cc.masses == 60], 0.426, atol=1e-3)


def test_tng_agb_table(tng_data_dir):
    agb = load_yields("tng", data_dir=tng_data_dir).agb
    expected = [7.5, 7, 6, 5.5, 5, 4.5, 4, 3.5, 3, 2.5, 2.25, 2, 1.9, 1.75, 1.5, 1.25, 1]
    np.testing.assert_array_equal(agb.masses, np.float32(expected))  # float32 as stored
    np.testing.assert_array_equal(agb.metallicities, np.float32([1e-4, 0.004, 0.008, 0.02]))
    assert agb.mass_range == AGB_MASS_RANGE
    assert agb.net_yields.shape == (4, 17, 9)


def test_tng_float32_arithmetic_matches_chempy(tng_data_dir):
    """y_net and f_rem are float32 divisions; f_ej uses a float64 running sum (ChempyMulti)."""
    yields = load_yields("tng", elements=TNG_SPECIES, data_dir=tng_data_dir)
    with h5py.File(tng_data_dir / "yields" / "tng" / "SNII.hdf5") as file:
        masses = file["Masses"][()]
        table = file["Yields/Z_0.02/Yield"][()]
        ejected = file["Yields/Z_0.02/Ejected_mass"][()]
    column = list(masses).index(np.float32(40.0))
    expected_net = np.array([row[column] / masses[column] for row in table])  # float32 scalars
    np.testing.assert_array_equal(yields.cc.net_yields[3, 2], expected_net.astype(np.float64))
    remnant = (masses[column] - ejected[column]) / masses[column]
    assert yields.cc.remnant_fraction[3, 2] == np.float64(remnant)
    summed = np.float64(0.0)
    for value in expected_net:
        summed += value
    assert yields.cc.ejected_fraction[3, 2] == 1.0 - summed - np.float64(remnant)


@pytest.mark.parametrize("channel, bound", [("cc", 2e-6), ("agb", 4.3e-3)])
def test_tng_net_yields_sum_to_zero(tng_data_dir, channel, bound):
    table = getattr(load_yields("tng", elements=TNG_SPECIES, data_dir=tng_data_dir), channel)
    per_star = table.net_yields.sum(axis=-1) * table.masses  # Msun per star
    assert np.max(np.abs(per_star)) < bound  # the TNG README: 2e-6 (SN II), 4.2e-3 (AGB)
    total = table.net_yields.sum(axis=-1) + table.ejected_fraction + table.remnant_fraction
    np.testing.assert_allclose(total, 1.0, rtol=0, atol=1e-15)


def test_tng_snia(tng_data_dir):
    snia = load_yields("tng", data_dir=tng_data_dir).snia
    np.testing.assert_allclose(snia.ejecta_mass, 1.3743416, rtol=1e-7)
    fe = snia.yields_per_event[DEFAULT_ELEMENTS.index("Fe")]
    np.testing.assert_allclose(fe, 0.743, rtol=1e-3)
    assert snia.yields_per_event[0] == 0.0  # no hydrogen
    np.testing.assert_allclose(snia.accreted_hydrogen, 1.3743416 - 0.3 * 2.156, rtol=1e-7)


def test_tng_element_selection(tng_data_dir):
    subset = load_yields("tng", elements=("Fe", "H"), data_dir=tng_data_dir)
    full = load_yields("tng", data_dir=tng_data_dir)
    np.testing.assert_array_equal(subset.cc.net_yields[..., 0], full.cc.net_yields[..., -1])
    np.testing.assert_array_equal(subset.cc.ejected_fraction, full.cc.ejected_fraction)
    with pytest.raises(ValueError, match="not in the 'tng' yield set") as info:
        load_yields("tng", elements=("H", "Na"), data_dir=tng_data_dir)
    assert "'Ca'" in str(info.value)  # lists the valid symbols


def test_tng_cached(tng_data_dir):
    first = load_yields("tng", data_dir=tng_data_dir)
    assert load_yields("tng", elements=list(DEFAULT_ELEMENTS), data_dir=tng_data_dir) is first


# ---- default (crimsons) yield set ------------------------------------------------------------


def test_default_set_structure():
    yields = load_yields("default")
    assert yields.name == "default" and available_yield_sets()["default"] == "available"
    assert load_yields("DEFAULT") is yields  # cached, case-insensitive name
    for table, (lo, hi) in ((yields.cc, CC_MASS_RANGE), (yields.agb, AGB_MASS_RANGE)):
        assert np.all((table.masses >= lo) & (table.masses <= hi))
        assert np.all(np.diff(table.masses) < 0)
        assert np.all(np.diff(table.metallicities) > 0)
        assert np.all((table.remnant_fraction > 0) & (table.remnant_fraction < 1))
        assert np.all((table.ejected_fraction > 0) & (table.ejected_fraction < 1))
    np.testing.assert_array_equal(yields.cc.masses, [40, 30, 25, 20, 18, 15, 13])
    np.testing.assert_array_equal(yields.cc.metallicities, [0.001, 0.004, 0.008, 0.02, 0.05])
    assert yields.agb.masses[0] == 6.0 and yields.agb.masses[-1] == 1.0
    assert any("Nomoto" in r for r in yields.references)
    assert any("Iwamoto" in r for r in yields.references)
    assert any("crimsons" in r for r in yields.references)


def test_default_net_yields_sum_to_zero():
    """CC-SN: exact by construction (X_init sums to 1 over H..Zn), so rounding level 1e-12.
    AGB: the table's own net yields; Nomoto+13 round each isotope to 5 significant digits, so
    |sum| reaches 2.6e-5 Msun per star (5.3e-6 per unit mass): bound 1e-5 per unit mass."""
    yields = load_yields("default", elements=CRIMSONS_SPECIES)
    assert np.max(np.abs(yields.cc.net_yields.sum(axis=-1))) < 1e-12
    assert np.max(np.abs(yields.agb.net_yields.sum(axis=-1))) < 1e-5
    for table in (yields.cc, yields.agb):
        total = table.net_yields.sum(axis=-1) + table.ejected_fraction + table.remnant_fraction
        np.testing.assert_allclose(total, 1.0, rtol=0, atol=1e-14)


def test_default_cc_is_total_ejecta_converted():
    """Independent of the loader: f_ej = sum(ejecta)/M and y_net + f_ej X_init = y_tot / M."""
    yields = load_yields("default", elements=CRIMSONS_SPECIES)
    with h5py.File(_yields._crimsons_yield_file()) as file:
        group = file["SNII/Nomoto13_PopII"]
        raw = group["yields"][()][..., 1:]  # drop the Energy entry
        masses = group["mass"][()]
        metallicities = group["metallicity"][()]
    order = np.argsort(-masses)
    np.testing.assert_allclose(
        yields.cc.ejected_fraction, raw.sum(-1)[:, order] / masses[order], rtol=1e-12
    )
    x_init = np.stack([initial_composition(z, CRIMSONS_SPECIES) for z in metallicities])
    returned = yields.cc.net_yields + yields.cc.ejected_fraction[..., None] * x_init[:, None]
    np.testing.assert_allclose(returned, raw[:, order] / masses[order, None], rtol=1e-9, atol=1e-15)


def test_initial_composition():
    for z in (0.001, 0.0142, 0.05):
        x = initial_composition(z, CRIMSONS_SPECIES)
        np.testing.assert_allclose(x.sum(), 1.0, rtol=1e-15)
        np.testing.assert_allclose(x[2:].sum(), z, rtol=1e-12)
        np.testing.assert_allclose(x[1], 0.2485 + 1.7 * z)
    # Solar metal ratios: O/Fe by mass from Asplund+09.
    x = initial_composition(0.0142, CRIMSONS_SPECIES)
    ratio = x[CRIMSONS_SPECIES.index("O")] / x[CRIMSONS_SPECIES.index("Fe")]
    np.testing.assert_allclose(ratio, 10 ** (8.69 - 7.50) * 15.9994 / 55.845, rtol=1e-12)


def test_default_snia_w7():
    snia = load_yields("default").snia
    assert 1.36 < float(snia.ejecta_mass) < 1.38  # Iwamoto+99 W7: 1.3708 Msun
    fe = snia.yields_per_event[DEFAULT_ELEMENTS.index("Fe")]
    assert 0.6 < fe < 0.75  # 0.749
    assert snia.yields_per_event[0] < 1e-20  # H is a 1e-30 placeholder


def test_default_unknown_element():
    with pytest.raises(ValueError, match="not in the 'default' yield set") as info:
        load_yields("default", elements=("H", "Fe", "Mo"))
    assert "'Zn'" in str(info.value)


# ---- names, arguments, caching ---------------------------------------------------------------


def test_unknown_set_name():
    with pytest.raises(ValueError) as info:
        load_yields("chempy_default")
    message = str(info.value)
    assert "'tng'" in message and "'default'" in message and ".hdf5" in message


@pytest.mark.parametrize("elements", ["Fe", ("H", 1)])
def test_elements_must_be_symbols(elements):
    with pytest.raises(TypeError, match="element symbols"):
        load_yields("default", elements=elements)


def test_repeated_elements_rejected():
    with pytest.raises(ValueError, match="without repeats"):
        load_yields("default", elements=("H", "Fe", "H"))


def test_yields_work_under_jit_and_x64_independent():
    yields = load_yields("default")

    @jax.jit
    def total_fe(y):
        return jnp.sum(jnp.asarray(y.cc.net_yields)[..., -1]) + y.snia.yields_per_event[-1]

    assert jnp.isfinite(total_fe(yields))
    assert total_fe(yields).dtype == jnp.float64  # tests run with x64; arrays stay float64


# ---- user HDF5 layout -----------------------------------------------------------------------


def test_user_file_round_trip(tmp_path):
    original = load_yields("default")
    path = write_yields_hdf5(tmp_path / "mine.h5", original)
    loaded = load_yields(str(path), elements=original.elements)
    assert loaded is not original
    for key, array in _arrays(original).items():
        np.testing.assert_array_equal(_arrays(loaded)[key], array, err_msg=key)
    assert loaded.name == "default" and loaded.references == original.references
    assert loaded.cc.mass_range == original.cc.mass_range
    assert loaded.cc.reference == original.cc.reference
    assert loaded.snia.progenitor_mass == original.snia.progenitor_mass
    assert load_yields(path, elements=original.elements) is loaded  # PathLike, cached


def test_user_file_round_trip_tng(tng_data_dir, tmp_path):
    original = load_yields("tng", data_dir=tng_data_dir)
    path = write_yields_hdf5(tmp_path / "tng_copy.hdf5", original)
    loaded = load_yields(path)
    for key, array in _arrays(original).items():
        np.testing.assert_array_equal(_arrays(loaded)[key], array, err_msg=key)


def _write_minimal(path, *, net_shape_ok=True):
    with h5py.File(path, "w") as file:
        for name, masses, mass_range in (
            ("cc", [10.0, 120.0, 20.0], (8.0, 100.0)),
            ("agb", [2.0, 5.0], (1.0, 8.0)),
        ):
            group = file.create_group(name)
            n_mass = len(masses)
            group["metallicities"] = [0.02, 0.0]
            group["masses"] = masses
            group["elements"] = np.array(["H", "He", "O", "Fe", "Xx"], dtype="S")
            net = np.broadcast_to([-0.1, 0.06, 0.03, 0.004, 0.006], (2, n_mass, 5)).copy()
            net[1] *= 2  # the Z = 0 table (stored second)
            group["net_yields"] = net if net_shape_ok else net[..., :4]
            group["remnant_fraction"] = np.full((2, n_mass), 0.2)
            group.attrs["mass_range"] = mass_range
            group.attrs["reference"] = f"toy {name}"
        snia = file.create_group("snia")
        snia["elements"] = np.array(["H", "O", "Fe", "Ni"], dtype="S")
        snia["yields_per_event"] = [0.0, 0.1, 0.7, 0.1]


def test_user_file_minimal_layout(tmp_path):
    path = tmp_path / "toy.hdf5"
    _write_minimal(path)
    yields = load_yields(path, elements=("H", "O", "Fe"))
    np.testing.assert_array_equal(yields.cc.masses, [20.0, 10.0])  # 120 dropped, descending
    np.testing.assert_array_equal(yields.cc.metallicities, [0.0, 0.02])  # sorted ascending
    np.testing.assert_allclose(yields.cc.net_yields[0, 0], [-0.2, 0.06, 0.008])  # Z = 0 table
    # f_ej = 1 - sum over all 5 species in the file - f_rem (the untraced He and Xx count).
    np.testing.assert_allclose(yields.cc.ejected_fraction[1], 1.0 - 0.0 - 0.2, atol=1e-15)
    np.testing.assert_allclose(yields.snia.ejecta_mass, 0.9)
    assert yields.snia.progenitor_mass == 2.156 and yields.name == "toy"
    assert yields.references == ("toy cc", "toy agb")
    with pytest.raises(ValueError, match="Valid symbols"):
        load_yields(path, elements=("H", "Mg"))


def test_user_file_bad_shape(tmp_path):
    path = tmp_path / "bad.h5"
    _write_minimal(path, net_shape_ok=False)
    with pytest.raises(ValueError, match=r"net_yields must have shape"):
        load_yields(path, elements=("H", "Fe"))


def test_user_file_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="no yield file"):
        load_yields(tmp_path / "absent.h5")
