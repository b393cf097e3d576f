"""Errors raised by statemap, and the builders that format their messages.

Every message follows one shape so users can act on it::

    <who>: <what went wrong, naming the state or argument>
      expected: <what statemap needed>
      found:    <what it got>
      fix:      <what to change>
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

__all__ = [
    "StatemapError",
    "BatchAxisError",
    "TraceContextError",
    "ArgumentError",
    "StateArgumentError",
    "StateStructureError",
    "MappingRuntimeError",
    "ControlFlowError",
    "ConcreteValueError",
    "SettingError",
    "CheckpointError",
]


class StatemapError(Exception):
    """Base class of every error statemap raises on its own behalf.

    Examples:
      One ``except`` clause catches every problem statemap reports, whichever transform raised it:

      >>> try:
      ...     sm.transform.cond(jnp.ones(2) > 0, lambda: 1.0, lambda: 0.0)
      ... except sm.StatemapError as e:
      ...     print(type(e).__name__, "|", str(e).splitlines()[0])
      ControlFlowError | cond: the predicate is not a scalar
    """


class BatchAxisError(StatemapError, ValueError):
    """A mapped axis is missing, out of range, inconsistent, or a batched write is undeclared.

    Also a `ValueError`, so code written for `jax.vmap`'s errors keeps working.

    Examples:
      >>> w = sm.State(jnp.zeros(3), name="w")
      >>> def step(x):
      ...     w.value = w.value + x  # a per-lane write that state_out_axes does not declare
      ...     return x
      >>> sm.transform.vmap2(step)(jnp.arange(3.0))
      Traceback (most recent call last):
      ...
      statemap._errors.BatchAxisError: vmap2: state 'w' (State, created at ...) was written with a value batched ...
    """


class TraceContextError(StatemapError, RuntimeError):
    """A state was used outside the trace it belongs to (for example, it still holds a dead tracer).

    Also a `RuntimeError`.

    Examples:
      A state created inside `jit` holds a tracer of that trace; reading it afterwards raises:

      >>> made = []
      >>> _ = sm.transform.jit(lambda x: made.append(sm.State(x, name="tmp")) or x)(1.0)
      >>> made[0].value
      Traceback (most recent call last):
      ...
      statemap._errors.TraceContextError: State.value: state 'tmp' (State, created at ...) was created inside jit ...
    """


class ArgumentError(StatemapError, TypeError, ValueError):
    """A transform was called with an invalid argument, or configured with invalid argument numbers.

    Raised for an argument leaf that is not a JAX type, an unhashable static argument, and a
    ``static_argnums``/``donate_argnums`` entry out of range. It is both a `TypeError` and a `ValueError`,
    matching what `jax.jit` raises for each of those cases, so code written for `jax.jit` keeps working.

    Examples:
      >>> sm.transform.jit(lambda x: x)("abc")
      Traceback (most recent call last):
      ...
      statemap._errors.ArgumentError: jit: argument args[0] is not a valid JAX type
      ...
    """


class StateArgumentError(ArgumentError):
    """A `State` was passed as an argument to a transform; states must be closed over instead.

    Examples:
      >>> s = sm.State(jnp.zeros(2), name="s")
      >>> sm.transform.jit(lambda a: a)(s)
      Traceback (most recent call last):
      ...
      statemap._errors.StateArgumentError: jit: argument args[0] is state 's' ...
    """


class StateStructureError(StatemapError, ValueError):
    """A state was written, inside a transform, with a value of a different pytree structure.

    Also a `ValueError`.

    Examples:
      >>> s = sm.State(jnp.zeros(2), name="s")
      >>> def split():
      ...     s.value = (s.value, s.value)
      >>> sm.transform.jit(split)()
      Traceback (most recent call last):
      ...
      statemap._errors.StateStructureError: State.value: state 's' (State, created at ...) was written, inside a ...
    """


class MappingRuntimeError(StatemapError, RuntimeError):
    """statemap's own tracing or execution machinery failed (never used for errors of the user's function).

    No correct call raises it: its message asks for a bug report. It is a `RuntimeError`, so handlers written
    for JAX's runtime failures catch it too.

    Examples:
      >>> issubclass(sm.MappingRuntimeError, RuntimeError)
      True
    """


class ControlFlowError(StatemapError, TypeError, ValueError):
    """A control-flow transform (`cond`, `switch`, `while_loop`, `scan`, `for_loop`) got inconsistent inputs.

    For example a non-scalar predicate, branches whose outputs disagree, a loop carry or written state whose
    type changes in one iteration, or `xs` leaves of different lengths.

    Also a `TypeError` and a `ValueError`, like the errors `jax.lax.cond`/`scan` raise for the same mistakes.

    Examples:
      >>> sm.transform.cond(jnp.ones(2) > 0, lambda: 1.0, lambda: 0.0)
      Traceback (most recent call last):
      ...
      statemap._errors.ControlFlowError: cond: the predicate is not a scalar
      ...
    """


class ConcreteValueError(StatemapError, TypeError):
    """Python code needed a state's concrete value (``if``, ``range``, ``int``, indexing) where it is abstract.

    Eager mappings give Python the concrete value of a broadcast state, as `jax.vmap` does; under an enclosing
    `jit` (or another trace) that value is a tracer. The message names the states read before that point.
    Also a `TypeError`, like JAX's `ConcretizationTypeError`.

    Examples:
      >>> flag = sm.State(True, name="flag")
      >>> f = sm.transform.vmap2(lambda x: x * 2 if flag.value else x)
      >>> f(jnp.ones(2))  # eager: Python sees flag's value, as with jax.vmap
      Array([2., 2.], dtype=float32)
      >>> sm.transform.jit(f)(jnp.ones(2))
      Traceback (most recent call last):
      ...
      statemap._errors.ConcreteValueError: vmap2: Python control flow used the value of a state, which is ...
    """


class SettingError(StatemapError, ValueError, TypeError):
    """A `statemap.environ` setting is unknown, not set, or given a value it does not accept.

    Also a `ValueError` and a `TypeError`, as for a bad keyword argument.

    Examples:
      >>> sm.environ.get("dtt")
      Traceback (most recent call last):
      ...
      statemap._errors.SettingError: environ.get: unknown setting 'dtt'
      ...
    """


class CheckpointError(StatemapError, ValueError):
    """A state dict or checkpoint file does not fit the states it is loaded into (names, structures, shapes).

    Also a `ValueError`, like the error of loading mismatched arrays elsewhere.

    Examples:
      >>> w = sm.ParamState(jnp.zeros(2), name="w")
      >>> sm.checkpoint.load_state_dict({"w": w}, {"v": jnp.ones(2)})
      Traceback (most recent call last):
      ...
      statemap._errors.CheckpointError: load_state_dict: the keys do not match the states: missing entries for 'w' ...
    """


class NaNError(StatemapError, FloatingPointError):
    """A NaN appeared in a differentiated input, the value or a gradient of ``grad(..., debug_nan=True)``.

    Also a `FloatingPointError`, the error `jax.debug_nans` raises.

    Examples:
      >>> sm.transform.grad(lambda x: jnp.sum(jnp.log(x)), debug_nan=True)(jnp.array([-1.0, 2.0]))
      Traceback (most recent call last):
      ...
      statemap._errors.NaNError: grad: NaN in the value of the function
      ...
    """


def without_jax_note(e: BaseException) -> BaseException:
    """Drop the traceback-filtering note JAX adds to exceptions crossing its API boundary.

    Our own errors are about the user's states and arguments; JAX's frames and note are noise there.
    """
    notes = getattr(e, "__notes__", None)
    if notes:
        e.__notes__ = [n for n in notes if "JAX_TRACEBACK_FILTERING" not in n]
    return e.with_traceback(None)


def describe_state(state: Any) -> str:
    """``state 'name' (Type, created at file.py:12)``: how every message identifies a state."""
    return f"state {state._label()} ({type(state).__name__}, created at {state.source})"


def message(who: str, problem: str, expected: str, found: str, fix: str) -> str:
    """Format the four-part message used by every statemap error."""
    return f"{who}: {problem}\n  expected: {expected}\n  found:    {found}\n  fix:      {fix}"


def short_aval(x: Any) -> str:
    """``f32[8,16]``-style description of an array-like leaf (never its contents)."""
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", None)
    if shape is None or dtype is None:
        return type(x).__name__
    try:
        import jax
        import jax.numpy as jnp

        if jnp.issubdtype(dtype, jax.dtypes.prng_key):
            name = "key"
        else:
            name = _DTYPE_SHORT.get(str(dtype), str(dtype))
    except Exception:
        name = str(dtype)
    return f"{name}[{','.join(str(d) for d in shape)}]"


def tree_aval(tree: Any) -> str:
    """Short abstract description of a pytree of arrays."""
    import jax

    leaves, treedef = jax.tree_util.tree_flatten(tree)
    treedef_: Any = treedef
    if treedef_.num_leaves == 1 and treedef_.num_nodes == 1:
        return short_aval(leaves[0])
    return "{" + ", ".join(short_aval(x) for x in leaves) + "}"


_DTYPE_SHORT = {
    "float32": "f32",
    "float64": "f64",
    "float16": "f16",
    "bfloat16": "bf16",
    "int32": "i32",
    "int64": "i64",
    "int8": "i8",
    "int16": "i16",
    "uint32": "u32",
    "uint8": "u8",
    "bool": "bool",
    "complex64": "c64",
}


def is_library_module(module: str) -> bool:
    """Modules that are not where a user calls from: statemap's private ones, JAX, functools and contextlib."""
    if module.startswith(("jax.", "jaxlib.")) or module in ("functools", "contextlib"):
        return True
    return module.startswith("statemap.") and "._" in module


def warn_user(text: str) -> None:
    """A `UserWarning` reported at the user's line: the first frame outside the library (`is_library_module`)."""
    frame = sys._getframe(1)
    level = 2  # the caller of `warn_user`
    while frame.f_back is not None and is_library_module(frame.f_globals.get("__name__", "")):
        frame = frame.f_back
        level += 1
    warnings.warn(text, UserWarning, stacklevel=level)
