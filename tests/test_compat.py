"""Tests for statemap/_compat.py: each JAX-internals entry still works on the installed JAX.

A JAX upgrade that changes one of these internals must fail here, loudly, rather than deep inside a transform.
"""

import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import statemap
from statemap import _compat

PACKAGE = pathlib.Path(statemap.__file__).parent


def test_every_entry_has_a_test():
    tests = {name for name in globals() if name.startswith("test_")}
    missing = [name for name in _compat.__all__ if f"test_{name}" not in tests]
    assert not missing, f"add a test for each _compat entry: {missing}"


def test_current_trace():
    seen = {}

    def f(x):
        seen["jit"] = _compat.current_trace()
        return x

    jax.make_jaxpr(f)(1.0)
    assert hasattr(seen["jit"], "new_arg")  # a jaxpr-building trace
    outside = _compat.current_trace()
    assert outside is not seen["jit"]
    assert not hasattr(outside, "new_arg")

    def g(x):
        seen["vmap"] = _compat.current_trace()
        return x

    jax.vmap(g)(jnp.ones(2))
    assert seen["vmap"] is not outside and seen["vmap"] is not seen["jit"]


def test_use_trace():
    """An operation inside an inner trace, run under the outer trace, belongs to the outer jaxpr."""
    seen = {}

    def outer(x):
        trace = _compat.current_trace()

        def inner(y):
            with _compat.use_trace(trace):
                seen["z"] = x * 3.0  # staged into `outer`, not into `inner`
            return y + 1.0

        inner_jaxpr = jax.make_jaxpr(inner)(1.0)
        assert not inner_jaxpr.consts and len(inner_jaxpr.jaxpr.eqns) == 1
        return seen["z"]

    closed = jax.make_jaxpr(outer)(2.0)
    assert [e.primitive.name for e in closed.jaxpr.eqns] == ["mul"]


def test_struct_like():
    """Outside shard_map a plain struct; inside, the struct keeps the varying mesh axes of the aval."""
    plain = _compat.struct_like(jax.typeof(jnp.ones((2, 3))), (3,))
    assert (plain.shape, plain.dtype) == ((3,), jnp.float32)
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("d",))
    seen = {}

    def body(x):
        seen["struct"] = _compat.struct_like(jax.typeof(x), (2,))
        return x

    spec = jax.sharding.PartitionSpec("d")
    jax.shard_map(body, mesh=mesh, in_specs=spec, out_specs=spec)(jnp.ones((1, 2)))
    assert "d" in seen["struct"].manual_axis_type.varying


def test_varies_over_mesh():
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("d",))
    seen = {}

    def body(x):
        seen["sharded"] = _compat.varies_over_mesh(x)
        seen["reduced"] = _compat.varies_over_mesh(jax.lax.psum(x, "d"))
        return x

    spec = jax.sharding.PartitionSpec("d")
    jax.shard_map(body, mesh=mesh, in_specs=spec, out_specs=spec)(jnp.ones((1, 2)))
    assert seen == {"sharded": True, "reduced": False}
    assert not _compat.varies_over_mesh(jnp.ones(2))


def test_new_trace_input():
    def f(x):
        trace = _compat.current_trace()
        extra = _compat.new_trace_input(trace, jax.typeof(jnp.zeros(3, jnp.int32)))
        assert _compat.is_tracer(extra)
        return x + extra.astype(jnp.float32)

    closed = jax.make_jaxpr(f)(jnp.ones(3))
    assert len(closed.jaxpr.invars) == 2
    assert closed.in_avals[1].shape == (3,) and closed.in_avals[1].dtype == jnp.int32
    out = jax.extend.core.jaxpr_as_fun(closed)(jnp.ones(3), jnp.arange(3, dtype=jnp.int32))
    np.testing.assert_array_equal(out[0], np.arange(3.0) + 1)


def test_new_trace_input_keeps_varying_axes():
    """A struct from `struct_like` inside shard_map becomes an input that still varies over the mesh axis."""
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("d",))
    seen = {}

    def body(x):
        def f(y):
            extra = _compat.new_trace_input(_compat.current_trace(), _compat.struct_like(jax.typeof(x), (2,)))
            seen["varies"] = _compat.varies_over_mesh(extra)
            return y

        jax.make_jaxpr(f)(1.0)
        return x

    spec = jax.sharding.PartitionSpec("d")
    jax.shard_map(body, mesh=mesh, in_specs=spec, out_specs=spec)(jnp.ones((1, 2)))
    assert seen == {"varies": True}


def test_batch_dim_in():
    seen = {}

    def inner(x, y):
        trace = _compat.current_trace()
        seen["inner_x"] = _compat.batch_dim_in(x, trace)
        seen["inner_y"] = _compat.batch_dim_in(y, trace)  # batched by the outer vmap only
        seen["const"] = _compat.batch_dim_in(jnp.ones(()), trace)
        seen["plain"] = _compat.batch_dim_in(1.0, trace)
        return x + y

    def outer(xs, y):
        trace = _compat.current_trace()
        seen["outer_y"] = _compat.batch_dim_in(y, trace)
        return jax.vmap(inner, in_axes=(1, None))(xs, y)

    out = jax.vmap(outer, in_axes=(None, 0))(jnp.ones((2, 3)), jnp.arange(4.0))
    assert out.shape == (4, 3, 2)
    assert seen == {"inner_x": 1, "inner_y": None, "const": None, "plain": None, "outer_y": 0}


def test_is_tracer():
    seen = []
    jax.jit(lambda x: seen.append(_compat.is_tracer(x)) or x)(jnp.ones(2))
    jax.vmap(lambda x: seen.append(_compat.is_tracer(x)) or x)(jnp.ones(2))
    assert seen == [True, True]
    assert not _compat.is_tracer(jnp.ones(2))
    assert not _compat.is_tracer(np.ones(2))
    assert not _compat.is_tracer(1.0)


def test_jax_src_only_in_compat():
    pattern = re.compile(r"jax\._src|from jax import _src|jax\.interpreters")
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "_compat.py" and path.parent == PACKAGE:
            continue
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{lineno}: {line.strip()}")
    assert not offenders, "JAX internals outside statemap/_compat.py:\n" + "\n".join(offenders)


def test_compat_is_the_only_internals_module():
    text = (PACKAGE / "_compat.py").read_text()
    assert "jax._src" in text  # the guard above is meaningful: the internals live here


def test_InternalFloatingPointError():  # noqa: N802 - named after the _compat entry
    """JAX still raises this class from a compiled function evaluated inside another, under jax_debug_infs."""
    assert issubclass(_compat.InternalFloatingPointError, Exception)
    assert _compat.InternalFloatingPointError.__name__ == "InternalFloatingPointError"
    inner = jax.jit(lambda v: 1.0 / v)
    closed = jax.make_jaxpr(lambda v: inner(v))(jnp.ones(2))
    with jax.debug_infs(True), pytest.raises(_compat.InternalFloatingPointError):
        jax.extend.core.jaxpr_as_fun(closed)(jnp.zeros(2))
