"""Tests for statemap.transform._decorator: the static type of transforms taken bare or as decorators."""

import inspect

from _mypy import mypy_lines

import statemap as sm
from statemap.transform._decorator import makes


def test_makes_returns_the_front_end_itself():
    def front_end(fun=None, option=1):
        """Doc."""
        return (lambda f: (f, option)) if fun is None else (fun, option)

    typed = makes(tuple)(front_end)
    assert typed is front_end
    assert str(inspect.signature(typed)) == "(fun=None, option=1)"
    assert typed(abs) == (abs, 1) and typed(option=2)(abs) == (abs, 2)


def test_mypy_strict_sees_what_each_form_returns(tmp_path):
    lines, status, output = mypy_lines(
        tmp_path,
        """
        import jax
        import jax.numpy as jnp
        import statemap as sm

        w = sm.ParamState(jnp.zeros(3))
        reveal_type(sm.transform.grad(lambda x: jnp.sum(w.value * x)))
        reveal_type(sm.transform.jacrev(lambda x: x, w, None, True))  # brainstate's positional order
        @sm.transform.grad(grad_states=w, return_value=True)
        def loss(x: jax.Array) -> jax.Array:
            return jnp.sum(w.value * x)
        reveal_type(loss)
        reveal_type(sm.transform.vmap2(lambda x: x * 2, in_axes=0, state_in_axes={0: w}))
        @sm.transform.vmap2(in_axes=None, axis_size=3)
        def lanes(x: jax.Array) -> jax.Array:
            return x
        reveal_type(lanes)
        reveal_type(sm.transform.pmap2(lambda x: x, "d"))
        reveal_type(sm.transform.jit(lambda x: x * 2))
        @sm.transform.jit(static_argnums=0, name="scaled")
        def scaled(n: int, x: jax.Array) -> jax.Array:
            return x * n
        reveal_type(scaled)
        sm.transform.vector_grad(lambda x: x, holomorphic=True)
        sm.transform.vmap2(lambda x: x, axis_size="3")
        sm.transform.for_loop(lambda x: x, jnp.zeros(3), reverse="no")
        """,
    )
    grad, mapping = "statemap.transform._grad.GradientTransform", "statemap.transform._mapping.StatefulMapping"
    assert lines == [
        f'note: Revealed type is "{grad}"',
        f'note: Revealed type is "{grad}"',
        f'note: Revealed type is "{grad}"',
        f'note: Revealed type is "{mapping}"',
        f'note: Revealed type is "{mapping}"',
        f'note: Revealed type is "{mapping}"',
        'note: Revealed type is "statemap.transform._jit.JittedFunction"',
        'note: Revealed type is "statemap.transform._jit.JittedFunction"',
        'error: Unexpected keyword argument "holomorphic" for overloaded function "__call__" of "Maker"  '
        "[call-overload]",
        'error: No overload variant of "__call__" of "Maker" matches argument types "Callable[[Any], Any]", '
        '"bool"  [call-overload]',
        'error: No overload variant of "__call__" of "Maker" matches argument types "Callable[[Any], Any]", '
        '"str"  [call-overload]',
        'error: Argument "reverse" to "for_loop" has incompatible type "str"; expected "bool"  [arg-type]',
    ], output
    assert status == 1


def test_every_front_end_keeps_its_function_and_docstring():
    for f in (sm.transform.grad, sm.transform.jacrev, sm.transform.vmap2, sm.transform.pmap2, sm.transform.vmap,
              sm.transform.jit):  # fmt: skip
        assert inspect.isfunction(f) and f.__doc__ and f.__module__.startswith("statemap.transform.")
