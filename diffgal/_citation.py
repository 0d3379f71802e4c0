"""References to cite when publishing results made with diffgal."""

_DIFFGAL = """\
diffgal: a JAX-native framework for differentiable galaxy modelling.
  The diffgal developers (2026), version {version}, MIT licence.
  See CITATION.cff in the source repository for the machine-readable entry."""

_CHEMPY = """\
diffgal.chemistry reimplements the CHEMPY one-zone chemical evolution model:
  Rybizki, J., Just, A. & Rix, H.-W. (2017), A&A 605, A59.
    "Chempy: A flexible chemical evolution model for abundance fitting".
  Philcox, O. & Rybizki, J. (2019), ApJ 887, 9.
    "Inferring Galactic Parameters from Chemical Abundances: A Multi-star Approach"
    (ChempyMulti).
  The faithful TNG configuration is the simulator of sbi-chempy:
    Buck, T., Guenes, B., et al. (2025), arXiv:2503.02456."""


def citation(yields: str | None = None) -> str:
    """Print and return the references to cite for diffgal and, optionally, a yield set.

    **Arguments:**

    - `yields`: name of a yield set (e.g. `"tng"` or `"default"`). When given, the references of
      its tables are added. If the set cannot be loaded (for example because its data files are
      missing) the names of the known yield sets are listed instead.

    **Returns:**

    The text that was printed.

    ```python
    import diffgal

    text = diffgal.citation()
    assert "Rybizki" in text
    ```
    """
    from . import __version__

    parts = [_DIFFGAL.format(version=__version__), _CHEMPY]
    if yields is not None:
        parts.append(_yield_references(yields))
    text = "\n\n".join(parts)
    print(text)
    return text


def _yield_references(name: str) -> str:
    from . import chemistry

    try:
        references = chemistry.load_yields(name).references
    except Exception as error:  # missing files, unknown name, ...: say so and list what exists
        try:
            known = ", ".join(sorted(chemistry.available_yield_sets()))
        except Exception:
            known = "unknown"
        return (
            f"Yield set {name!r} could not be loaded: {error}\n"
            f"  Known yield sets: {known}. Call `diffgal.citation(yields=NAME)` with one of them."
        )
    lines = [f"Yield set {name!r}:"] + [f"  {reference}" for reference in references]
    return "\n".join(lines)
