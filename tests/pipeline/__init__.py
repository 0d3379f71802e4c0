"""Tests of diffgal.pipeline (a package, so its module names do not clash with tests/chemistry)."""
