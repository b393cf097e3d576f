"""`jit`: `jax.jit` for functions that read and write states.

Each signature is traced once by `StatefulFunction`; its jaxpr is what runs, never the Python body again. The
calls themselves go through the shared `Dispatcher` (`_dispatch.py`): eager calls without static or donated
arguments take its fast path (one `jax.jit` over the known states' values and the arguments), the others its
traced path (one compiled program per traced signature). `lower` and `eval_shape` read a signature's program
and trace without running anything.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Sequence
from typing import Any, overload

import jax

from .._errors import ArgumentError, message
from .._state import State, peek
from ._arguments import CallSignature, parse_argnums, resolve_argnums, shift_argnums
from ._dispatch import Dispatcher, Program, check_signatures
from ._eval_shape import out_shapes
from ._make_jaxpr import StatefulFunction, Traced
from ._method import bind_method, weak_partial

__all__ = ["jit", "JittedFunction"]


class JittedFunction:
    """The callable returned by `jit`. Call it like the original function.

    Attributes:
      origin_fun: The wrapped function.
      stateful: The `StatefulFunction` holding the traced signatures.
      name: The name given to `jit` (or None).

    Examples:
      >>> class Counter(sm.nn.Module):
      ...     def __init__(self):
      ...         self.n = sm.ShortTermState(jnp.zeros((), jnp.int32))
      ...     @sm.transform.jit
      ...     def tick(self, k):
      ...         self.n.value = self.n.value + k
      ...         return self.n.value
      >>> a, b = Counter(), Counter()
      >>> a.tick(2), a.tick(3), b.tick(1)
      (Array(2, dtype=int32), Array(5, dtype=int32), Array(1, dtype=int32))
      >>> type(Counter.tick).__name__
      'JittedFunction'
    """

    def __init__(
        self,
        fun: Callable[..., Any],
        static_argnums: int | Sequence[int] = (),
        static_argnames: str | Sequence[str] = (),
        donate_argnums: int | Sequence[int] = (),
        name: str | None = None,
        **jit_kwargs: Any,
    ) -> None:
        if name is not None and not isinstance(name, str):
            raise ArgumentError(
                message(
                    "jit",
                    "name is not a str",
                    "a str naming the compiled program, e.g. 'train_step'",
                    f"{type(name).__name__} {name!r:.60}",
                    "pass the name as a str",
                )
            )
        self.origin_fun = fun
        self.name = name
        self.stateful = StatefulFunction(fun, static_argnums, static_argnames, name="jit")
        self.donate_argnums = parse_argnums(donate_argnums, "donate_argnums")
        # `in_shardings`/`out_shardings` are the user's, for the arguments and the result; states keep their own.
        self._in_shardings = jit_kwargs.pop("in_shardings", None)
        self._out_shardings = jit_kwargs.pop("out_shardings", None)
        self._jit_kwargs = jit_kwargs
        self._programs: weakref.WeakKeyDictionary[Traced, Program] = weakref.WeakKeyDictionary()
        fast = not self.donate_argnums
        self._dispatcher = Dispatcher(
            self._resolve,
            self.stateful.spec,
            fast,
            {**jit_kwargs, **self._fast_shardings()},
            name=f"jit({getattr(fun, '__qualname__', None) or repr(fun)})",
        )
        functools.update_wrapper(self, fun, updated=())

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._dispatcher(args, kwargs)

    def _fast_shardings(self) -> dict[str, Any]:
        """The user's shardings placed in the fast path's ``(state values, args, kwargs) -> (writes, result)``."""
        out: dict[str, Any] = {}
        if self._in_shardings is not None:
            out["in_shardings"] = (None, _per_argument(self._in_shardings), None)
        if self._out_shardings is not None:
            out["out_shardings"] = (None, self._out_shardings)
        return out

    def _program_shardings(self, sig: CallSignature) -> dict[str, Any]:
        """The user's shardings placed in a program's ``(argument leaves, state values) -> (writes, result)``."""
        out: dict[str, Any] = {}
        if self._in_shardings is not None:
            per_arg = _per_argument(self._in_shardings)
            leaves: list[Any] = []
            for i, arg in enumerate(sig.dyn_args):
                spec = per_arg if not isinstance(per_arg, tuple) else per_arg[i]
                leaves.extend([spec] * len(jax.tree_util.tree_leaves(arg)))
            leaves.extend([None] * len(jax.tree_util.tree_leaves(sig.dyn_kwargs)))
            out["in_shardings"] = (leaves, None)
        if self._out_shardings is not None:
            out["out_shardings"] = (None, self._out_shardings)
        return out

    def _resolve(self, sig: CallSignature, fresh: bool) -> tuple[Program, list[State]]:
        entry = self.stateful.lookup(sig, fresh)
        program = self._programs.get(entry)
        if program is None:
            program = self._programs[entry] = self._program(entry, sig)
        return program, list(entry.states)

    def _program(self, entry: Traced, sig: CallSignature) -> Program:
        name = self.name

        def run(arg_leaves: list[Any], values: list[Any]) -> tuple[list[Any], Any]:
            check_signatures(values, entry.state_sigs)
            if name is None:
                return entry.call_flat(arg_leaves, values)
            with jax.named_scope(name):  # names the operations, also when the fast path inlines `run`
                return entry.call_flat(arg_leaves, values)

        if name is not None:  # `jax.jit` names the compiled module after the function: jit_<name>
            run.__name__ = run.__qualname__ = name

        kwargs = {**self._jit_kwargs, **self._program_shardings(sig)}
        if self.donate_argnums:
            donate = resolve_argnums(self.donate_argnums, len(sig.args), "jit", "donate_argnums")
            dynamic = [i for i in range(len(sig.args)) if i not in sig.static_pos]
            # The program takes the argument leaves as one list; donation is per argument, so the list is
            # donated only when every dynamic argument is, else nothing is donated.
            kwargs["donate_argnums"] = (0,) if dynamic and all(i in donate for i in dynamic) else ()
        return Program(entry.states, entry.out_states, run, jax.jit(run, **kwargs))

    def lower(self, *args: Any, **kwargs: Any) -> jax.stages.Lowered:
        """This call's program lowered for XLA, like ``jax.jit(f).lower(...)``: inspect its HLO, or compile it.

        The program takes ``(argument leaves, state values)``: the dynamic arguments, flattened, then the values
        of the states the function touches (`stateful.get_states`), in that order. Nothing runs and no state
        changes; the function is traced if this signature was not yet.

        Examples:
          >>> s = sm.State(jnp.zeros(3), name="s")
          >>> def step(x):
          ...     s.value = s.value + jnp.sin(x)
          ...     return s.value
          >>> lowered = sm.transform.jit(step, name="step").lower(jnp.ones(3))
          >>> "sine" in lowered.as_text(), "jit_step" in lowered.as_text(), s.value
          (True, True, Array([0., 0., 0.], dtype=float32))
          >>> compiled = lowered.compile()
          >>> compiled([jnp.ones(3)], [jnp.zeros(3)])[1]
          Array([0.84147096, 0.84147096, 0.84147096], dtype=float32)
        """
        sig = self.stateful.signature(args, kwargs)
        program, states = self._resolve(sig, False)
        exe: Any = program.exe  # the `jax.jit` of the program's `run`, with this jit's options
        lowered: jax.stages.Lowered = exe.lower(sig.leaves, [peek(s) for s in states])
        return lowered

    def eval_shape(self, *args: Any, **kwargs: Any) -> Any:
        """The shapes and dtypes of this call's result (`jax.ShapeDtypeStruct`s), without running it.

        Like ``jax.jit(f).eval_shape(...)``; no state changes, and the trace is cached for later calls.

        Examples:
          >>> w = sm.ParamState(jnp.ones((3, 2)), name="w")
          >>> sm.transform.jit(lambda x: x @ w.value).eval_shape(jnp.ones((4, 3)))
          ShapeDtypeStruct(shape=(4, 2), dtype=float32)
        """
        return out_shapes(self.stateful.trace(*args, **kwargs))

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is None:
            return self
        return bind_method(self, obj, self._bound_to)

    def _bound_to(self, obj: Any) -> JittedFunction:
        """This jit applied to ``functools.partial(fun, obj)``: a decorated method's `self` is not an argument."""
        spec = self.stateful.spec.bound()
        return JittedFunction(
            weak_partial(self.origin_fun, obj),
            spec.static_argnums,
            spec.static_argnames,
            shift_argnums(self.donate_argnums),
            self.name,
            **self._jit_kwargs,
            **{k: v for k, v in (("in_shardings", self._in_shardings), ("out_shardings", self._out_shardings)) if v},
        )

    def clear_cache(self) -> None:
        """Forget traced signatures and compiled executables."""
        self.stateful.clear_cache()
        self._programs.clear()
        self._dispatcher.clear()


