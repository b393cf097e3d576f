"""Tests of `statemap.typing`: the aliases import, work in annotations, and type-check under mypy --strict."""

import pathlib
import textwrap
import typing

import jax
import jax.numpy as jnp
import pytest

import statemap as sm
from statemap.typing import ArrayLike, DTypeLike, Filter, PyTree, SeedOrKey, Shape, Size

ALIASES = ["ArrayLike", "DTypeLike", "Shape", "Size", "PyTree", "Filter", "SeedOrKey"]


def test_aliases_are_exported():
    assert sm.typing.__all__ == ALIASES
    assert sm.typing.ArrayLike is jax.typing.ArrayLike and sm.typing.DTypeLike is jax.typing.DTypeLike
    assert sm.typing.Filter is sm.util.filter.Filter


def draw(size: Size, seed: SeedOrKey, dtype: DTypeLike = jnp.float32) -> jax.Array:
    return sm.random.RandomState(seed).uniform(size=size, dtype=dtype)


def scale(x: ArrayLike, shape: Shape, tree: PyTree, which: Filter = ...) -> jax.Array:
    return jnp.broadcast_to(jnp.asarray(x), tuple(shape))


def test_aliases_in_annotations_at_runtime():
    assert draw((2, 3), 0).shape == (2, 3)
    assert draw(4, jax.random.key(1), jnp.float16).dtype == jnp.float16
    assert scale(1.0, [2], {"a": 1}).shape == (2,)
    hints = typing.get_type_hints(draw)
    assert hints["size"] == Size and hints["seed"] == SeedOrKey


def test_mypy_strict_accepts_the_aliases(tmp_path: pathlib.Path):
    api = pytest.importorskip("mypy.api")
    source = tmp_path / "uses_typing.py"
    source.write_text(
        textwrap.dedent(
            """
            import jax
            import jax.numpy as jnp
            import statemap as sm
            from statemap.typing import ArrayLike, DTypeLike, Filter, PyTree, SeedOrKey, Shape, Size

            def draw(size: Size, seed: SeedOrKey, dtype: DTypeLike = jnp.float32) -> jax.Array:
                return sm.random.RandomState(seed).uniform(size=size, dtype=dtype)

            def scale(x: ArrayLike, shape: Shape, tree: PyTree, which: Filter = ...) -> jax.Array:
                return jnp.broadcast_to(jnp.asarray(x), tuple(shape))

            a: Size = (2, 3)
            b: SeedOrKey = jax.random.key(0)
            c: Shape = [1, 2]
            """
        )
    )
    root = pathlib.Path(__file__).resolve().parents[1]
    out, err, status = api.run(["--strict", "--cache-dir", str(root / ".mypy_cache"), str(source)])
    assert status == 0, out + err
    # and they are real types: a wrong value is reported
    source.write_text("from statemap.typing import SeedOrKey, Size\na: Size = 'x'\nb: SeedOrKey = 1.5\n")
    out, err, status = api.run(["--strict", "--cache-dir", str(root / ".mypy_cache"), str(source)])
    assert status == 1 and out.count("Incompatible types in assignment") == 2, out + err
