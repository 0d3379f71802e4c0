"""Solar abundances (Asplund et al. 2009) and atomic weights."""

from __future__ import annotations

import types

import numpy as np

#: Standard atomic weights [u] of the elements with Z = 1..83 (IUPAC conventional values).
ATOMIC_WEIGHTS: types.MappingProxyType[str, float] = types.MappingProxyType(
    {
        "H": 1.00794, "He": 4.002602, "Li": 6.941, "Be": 9.012182, "B": 10.811,
        "C": 12.0107, "N": 14.0067, "O": 15.9994, "F": 18.9984032, "Ne": 20.1797,
        "Na": 22.98976928, "Mg": 24.305, "Al": 26.9815386, "Si": 28.0855, "P": 30.973762,
        "S": 32.065, "Cl": 35.453, "Ar": 39.948, "K": 39.0983, "Ca": 40.078,
        "Sc": 44.955912, "Ti": 47.867, "V": 50.9415, "Cr": 51.9961, "Mn": 54.938045,
        "Fe": 55.845, "Co": 58.933195, "Ni": 58.6934, "Cu": 63.546, "Zn": 65.38,
        "Ga": 69.723, "Ge": 72.64, "As": 74.9216, "Se": 78.96, "Br": 79.904,
        "Kr": 83.798, "Rb": 85.4678, "Sr": 87.62, "Y": 88.90585, "Zr": 91.224,
        "Nb": 92.90638, "Mo": 95.96, "Tc": 98.0, "Ru": 101.07, "Rh": 102.9055,
        "Pd": 106.42, "Ag": 107.8682, "Cd": 112.411, "In": 114.818, "Sn": 118.71,
        "Sb": 121.76, "Te": 127.6, "I": 126.90447, "Xe": 131.293, "Cs": 132.9054519,
        "Ba": 137.327, "La": 138.90547, "Ce": 140.116, "Pr": 140.90765, "Nd": 144.242,
        "Pm": 145.0, "Sm": 150.36, "Eu": 151.964, "Gd": 157.25, "Tb": 158.92535,
        "Dy": 162.5, "Ho": 164.93032, "Er": 167.259, "Tm": 168.93421, "Yb": 173.054,
        "Lu": 174.9668, "Hf": 178.49, "Ta": 180.94788, "W": 183.84, "Re": 186.207,
        "Os": 190.23, "Ir": 192.217, "Pt": 195.084, "Au": 196.966569, "Hg": 200.59,
        "Tl": 204.3833, "Pb": 207.2, "Bi": 208.9804,
    }
)

#: Asplund, Grevesse, Sauval & Scott (2009, ARA&A 47, 481), Table 1: photospheric
#: log eps_X = log10(N_X/N_H) + 12; meteoritic (CI) values where no photospheric one exists
#: (As, Se, Br, Cd, Sb, Te, I, Cs, Ta, Re, Pt, Hg, Bi), and NaN for Tc and Pm (no stable isotope).
ASPLUND09: types.MappingProxyType[str, float] = types.MappingProxyType(
    {
        "H": 12.00, "He": 10.93, "Li": 1.05, "Be": 1.38, "B": 2.70, "C": 8.43, "N": 7.83,
        "O": 8.69, "F": 4.56, "Ne": 7.93, "Na": 6.24, "Mg": 7.60, "Al": 6.45, "Si": 7.51,
        "P": 5.41, "S": 7.12, "Cl": 5.50, "Ar": 6.40, "K": 5.03, "Ca": 6.34, "Sc": 3.15,
        "Ti": 4.95, "V": 3.93, "Cr": 5.64, "Mn": 5.43, "Fe": 7.50, "Co": 4.99, "Ni": 6.22,
        "Cu": 4.19, "Zn": 4.56, "Ga": 3.04, "Ge": 3.65, "As": 2.30, "Se": 3.34, "Br": 2.54,
        "Kr": 3.25, "Rb": 2.52, "Sr": 2.87, "Y": 2.21, "Zr": 2.58, "Nb": 1.46, "Mo": 1.88,
        "Tc": float("nan"), "Ru": 1.75, "Rh": 0.91, "Pd": 1.57, "Ag": 0.94, "Cd": 1.71,
        "In": 0.80, "Sn": 2.04, "Sb": 1.01, "Te": 2.18, "I": 1.55, "Xe": 2.24, "Cs": 1.08,
        "Ba": 2.18, "La": 1.10, "Ce": 1.58, "Pr": 0.72, "Nd": 1.42, "Pm": float("nan"),
        "Sm": 0.96, "Eu": 0.52, "Gd": 1.07, "Tb": 0.30, "Dy": 1.10, "Ho": 0.48, "Er": 0.92,
        "Tm": 0.10, "Yb": 0.84, "Lu": 0.10, "Hf": 0.85, "Ta": -0.12, "W": 0.85, "Re": 0.26,
        "Os": 1.40, "Ir": 1.38, "Pt": 1.62, "Au": 0.92, "Hg": 1.17, "Tl": 0.90, "Pb": 1.75,
        "Bi": 0.65,
    }
)

#: Elements counted as hydrogen and helium; everything else traced is a "metal".
NON_METALS: frozenset[str] = frozenset({"H", "He"})


def check_elements(elements: tuple[str, ...], *, where: str) -> None:
    """Raise a `ValueError` naming the unknown symbols and listing the valid ones."""
    unknown = [e for e in elements if e not in ATOMIC_WEIGHTS]
    if unknown:
        raise ValueError(
            f"`{where}`: unknown element symbol(s) {unknown}; valid symbols are "
            f"{sorted(ATOMIC_WEIGHTS, key=list(ATOMIC_WEIGHTS).index)}."
        )
    for required in ("H", "Fe"):
        if required not in elements:
            raise ValueError(
                f"`{where}`: the traced elements must include {required!r} "
                f"(bracket notation needs H and Fe); got {elements}."
            )


def solar_log_eps(elements: tuple[str, ...]) -> np.ndarray:
    """Asplund+09 log eps values for `elements` (numpy, float64)."""
    return np.array([ASPLUND09[e] for e in elements], dtype=np.float64)


def atomic_weights(elements: tuple[str, ...]) -> np.ndarray:
    """Atomic weights [u] for `elements` (numpy, float64)."""
    return np.array([ATOMIC_WEIGHTS[e] for e in elements], dtype=np.float64)


def metal_mask(elements: tuple[str, ...]) -> np.ndarray:
    """Boolean mask of the traced elements that count as metals (all but H and He)."""
    return np.array([e not in NON_METALS for e in elements])
