import jax
import jax.numpy as jnp


def test_x64_enabled():
    assert jax.config.read("jax_enable_x64")
    assert jnp.zeros(()).dtype == jnp.float64


def test_four_cpu_devices():
    assert len(jax.devices("cpu")) == 4
