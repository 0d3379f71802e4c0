"""Nucleosynthetic yield tables behind one interface.

The class definitions below are the contract used by the SSP kernel in `_ssp.py`.
Loaders (TNG HDF5 files, the `crimsons` default set, user HDF5 layout) live in this file too.

Every loader returns numpy float64 arrays, so loading does not depend on JAX's x64 flag; the
model converts them with `jnp.asarray` where they are used. `load_yields` caches each
(set, elements, source) once per process.

**`"tng"`**: the IllustrisTNG tables as shipped with CHEMPY (`SNII.hdf5`, `AGB.hdf5`,
`SNIa.hdf5`, SHA-256 checked, see `diffgal._data`). Reproduces ChempyMulti's `TNG_net` loaders:
`y_net = Yield / M` and `f_rem = (M - Ejected_mass) / M` in float32, `f_ej = 1 - sum(y_net) -
f_rem` with a float64 sum over all 11 species; CC-SN masses 8 <= M <= 100 (120 dropped), AGB all
17 masses; masses descending. SN Ia: the `Yield` entries of the traced elements and the float32
sum of all 42 species (1.3743416 Msun) as ejecta mass. The original's CC-SN loader warns that
these tables "only work for IMF slope -2.3"; sbi-chempy nevertheless infers the IMF slope with
them.

**`"default"`**: offline, from `crimsons` 0.1.2 (`crimsons/yields/data/stellar_yields.h5`, MIT).
Inspection of that file (axes attribute `(metallicity, mass, elements)`; element axis
`Energy, H, He, ..., Zn`, where `Energy` is the explosion energy in erg, 1e51 for CC-SN, 1.2e51
for SN Ia, 0 for AGB, and is not an element):

- `SNII/Nomoto13_PopII` (Nomoto, Kobayashi & Tominaga 2013): **total** SN ejecta per star in
  Msun, all entries >= 0, H = 3.6-12.9 Msun; Z = 0.001, 0.004, 0.008, 0.02, 0.05 (absolute);
  M = 13-40 Msun. The sum over H..Zn is the SN ejecta only (e.g. 11.3 Msun at 13 Msun,
  Z = 0.001; 19.6 Msun at 40 Msun, Z = 0.02): the pre-SN wind mass of the Nomoto+13 models is
  not in the table, and neither is the remnant (mass cut). diffgal sets
  `M_rem = M - sum(ejecta)`, so the wind mass counts as remnant (large at high Z and M:
  f_rem = 0.51 at 40 Msun, Z = 0.02, where Nomoto+13 give a 2.21 Msun remnant), and converts
  to net yields `y_net = (y_tot - (M - M_rem) X_init) / M` with the initial composition
  `initial_composition(Z)`: Y = 0.2485 + 1.7 Z, X = 1 - Y - Z, metals in Asplund+09 solar
  ratios summing to Z. Then `sum(y_net) = 0` to rounding and `f_ej = 1 - sum(y_net) - f_rem =
  sum(ejecta) / M`.
- `AGB/Nomoto13_PopII` (Karakas 2010 as compiled by Nomoto+13): **net** yields per star in Msun
  (H < 0; |sum over H..Zn| <= 2.6e-5 Msun, <= 5e-6 per unit mass); Z as for CC-SN (the Z = 0.05
  rows repeat Z = 0.02, as in the Nomoto+13 compilation itself); M = 1-6 Msun (1.2, 1.8 and 2.2
  are the compilation's labels of Karakas' 1.25, 1.75 and 2.25). The table carries no remnant
  mass: diffgal uses the Kalirai et al. (2008) relation M_final = 0.109 M + 0.394 Msun.
  `AGB/VanDenHoek97` and `AGB/Meynet02` are not used: their H and He entries are 0 and their
  element sums are 0-0.19 Msun, i.e. incomplete.
- `SNIa/Iwamoto99`, model `W7`: ejected mass per event in Msun, 1.3708 Msun over H..Zn
  (Fe 0.749); H and He are 1e-30 placeholders. The `mass` axis value 1.2 has no documented
  meaning and is ignored; the W7 row's metallicity is 0.0142.

Both stellar channels keep the channel mass ranges (8, 100) and (1, 8) Msun: the outermost
table masses bin out to those limits.

**User files**: `load_yields("path/to/file.h5")` reads the layout written by
`write_yields_hdf5` (see `docs/yields.md`).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import pathlib
import typing
from collections.abc import Sequence

import equinox as eqx
import numpy as np
from jaxtyping import Array, Float

from .._data import tng_yield_paths
from ._solar import ASPLUND09, ATOMIC_WEIGHTS

#: Elements traced by default, in atomic-number order (the model's state vector).
DEFAULT_ELEMENTS: tuple[str, ...] = ("H", "He", "C", "N", "O", "Ne", "Mg", "Si", "Fe")


@typing.final
class StellarYieldTable(eqx.Module):
    """Net yields of one stellar channel (CC-SN or AGB) on a (metallicity, mass) grid.

    **Fields:**

    - `metallicities`: table metallicities Z (absolute mass fraction), ascending, as stored.
    - `masses`: initial stellar masses [Msun] inside `mass_range`, **descending**.
    - `net_yields`: net yield per unit initial stellar mass, `Yield_X / M`, for the traced elements,
      shape `(n_z, n_mass, n_elem)`.
    - `ejected_fraction`: "unprocessed ejecta" fraction
      `f_ej = 1 - sum_{all table species} y_net - f_rem`, shape `(n_z, n_mass)`. It is returned with
      the birth composition of the stellar population.
    - `remnant_fraction`: `f_rem = (M - M_ejected) / M`, shape `(n_z, n_mass)`.
    - `mass_range`: (lower, upper) mass limits of the channel [Msun] (static). The outer bin edges.
    - `log_z_floor`: value replacing a table metallicity of 0 inside the logarithm (static).
    - `elements`: traced element symbols, the last axis of `net_yields` (static).
    - `reference`: the papers behind the table (static).
    """

    metallicities: Float[Array, " n_z"]
    masses: Float[Array, " n_mass"]
    net_yields: Float[Array, "n_z n_mass n_elem"]
    ejected_fraction: Float[Array, "n_z n_mass"]
    remnant_fraction: Float[Array, "n_z n_mass"]
    mass_range: tuple[float, float] = eqx.field(static=True)
    log_z_floor: float = eqx.field(static=True, default=1e-10)
    elements: tuple[str, ...] = eqx.field(static=True, default=DEFAULT_ELEMENTS)
    reference: str = eqx.field(static=True, default="")


@typing.final
class SNIaYieldTable(eqx.Module):
    """SN Ia ejecta per event (single metallicity).

    **Fields:**

    - `yields_per_event`: ejected mass of each traced element per event [Msun], shape `(n_elem,)`.
    - `ejecta_mass`: total ejected mass per event [Msun], summed over **all** table species.
    - `progenitor_mass`: mass of the exploding binary's progenitor [Msun] (CHEMPY: 2.156).
    - `remnant_fraction`: remnant mass per unit progenitor mass (CHEMPY: 0.3). The difference
      `ejecta_mass - remnant_fraction * progenitor_mass` is removed from hydrogen (mass accreted
      onto the white dwarf).
    """

    yields_per_event: Float[Array, " n_elem"]
    ejecta_mass: Float[Array, ""]
    progenitor_mass: float = eqx.field(static=True, default=2.156)
    remnant_fraction: float = eqx.field(static=True, default=0.3)
    elements: tuple[str, ...] = eqx.field(static=True, default=DEFAULT_ELEMENTS)
    reference: str = eqx.field(static=True, default="")

    @property
    def accreted_hydrogen(self) -> Float[Array, ""]:
        """Hydrogen mass removed per event [Msun]."""
        return self.ejecta_mass - self.remnant_fraction * self.progenitor_mass


@typing.final
class Yields(eqx.Module):
    """A complete yield set: CC-SN, AGB and SN Ia channels for one list of traced elements."""

    cc: StellarYieldTable
    agb: StellarYieldTable
    snia: SNIaYieldTable
    name: str = eqx.field(static=True, default="custom")
    references: tuple[str, ...] = eqx.field(static=True, default=())

    @property
    def elements(self) -> tuple[str, ...]:
        return self.cc.elements




# --------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------

#: Names of the built-in yield sets accepted by `load_yields` (a path to an HDF5 file also works).
YIELD_SET_NAMES: tuple[str, ...] = ("tng", "default")

#: Mass limits [Msun] of the stellar channels: the outer bin edges of the mass binning.
CC_MASS_RANGE: tuple[float, float] = (8.0, 100.0)
AGB_MASS_RANGE: tuple[float, float] = (1.0, 8.0)

#: Element names used in HDF5 files (the TNG tables) -> symbols, atomic numbers 1..42.
_ELEMENT_NAMES: dict[str, str] = {
    "Hydrogen": "H", "Helium": "He", "Lithium": "Li", "Beryllium": "Be", "Boron": "B",
    "Carbon": "C", "Nitrogen": "N", "Oxygen": "O", "Fluorine": "F", "Neon": "Ne",
    "Sodium": "Na", "Magnesium": "Mg", "Aluminum": "Al", "Aluminium": "Al", "Silicon": "Si",
    "Phosphorus": "P", "Sulphur": "S", "Sulfur": "S", "Chlorine": "Cl", "Argon": "Ar",
    "Potassium": "K", "Calcium": "Ca", "Scandium": "Sc", "Titanium": "Ti", "Vanadium": "V",
    "Chromium": "Cr", "Manganese": "Mn", "Iron": "Fe", "Cobalt": "Co", "Nickel": "Ni",
    "Copper": "Cu", "Zinc": "Zn", "Gallium": "Ga", "Germanium": "Ge", "Arsenic": "As",
    "Selenium": "Se", "Bromine": "Br", "Krypton": "Kr", "Rubidium": "Rb", "Strontium": "Sr",
    "Yttrium": "Y", "Zirconium": "Zr", "Niobium": "Nb", "Molybdenum": "Mo",
}  # fmt: skip

TNG_REFERENCES: tuple[str, ...] = (
    "Pillepich A. et al. 2018, MNRAS 473, 4077 (IllustrisTNG yield compilation)",
    "Kobayashi C., Umeda H., Nomoto K., Tominaga N. & Ohkubo T. 2006, ApJ 653, 1145 "
    "(CC-SN, 13-40 Msun)",
    "Portinari L., Chiosi C. & Bressan A. 1998, A&A 334, 505 (CC-SN outside 13-40 Msun)",
    "Karakas A. I. 2010, MNRAS 403, 1413 (AGB, 1-6 Msun)",
    "Doherty C. L., Gil-Pons P., Lau H. H. B., Lattanzio J. C. & Siess L. 2014, MNRAS 437, 195 "
    "(super-AGB, 7-7.5 Msun)",
    "Fishlock C. K., Karakas A. I., Lugaro M. & Yong D. 2014, ApJ 797, 44 (AGB, Z = 0.001)",
    "Nomoto K. et al. 1997, Nucl. Phys. A 621, 467 (W7 SN Ia)",
    "Thielemann F.-K. et al. 2003, ESO/MPA/MPE Workshop 'From Twilight to Highlight', p. 331; "
    "Travaglio C., Hillebrandt W., Reinecke M. & Thielemann F.-K. 2004, A&A 425, 1029 "
    "(the SN Ia numbers in the file)",
    "Rybizki J., Just A. & Rix H.-W. 2017, A&A 605, A59 (CHEMPY, MIT; source of the files)",
    "Philcox O. & Rybizki J. 2019, ApJ 887, 9 (ChempyMulti and the TNG configuration)",
)

DEFAULT_REFERENCES: tuple[str, ...] = (
    "Nomoto K., Kobayashi C. & Tominaga N. 2013, ARA&A 51, 457 (CC-SN yields; AGB compilation)",
    "Karakas A. I. 2010, MNRAS 403, 1413 (the AGB net yields compiled by Nomoto+2013)",
    "Iwamoto K. et al. 1999, ApJS 125, 439 (SN Ia, model W7)",
    "Kalirai J. S. et al. 2008, ApJ 676, 594 (initial-final mass relation for AGB remnants)",
    "Asplund M., Grevesse N., Sauval A. J. & Scott P. 2009, ARA&A 47, 481 "
    "(initial composition for the total-to-net conversion)",
    "Querci L., crimsons 0.1.2 (PyPI, MIT licence): stellar_yields.h5, the file read here",
)

#: Primordial helium and helium-to-metal enrichment of the initial composition used to turn the
#: total ejecta of the `default` set into net yields: Y = Y_P + dY/dZ * Z, X = 1 - Y - Z.
PRIMORDIAL_HELIUM: float = 0.2485
HELIUM_ENRICHMENT: float = 1.7

#: Kalirai et al. (2008) initial-final mass relation, M_final = a * M_initial + b [Msun].
KALIRAI08_IFMR: tuple[float, float] = (0.109, 0.394)

# The groups of crimsons' stellar_yields.h5 that the `default` set uses.
_CRIMSONS_CC = "SNII/Nomoto13_PopII"
_CRIMSONS_AGB = "AGB/Nomoto13_PopII"
_CRIMSONS_SNIA = "SNIa/Iwamoto99"
_CRIMSONS_SNIA_MODEL = "W7"


def load_yields(
    name: str | os.PathLike = "tng",
    *,
    elements: Sequence[str] = DEFAULT_ELEMENTS,
    data_dir: str | os.PathLike | None = None,
) -> Yields:
    """Load a yield set. Tables are read once per process and cached.

    **Arguments:**

    - `name`: `"tng"` (the IllustrisTNG tables as shipped with CHEMPY, the sbi-chempy
      configuration; needs the data files, see `diffgal.fetch_tng_yields`), `"default"`
      (Nomoto+2013 CC-SN and AGB, Iwamoto+1999 W7 SN Ia, from the `crimsons` package; works
      offline), or the path of an HDF5 file in the user layout (see `docs/yields.md`).
    - `elements`: the traced element symbols, in the order of the model's state vector.
    - `data_dir`: the data directory for `"tng"` (default: `$DIFFGAL_DATA_DIR`, else the
      pooch cache).

    **Returns:**

    A `Yields` whose arrays are numpy float64 arrays (independent of JAX's x64 flag; convert
    with `jnp.asarray` where they are used). The same object is returned for repeated calls.

    ```python
    from diffgal.chemistry import load_yields

    yields = load_yields("default")
    assert yields.cc.masses[0] > yields.cc.masses[-1]  # descending
    assert yields.elements == ("H", "He", "C", "N", "O", "Ne", "Mg", "Si", "Fe")
    ```
    """
    if isinstance(elements, str) or not all(isinstance(e, str) for e in elements):
        raise TypeError(
            "`load_yields`: `elements` must be a sequence of element symbols such as "
            f"('H', 'He', 'Fe'); got {elements!r}."
        )
    elements = tuple(elements)
    if len(set(elements)) != len(elements) or not elements:
        raise ValueError(
            f"`load_yields`: `elements` must be non-empty and without repeats; got {elements}."
        )
    if isinstance(name, os.PathLike) or (
        isinstance(name, str) and name.lower() not in YIELD_SET_NAMES and _looks_like_path(name)
    ):
        path = pathlib.Path(name).expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError(f"`load_yields`: no yield file at {path}.")
        stat = path.stat()
        return _load_cached("user", str(path), elements, (stat.st_mtime_ns, stat.st_size))
    if not isinstance(name, str) or name.lower() not in YIELD_SET_NAMES:
        raise ValueError(
            f"`load_yields`: unknown yield set {name!r}. Valid names are "
            f"{', '.join(repr(n) for n in YIELD_SET_NAMES)}, or the path of an HDF5 file "
            "(.h5/.hdf5) in the user layout described in docs/yields.md."
        )
    key = name.lower()
    if key == "tng":
        paths = tng_yield_paths(data_dir)  # raises FileNotFoundError / ValueError (hash)
        return _load_cached("tng", str(paths["SNII.hdf5"].parent.resolve()), elements, None)
    path = _crimsons_yield_file()
    return _load_cached("default", str(path), elements, None)


def available_yield_sets(data_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """The built-in yield sets and whether each can be loaded here.

    **Arguments:**

    - `data_dir`: the data directory searched for the TNG files.

    **Returns:**

    A dict mapping each name of `YIELD_SET_NAMES` to `"available"` or to the reason it is not.
    """
    status = {}
    try:
        tng_yield_paths(data_dir)
        status["tng"] = "available"
    except (FileNotFoundError, ValueError) as error:
        status["tng"] = str(error)
    try:
        _crimsons_yield_file()
        status["default"] = "available"
    except (ImportError, FileNotFoundError) as error:
        status["default"] = str(error)
    return status


def write_yields_hdf5(path: str | os.PathLike, yields: Yields) -> pathlib.Path:
    """Write a `Yields` object to an HDF5 file in the user layout, so that
    `load_yields(path, elements=yields.elements)` returns identical arrays.

    Only the traced elements are stored; the ejected fractions and the SN Ia ejecta mass are
    stored explicitly because they also account for the untraced species of the original tables.

    **Arguments:**

    - `path`: the file to create (overwritten if it exists).
    - `yields`: the yield set.

    **Returns:**

    The path of the written file.
    """
    h5py = _import_h5py("write_yields_hdf5")
    path = pathlib.Path(path)
    with h5py.File(path, "w") as file:
        file.attrs["name"] = yields.name
        file.attrs["references"] = list(yields.references)
        file.attrs["format"] = "diffgal-yields-1"
        for group_name, table in (("cc", yields.cc), ("agb", yields.agb)):
            group = file.create_group(group_name)
            group.create_dataset("metallicities", data=np.asarray(table.metallicities, float))
            group.create_dataset("masses", data=np.asarray(table.masses, float))
            group.create_dataset("elements", data=np.array(table.elements, dtype="S"))
            group.create_dataset("net_yields", data=np.asarray(table.net_yields, float))
            group.create_dataset("remnant_fraction", data=np.asarray(table.remnant_fraction, float))
            group.create_dataset("ejected_fraction", data=np.asarray(table.ejected_fraction, float))
            group.attrs["mass_range"] = np.asarray(table.mass_range, float)
            group.attrs["log_z_floor"] = float(table.log_z_floor)
            group.attrs["reference"] = table.reference
        snia = file.create_group("snia")
        snia.create_dataset("elements", data=np.array(yields.snia.elements, dtype="S"))
        snia.create_dataset(
            "yields_per_event", data=np.asarray(yields.snia.yields_per_event, float)
        )
        snia.attrs["ejecta_mass"] = float(yields.snia.ejecta_mass)
        snia.attrs["progenitor_mass"] = float(yields.snia.progenitor_mass)
        snia.attrs["remnant_fraction"] = float(yields.snia.remnant_fraction)
        snia.attrs["reference"] = yields.snia.reference
    return path


# ------------------------------------------------------------------------------ internals


def _looks_like_path(name: str) -> bool:
    return name.lower().endswith((".h5", ".hdf5")) or pathlib.Path(name).expanduser().is_file()


def _import_h5py(where: str):
    try:
        import h5py
    except ImportError as error:  # h5py is a core dependency; this only guards broken installs
        raise ImportError(f"`{where}` needs h5py. Fix: `pip install h5py`.") from error
    return h5py


def _decode(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _check_elements(elements: tuple[str, ...], available: Sequence[str], set_name: str) -> None:
    unknown = [e for e in elements if e not in available]
    if unknown:
        raise ValueError(
            f"`load_yields`: element(s) {unknown} are not in the {set_name!r} yield set. "
            f"Valid symbols for this set are {list(available)}. Fix: pass `elements=` with "
            "symbols from that list."
        )


@functools.cache
def _load_cached(kind: str, source: str, elements: tuple[str, ...], stamp) -> Yields:
    del stamp  # part of the cache key only (file version of user files)
    if kind == "tng":
        return _load_tng(pathlib.Path(source), elements)
    if kind == "default":
        return _load_crimsons(pathlib.Path(source), elements)
    return _load_user(pathlib.Path(source), elements)


def _select_masses(masses: np.ndarray, mass_range: tuple[float, float]) -> np.ndarray:
    """Indices of the table masses inside `mass_range` (inclusive), heaviest first."""
    lo, hi = mass_range
    inside = np.flatnonzero((masses >= lo) & (masses <= hi))
    return inside[np.argsort(-masses[inside], kind="stable")]


# ---- TNG (CHEMPY) ------------------------------------------------------------------------


def _read_tng_stellar(
    path: pathlib.Path,
    elements: tuple[str, ...],
    mass_range: tuple[float, float],
    reference: str,
) -> StellarYieldTable:
    """One TNG SN II / AGB table, computed in the dtypes of ChempyMulti's `TNG_net` loaders.

    ChempyMulti divides the float32 table entries by the float32 masses (float32 results),
    computes the remnant fraction `(M - Ejected_mass) / M` in float32, accumulates the 11 net
    yields in species order into a float64 sum and forms `1 - sum - f_rem` in float64.
    """
    h5py = _import_h5py("load_yields")
    with h5py.File(path, "r") as file:
        masses = np.asarray(file["Masses"][()], dtype=np.float32)
        metallicities = np.asarray(file["Metallicities"][()], dtype=np.float32)
        species = [_ELEMENT_NAMES[_decode(s)] for s in file["Species_names"][()]]
        # `Yield_names` of AGB.hdf5 lists a fifth name (Z_0.05) without a group: index it by the
        # position in `Metallicities`.
        group_names = [_decode(n) for n in file["Yield_names"][()]][: len(metallicities)]
        blocks = [
            (
                np.asarray(file["Yields"][g]["Yield"][()], dtype=np.float32),
                np.asarray(file["Yields"][g]["Ejected_mass"][()], dtype=np.float32),
            )
            for g in group_names
        ]
    _check_elements(elements, species, "tng")
    rows = [species.index(e) for e in elements]
    keep = _select_masses(masses, mass_range)
    z_order = np.argsort(metallicities, kind="stable")
    net, f_ej, f_rem = [], [], []
    for iz in z_order:
        table, ejected = blocks[iz]
        y_net = table / masses  # float32, (n_species, n_mass)
        remnant = (masses - ejected) / masses  # float32
        summed = np.zeros(masses.shape, dtype=np.float64)
        for row in y_net:  # sequential float64 accumulation, species order, like ChempyMulti
            summed += row
        ejecta = 1.0 - summed - remnant  # float64
        net.append(y_net[rows][:, keep].T.astype(np.float64))
        f_ej.append(ejecta[keep])
        f_rem.append(remnant[keep].astype(np.float64))
    return StellarYieldTable(
        metallicities=metallicities[z_order].astype(np.float64),
        masses=masses[keep].astype(np.float64),
        net_yields=np.stack(net),
        ejected_fraction=np.stack(f_ej),
        remnant_fraction=np.stack(f_rem),
        mass_range=mass_range,
        log_z_floor=1e-10,
        elements=elements,
        reference=reference,
    )


def _load_tng(folder: pathlib.Path, elements: tuple[str, ...]) -> Yields:
    h5py = _import_h5py("load_yields")
    cc = _read_tng_stellar(
        folder / "SNII.hdf5",
        elements,
        CC_MASS_RANGE,
        "Kobayashi et al. 2006 (13-40 Msun) + Portinari et al. 1998, renormalised "
        "(IllustrisTNG, Pillepich et al. 2018); net yields",
    )
    agb = _read_tng_stellar(
        folder / "AGB.hdf5",
        elements,
        AGB_MASS_RANGE,
        "Karakas 2010 + Doherty et al. 2014 (+ Fishlock et al. 2014) "
        "(IllustrisTNG, Pillepich et al. 2018); net yields",
    )
    with h5py.File(folder / "SNIa.hdf5", "r") as file:
        per_event = np.asarray(file["Yield"][()], dtype=np.float32)
        species = [_ELEMENT_NAMES[_decode(s)] for s in file["Species_names"][()]]
    _check_elements(elements, species, "tng")
    snia = SNIaYieldTable(
        yields_per_event=per_event[[species.index(e) for e in elements]].astype(np.float64),
        # CHEMPY's ejecta mass: the float32 sum over all 42 species (1.3743416 Msun).
        ejecta_mass=np.asarray(np.sum(per_event), dtype=np.float64),
        progenitor_mass=2.156,
        remnant_fraction=0.3,
        elements=elements,
        reference="Nomoto et al. 1997 W7 as Thielemann et al. 2003 / Travaglio et al. 2004 "
        "(IllustrisTNG, Pillepich et al. 2018); ejecta per event",
    )
    return Yields(cc=cc, agb=agb, snia=snia, name="tng", references=TNG_REFERENCES)


# ---- default set: crimsons' stellar_yields.h5 -----------------------------------------------


def _crimsons_yield_file() -> pathlib.Path:
    """Path of `crimsons/yields/data/stellar_yields.h5`, found without importing crimsons."""
    spec = importlib.util.find_spec("crimsons")
    if spec is None:
        raise ImportError(
            "The 'default' yield set reads its tables from the `crimsons` package, which is not "
            "installed. Fix: `pip install crimsons` (a dependency of diffgal)."
        )
    for location in spec.submodule_search_locations or ():
        path = pathlib.Path(location) / "yields" / "data" / "stellar_yields.h5"
        if path.is_file():
            return path
    raise FileNotFoundError(
        "The 'default' yield set needs crimsons/yields/data/stellar_yields.h5, which the "
        "installed `crimsons` package does not contain. Fix: `pip install 'crimsons>=0.1.2'`."
    )


def _crimsons_group(file, name: str, axes: tuple[str, ...]):
    group = file[name]
    found = tuple(_decode(a) for a in group.attrs["axes"])
    if found != axes:
        raise ValueError(
            f"`load_yields`: crimsons group {name} has axes {found}, expected {axes}. The "
            "installed crimsons version stores its tables differently from 0.1.2."
        )
    symbols = [_decode(e) for e in group["elements"][()]]
    if symbols[0] != "Energy" or symbols[1:3] != ["H", "He"]:
        raise ValueError(
            f"`load_yields`: crimsons group {name} has elements {symbols[:4]}..., expected "
            "['Energy', 'H', 'He', ...] as in crimsons 0.1.2."
        )
    return group, symbols[1:]


def initial_composition(z: float, symbols: Sequence[str]) -> np.ndarray:
    """Mass fractions of a star born with metallicity `z` over the element list `symbols`.

    H and He follow Y = 0.2485 + 1.7 Z, X = 1 - Y - Z; the metals (every symbol other than H
    and He) have the solar (Asplund+09 photospheric) mass ratios, scaled so that they sum to Z.
    The fractions sum to 1 over `symbols`.
    """
    weights = np.array(
        [0.0 if s in ("H", "He") else 10.0 ** (ASPLUND09[s] - 12.0) * ATOMIC_WEIGHTS[s]
         for s in symbols]
    )  # fmt: skip
    fractions = z * weights / weights.sum()
    helium = PRIMORDIAL_HELIUM + HELIUM_ENRICHMENT * z
    fractions[list(symbols).index("He")] = helium
    fractions[list(symbols).index("H")] = 1.0 - helium - z
    return fractions


def _load_crimsons(path: pathlib.Path, elements: tuple[str, ...]) -> Yields:
    h5py = _import_h5py("load_yields")
    with h5py.File(path, "r") as file:
        cc_group, symbols = _crimsons_group(file, _CRIMSONS_CC, ("metallicity", "mass", "elements"))
        cc_z = np.asarray(cc_group["metallicity"][()], dtype=np.float64)
        cc_m = np.asarray(cc_group["mass"][()], dtype=np.float64)
        cc_y = np.asarray(cc_group["yields"][()], dtype=np.float64)[..., 1:]  # drop Energy
        agb_group, agb_symbols = _crimsons_group(
            file, _CRIMSONS_AGB, ("metallicity", "mass", "elements")
        )
        agb_z = np.asarray(agb_group["metallicity"][()], dtype=np.float64)
        agb_m = np.asarray(agb_group["mass"][()], dtype=np.float64)
        agb_y = np.asarray(agb_group["yields"][()], dtype=np.float64)[..., 1:]
        snia_group, snia_symbols = _crimsons_group(
            file, _CRIMSONS_SNIA, ("model", "mass", "elements")
        )
        models = [_decode(m) for m in snia_group["model"][()]]
        snia_y = np.asarray(snia_group["yields"][()], dtype=np.float64)[..., 1:]
    if agb_symbols != symbols or snia_symbols != symbols:
        raise ValueError("`load_yields`: crimsons groups list different elements.")
    _check_elements(elements, symbols, "default")
    cols = [symbols.index(e) for e in elements]

    # CC-SN, Nomoto+13: total ejecta per star [Msun] (H > 0, no negative entries).
    if np.any(cc_y < 0) or np.any(cc_y[..., 0] < 1.0):
        raise ValueError(f"`load_yields`: {_CRIMSONS_CC} no longer looks like total ejecta.")
    ejected = cc_y.sum(axis=-1)  # (n_z, n_mass): sum over H..Zn
    x_init = np.stack([initial_composition(z, symbols) for z in cc_z])  # (n_z, n_species)
    cc_net = (cc_y - ejected[..., None] * x_init[:, None, :]) / cc_m[None, :, None]
    cc_rem = (cc_m[None, :] - ejected) / cc_m[None, :]
    cc_ej = 1.0 - cc_net.sum(axis=-1) - cc_rem
    cc_keep = _select_masses(cc_m, CC_MASS_RANGE)
    cc_order = np.argsort(cc_z, kind="stable")
    cc = StellarYieldTable(
        metallicities=cc_z[cc_order],
        masses=cc_m[cc_keep],
        net_yields=cc_net[cc_order][:, cc_keep][..., cols],
        ejected_fraction=cc_ej[cc_order][:, cc_keep],
        remnant_fraction=cc_rem[cc_order][:, cc_keep],
        mass_range=CC_MASS_RANGE,
        log_z_floor=1e-10,
        elements=elements,
        reference="Nomoto, Kobayashi & Tominaga 2013 (crimsons SNII/Nomoto13_PopII); total SN "
        "ejecta converted to net yields with a scaled-solar initial composition",
    )

    # AGB, Karakas 2010 as compiled by Nomoto+13: net yields per star [Msun] (sum ~ 0).
    if np.max(np.abs(agb_y.sum(axis=-1)) / agb_m[None, :]) > 1e-4:
        raise ValueError(f"`load_yields`: {_CRIMSONS_AGB} no longer looks like net yields.")
    agb_net = agb_y / agb_m[None, :, None]
    slope, intercept = KALIRAI08_IFMR
    agb_rem = np.broadcast_to((slope * agb_m + intercept) / agb_m, agb_net.shape[:2])
    agb_ej = 1.0 - agb_net.sum(axis=-1) - agb_rem
    agb_keep = _select_masses(agb_m, AGB_MASS_RANGE)
    agb_order = np.argsort(agb_z, kind="stable")
    agb = StellarYieldTable(
        metallicities=agb_z[agb_order],
        masses=agb_m[agb_keep],
        net_yields=agb_net[agb_order][:, agb_keep][..., cols],
        ejected_fraction=agb_ej[agb_order][:, agb_keep],
        remnant_fraction=np.array(agb_rem[agb_order][:, agb_keep]),
        mass_range=AGB_MASS_RANGE,
        log_z_floor=1e-10,
        elements=elements,
        reference="Karakas 2010 net yields as compiled by Nomoto, Kobayashi & Tominaga 2013 "
        "(crimsons AGB/Nomoto13_PopII); remnants from the Kalirai et al. 2008 IFMR",
    )

    # SN Ia, Iwamoto+99 W7: ejecta per event [Msun] (the 1e-30 H and He are placeholders).
    w7 = snia_y[models.index(_CRIMSONS_SNIA_MODEL), 0]
    snia = SNIaYieldTable(
        yields_per_event=w7[cols],
        ejecta_mass=np.asarray(w7.sum(), dtype=np.float64),
        progenitor_mass=2.156,
        remnant_fraction=0.3,
        elements=elements,
        reference="Iwamoto et al. 1999, model W7 (crimsons SNIa/Iwamoto99); ejecta per event",
    )
    return Yields(cc=cc, agb=agb, snia=snia, name="default", references=DEFAULT_REFERENCES)


# ---- user HDF5 layout ---------------------------------------------------------------------


def _read_user_stellar(file, group_name: str, elements, path) -> StellarYieldTable:
    if group_name not in file:
        raise ValueError(f"`load_yields`: {path} has no group '{group_name}/'.")
    group = file[group_name]
    try:
        metallicities = np.asarray(group["metallicities"][()], dtype=np.float64)
        masses = np.asarray(group["masses"][()], dtype=np.float64)
        species = [_decode(s) for s in group["elements"][()]]
        net = np.asarray(group["net_yields"][()], dtype=np.float64)
        remnant = np.asarray(group["remnant_fraction"][()], dtype=np.float64)
        mass_range = tuple(float(x) for x in group.attrs["mass_range"])
    except KeyError as error:
        raise ValueError(
            f"`load_yields`: {path}: group '{group_name}/' lacks {error}; it needs datasets "
            "metallicities, masses, elements, net_yields, remnant_fraction and the attribute "
            "mass_range (see docs/yields.md)."
        ) from error
    n_z, n_mass, n_species = len(metallicities), len(masses), len(species)
    if net.shape != (n_z, n_mass, n_species) or remnant.shape != (n_z, n_mass):
        raise ValueError(
            f"`load_yields`: {path}: in '{group_name}/' net_yields must have shape "
            f"(n_z, n_mass, n_species) = {(n_z, n_mass, n_species)} and remnant_fraction "
            f"{(n_z, n_mass)}; got {net.shape} and {remnant.shape}."
        )
    if len(mass_range) != 2 or not mass_range[0] < mass_range[1]:
        raise ValueError(
            f"`load_yields`: {path}: '{group_name}/' attribute mass_range must be (lower, "
            f"upper) with lower < upper; got {mass_range}."
        )
    if "ejected_fraction" in group:
        ejected = np.asarray(group["ejected_fraction"][()], dtype=np.float64)
    else:
        ejected = 1.0 - net.sum(axis=-1) - remnant
    _check_elements(elements, species, str(path))
    cols = [species.index(e) for e in elements]
    keep = _select_masses(masses, mass_range)
    if keep.size == 0:
        raise ValueError(
            f"`load_yields`: {path}: no mass of '{group_name}/' lies in mass_range {mass_range}."
        )
    order = np.argsort(metallicities, kind="stable")
    return StellarYieldTable(
        metallicities=metallicities[order],
        masses=masses[keep],
        net_yields=net[order][:, keep][..., cols],
        ejected_fraction=ejected[order][:, keep],
        remnant_fraction=remnant[order][:, keep],
        mass_range=mass_range,
        log_z_floor=float(group.attrs.get("log_z_floor", 1e-10)),
        elements=elements,
        reference=_decode(group.attrs.get("reference", "")),
    )


def _load_user(path: pathlib.Path, elements: tuple[str, ...]) -> Yields:
    h5py = _import_h5py("load_yields")
    with h5py.File(path, "r") as file:
        cc = _read_user_stellar(file, "cc", elements, path)
        agb = _read_user_stellar(file, "agb", elements, path)
        if "snia" not in file:
            raise ValueError(f"`load_yields`: {path} has no group 'snia/'.")
        group = file["snia"]
        species = [_decode(s) for s in group["elements"][()]]
        per_event = np.asarray(group["yields_per_event"][()], dtype=np.float64)
        if per_event.shape != (len(species),):
            raise ValueError(
                f"`load_yields`: {path}: snia/yields_per_event must have shape "
                f"({len(species)},); got {per_event.shape}."
            )
        _check_elements(elements, species, str(path))
        snia = SNIaYieldTable(
            yields_per_event=per_event[[species.index(e) for e in elements]],
            ejecta_mass=np.asarray(group.attrs.get("ejecta_mass", per_event.sum()), np.float64),
            progenitor_mass=float(group.attrs.get("progenitor_mass", 2.156)),
            remnant_fraction=float(group.attrs.get("remnant_fraction", 0.3)),
            elements=elements,
            reference=_decode(group.attrs.get("reference", "")),
        )
        name = _decode(file.attrs.get("name", path.stem))
        references = tuple(_decode(r) for r in file.attrs.get("references", ()))
    if not references:
        references = tuple(r for r in (cc.reference, agb.reference, snia.reference) if r)
    return Yields(cc=cc, agb=agb, snia=snia, name=name, references=references)