def _per_argument(shardings: Any) -> Any:
    """One sharding for every argument, or a tuple with one per positional argument (as `jax.jit` takes them)."""
    return tuple(shardings) if isinstance(shardings, (list, tuple)) else shardings


@overload
def jit(
    fun: Callable[..., Any],
    static_argnums: int | Sequence[int] = (),
    static_argnames: str | Sequence[str] = (),
    donate_argnums: int | Sequence[int] = (),
    name: str | None = None,
    **jit_kwargs: Any,
) -> JittedFunction: ...


@overload
def jit(
    fun: None = None,
    static_argnums: int | Sequence[int] = (),
    static_argnames: str | Sequence[str] = (),
    donate_argnums: int | Sequence[int] = (),
    name: str | None = None,
    **jit_kwargs: Any,
) -> Callable[[Callable[..., Any]], JittedFunction]: ...


def jit(
    fun: Callable[..., Any] | None = None,
    static_argnums: int | Sequence[int] = (),
    static_argnames: str | Sequence[str] = (),
    donate_argnums: int | Sequence[int] = (),
    name: str | None = None,
    **jit_kwargs: Any,
) -> JittedFunction | Callable[[Callable[..., Any]], JittedFunction]:
    """Compile a function that reads and writes states, like `jax.jit`.

    The Python body runs once per abstract signature (argument shapes/dtypes, static values, shapes of the
    states it touches); warm calls run one cached executable. States written inside are written back after the
    call; if the call raises, every state keeps its previous value.

    Args:
      fun: Function to compile; it may read and write `State`s it closes over (don't pass states as arguments).
      static_argnums / static_argnames: As in `jax.jit`.
      donate_argnums: As in `jax.jit` (donation applies when every dynamic argument is donated).
      name: A name for the compiled program: its operations are placed under ``jax.named_scope(name)`` (shown
        in profiles and HLO metadata) and `JittedFunction.lower` gives a module named ``jit_<name>``.
      **jit_kwargs: Forwarded to `jax.jit` (e.g. ``keep_unused``, ``device``). ``in_shardings`` and
        ``out_shardings`` apply to the function's own arguments (one sharding, or one per positional argument)
        and result; the states it reads and writes are not constrained and keep the sharding of their values.

    Returns:
      A `JittedFunction`; also usable as a decorator with or without arguments, and on methods. Its
      `~JittedFunction.lower` and `~JittedFunction.eval_shape` methods work as those of `jax.jit`'s result.

    Examples:
      >>> count = sm.ShortTermState(jnp.array(0), name="count")
      >>> @sm.transform.jit
      ... def step(x):
      ...     count.value = count.value + 1
      ...     return x * count.value
      >>> step(jnp.ones(2)), step(jnp.ones(2))
      (Array([1., 1.], dtype=float32), Array([2., 2.], dtype=float32))
      >>> count.value
      Array(2, dtype=int32, weak_type=True)
    """
    if fun is None:
        return functools.partial(
            jit,
            static_argnums=static_argnums,
            static_argnames=static_argnames,
            donate_argnums=donate_argnums,
            name=name,
            **jit_kwargs,
        )
    return JittedFunction(fun, static_argnums, static_argnames, donate_argnums, name, **jit_kwargs)
