"""`jit`: `jax.jit` for functions that read and write states.

Each signature is traced once by `StatefulFunction`; its jaxpr is what runs, never the Python body again. The
calls themselves go through the shared `Dispatcher` (`_dispatch.py`): eager calls without static or donated
arguments take its fast path (one `jax.jit` over the known states' values and the arguments), the others its
traced path (one compiled program per traced signature). `lower` and `eval_shape` read a signature's program
and trace without running anything.

``state_shardings={sharding: selector}`` places states: inside the program the selected states' values, on input
and on output, go through `jax.lax.with_sharding_constraint` (so a written state comes back with its sharding),
and after an eager call a selected state whose stored value lies elsewhere (read only, or committed to other
devices, which JAX refuses to constrain) is moved there with `jax.device_put`.
"""

from __future__ import annotations

import contextlib
import functools
import math
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import jax

from .. import _compat
from .._errors import BatchAxisError, StatemapError, TraceContextError, describe_state, message
from .._state import State, peek, write_back
from .._trace import CONTEXT
from ..util.filter import Predicate
from ._arguments import CallSignature, check_optional_str, parse_argnums, resolve_argnums, shift_argnums
from ._decorator import makes
from ._dispatch import Dispatched, Dispatcher, Program, check_signatures
from ._eval_shape import out_shapes
from ._make_jaxpr import StatefulFunction, Traced
from ._mapping_axes import first_match, is_unmatched, selector_table
from ._method import bind_method, bound_transforms, weak_partial

__all__ = ["jit", "JittedFunction"]

Placements = tuple[tuple[jax.sharding.Sharding, Predicate], ...]


class JittedFunction(Dispatched):
    """The callable returned by `jit`. Call it like the original function.

    Attributes:
      origin_fun: The wrapped function.
      stateful: The `StatefulFunction` holding the traced signatures.
      name: The name given to `jit` (or None).
      state_shardings: The normalised ``((sharding, predicate), ...)`` of ``state_shardings``.

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
        state_shardings: dict[Any, Any] | None = None,
        **jit_kwargs: Any,
    ) -> None:
        check_optional_str(name, "jit", "name", "a name for the compiled program", "'train_step'")
        self.origin_fun = fun
        self.name = name
        self.stateful = StatefulFunction(fun, static_argnums, static_argnames, name="jit")
        self.donate_argnums = parse_argnums(donate_argnums, "donate_argnums")
        self.state_shardings = _normalize_placements(state_shardings)
        self._state_shardings_arg = state_shardings  # as given, for `_bound_to`
        # The selected states the programs met, with their sharding: checked after each eager call (`_place`).
        self._placed: weakref.WeakKeyDictionary[State, jax.sharding.Sharding] = weakref.WeakKeyDictionary()
        # `in_shardings`/`out_shardings` are the user's, for the arguments and the result; states keep their own.
        self._in_shardings = jit_kwargs.pop("in_shardings", None)
        self._out_shardings = jit_kwargs.pop("out_shardings", None)
        self._jit_kwargs = jit_kwargs
        self._programs: weakref.WeakKeyDictionary[Traced, Program] = weakref.WeakKeyDictionary()
        fast = not self.donate_argnums
        # No `jax.jit` gets them as in/out shardings (the fast path's layout is the dispatcher's): the program
        # constrains the arguments and the result itself (`run`), on both paths.
        self._dispatcher = Dispatcher(
            self._resolve,
            self.stateful.spec,
            fast,
            jit_kwargs,
            name=f"jit({getattr(fun, '__qualname__', None) or repr(fun)})",
            around=self._call_placing if self.state_shardings else None,
        )
        functools.update_wrapper(self, fun, updated=())

    def _call_placing(self, run: Callable[[tuple[Any, ...], dict[str, Any]], Any], args: Any, kwargs: Any) -> Any:
        """Each call with ``state_shardings``: a selected state JAX cannot constrain is placed first, then retried."""
        try:
            out = run(args, kwargs)
        except ValueError as e:  # a state committed to other devices than its sharding's: JAX refuses the call
            if isinstance(e, StatemapError) or "incompatible devices" not in str(e) or not _place(self._placed):
                raise
            out = run(args, kwargs)
        _place(self._placed)
        return out

    def _arg_shardings(self, sig: CallSignature) -> list[Any]:
        """The user's `in_shardings` per dynamic argument leaf (None for keyword arguments); [] without them."""
        if self._in_shardings is None:
            return []
        per_arg = _per_argument(self._in_shardings)
        leaves: list[Any] = []
        for i, arg in enumerate(sig.dyn_args):
            spec = per_arg if not isinstance(per_arg, tuple) else per_arg[i]
            leaves.extend([spec] * len(jax.tree_util.tree_leaves(arg)))
        leaves.extend([None] * len(jax.tree_util.tree_leaves(sig.dyn_kwargs)))
        return leaves

    def _resolve(self, sig: CallSignature, fresh: bool) -> tuple[Program, list[State]]:
        entry = self.stateful.lookup(sig, fresh)
        program = self._programs.get(entry)
        if program is None:
            program = self._programs[entry] = self._program(entry, sig)
        return program, list(entry.states)

    def _program(self, entry: Traced, sig: CallSignature) -> Program:
        name = self.name
        placed = _placements(self.state_shardings, entry, self._placed)
        placed_out = [placed[i] for i in entry.out_states] if placed else []
        arg_placed = self._arg_shardings(sig)
        out_placed = self._out_shardings

        def run(arg_leaves: list[Any], values: list[Any]) -> tuple[list[Any], Any]:
            check_signatures(values, entry.state_sigs)
            # A named scope names the operations, also when the fast path inlines `run`.
            with contextlib.nullcontext() if name is None else jax.named_scope(name):
                arg_leaves = _constrain(list(arg_leaves), arg_placed)
                new_values, out = entry.call_flat(arg_leaves, _constrain(values, placed))
                if out_placed is not None:
                    out = jax.lax.with_sharding_constraint(out, out_placed)  # type: ignore[no-untyped-call]
                return _constrain(new_values, placed_out), out

        if name is not None:  # `jax.jit` names the compiled module after the function: jit_<name>
            run.__name__ = run.__qualname__ = name

        kwargs = dict(self._jit_kwargs)
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
            self._state_shardings_arg,
            **self._jit_kwargs,
            **{k: v for k, v in (("in_shardings", self._in_shardings), ("out_shardings", self._out_shardings)) if v},
        )

    def clear_cache(self) -> None:
        """Forget traced signatures and compiled executables (the instances' too, for a decorated method)."""
        self.stateful.clear_cache()
        self._programs.clear()
        self._dispatcher.clear()
        self._placed.clear()
        for bound in bound_transforms(self):
            bound.clear_cache()


def _normalize_placements(spec: Any) -> Placements:
    """``{sharding: selector}`` → ``((sharding, predicate), ...)``, with errors naming what is wrong."""
    return selector_table(
        spec,
        "jit",
        "state_shardings",
        "jax.sharding.Sharding",
        lambda k: isinstance(k, jax.sharding.Sharding),
        "{NamedSharding(mesh, PartitionSpec('d')): w}",
    )


def _placements(
    entries: Placements, entry: Traced, placed: weakref.WeakKeyDictionary[State, jax.sharding.Sharding]
) -> list[Any]:
    """Per state of `entry`, its sharding (or None); checks that each fits and records it in `placed`."""
    if not entries:
        return []
    out: list[Any] = []
    for state, leaf_sigs in zip(entry.states, entry.state_sigs, strict=True):
        found = first_match(entries, state)
        sharding = None if is_unmatched(found) else found
        if sharding is not None:
            for shape, _, _ in leaf_sigs:
                _check_fits(state, sharding, tuple(shape))
            placed[state] = sharding
        out.append(sharding)
    return out


def _check_fits(state: State, sharding: jax.sharding.Sharding, shape: tuple[int, ...]) -> None:
    """A `BatchAxisError` naming `state` when `sharding` cannot split a value of `shape`."""
    problem = None
    if isinstance(sharding, jax.sharding.NamedSharding):
        spec = tuple(sharding.spec)
        if len(spec) > len(shape):
            problem = f"its spec has {len(spec)} entries but the value has {len(shape)} dimension(s)"
        for dim, names in enumerate(spec[: len(shape)]):
            names = names if isinstance(names, tuple) else (names,)
            size = math.prod(sharding.mesh.shape[n] for n in names if isinstance(n, str))
            if problem is None and shape[dim] % size:
                problem = f"dimension {dim} (size {shape[dim]}) does not divide by {size} (mesh axes {names})"
    else:
        try:
            sharding.shard_shape(shape)
        except Exception as e:  # JAX's own words for any other kind of sharding
            problem = str(e).split("\n")[0]
    if problem is not None:
        raise BatchAxisError(
            message(
                "jit",
                f"{describe_state(state)} is placed by state_shardings on {sharding}, which does not fit it: {problem}",
                "a sharding whose mesh axes divide the dimensions they split",
                f"a value of shape {shape}",
                "select another state, or use a spec whose mesh axes divide its dimensions (P() replicates it)",
            )
        )


def _constrain(values: list[Any], shardings: list[Any]) -> list[Any]:
    """Each value (a pytree) under `jax.lax.with_sharding_constraint` of its sharding, if it has one."""
    if not shardings:
        return values
    return [
        v if s is None else jax.lax.with_sharding_constraint(v, s)  # type: ignore[no-untyped-call]
        for v, s in zip(values, shardings, strict=True)
    ]


def _place(placed: weakref.WeakKeyDictionary[State, jax.sharding.Sharding]) -> bool:
    """Outside every trace: move each selected state whose stored value lies elsewhere; whether one moved."""
    if CONTEXT.stack:
        return False
    moved = False
    for state, sharding in list(placed.items()):
        try:
            value = peek(state)
        except TraceContextError:  # holds a dead tracer: the next call names it
            continue
        if all(_on(x, sharding) for x in jax.tree_util.tree_leaves(value)):
            continue
        new = _put(value, sharding)
        # Under a plain JAX trace (`jax.jit` around this jit) `device_put` gives a tracer: a state never holds one.
        # A state written by another thread meanwhile keeps that write.
        if any(_compat.is_tracer(x) for x in jax.tree_util.tree_leaves(new)) or peek(state) is not value:
            continue
        write_back([state], {0: new})
        moved = True
    return moved


def _put(value: Any, sharding: jax.sharding.Sharding) -> Any:
    return jax.tree_util.tree_map(lambda x: x if _on(x, sharding) else jax.device_put(x, sharding), value)


def _on(x: Any, sharding: jax.sharding.Sharding) -> bool:
    """Whether `x` already lies as `sharding` says (a tracer counts as placed: it is not a stored value)."""
    if _compat.is_tracer(x):
        return True
    if not isinstance(x, jax.Array):
        return False
    return bool(x.sharding == sharding or x.sharding.is_equivalent_to(sharding, x.ndim))


def _per_argument(shardings: Any) -> Any:
    """One sharding for every argument, or a tuple with one per positional argument (as `jax.jit` takes them)."""
    return tuple(shardings) if isinstance(shardings, (list, tuple)) else shardings


# The typed forms take `fun` positionally; at run time ``jit(fun=f)`` works too (hence the ignore).
@makes(JittedFunction)  # type: ignore[arg-type]
def jit(
    fun: Callable[..., Any] | None = None,
    static_argnums: int | Sequence[int] = (),
    static_argnames: str | Sequence[str] = (),
    donate_argnums: int | Sequence[int] = (),
    name: str | None = None,
    state_shardings: dict[Any, Any] | None = None,
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
      state_shardings: ``{sharding: selector}``: the states a selector picks (a `State`, states, a State type,
        a tag, a filter: what `vmap2`'s ``state_in_axes`` accepts; the first matching entry wins) are placed on
        that `jax.sharding.Sharding`: constrained to it inside the program, on input and on output, so a
        written state comes back with it, and moved there after an eager call when its stored value lies
        elsewhere. The others keep the sharding of their values.
      **jit_kwargs: Forwarded to `jax.jit` (e.g. ``keep_unused``, ``device``). ``in_shardings`` and
        ``out_shardings`` apply to the function's own arguments (one sharding, or one per positional argument)
        and result, not to the states; the program applies them with `jax.lax.with_sharding_constraint`, so an
        argument on the same devices with another sharding is resharded rather than refused.

    Returns:
      A `JittedFunction`; also usable as a decorator with or without arguments, and on methods. Its
      `~JittedFunction.lower` and `~JittedFunction.eval_shape` methods work as those of `jax.jit`'s result.

    Raises:
      TypeError: a ``state_shardings`` key is not a `jax.sharding.Sharding`, or a selector is not a filter.
      BatchAxisError: (at the call) a selected state's dimension does not divide by the mesh axes that split it.

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

      States placed on a mesh (`jax.devices()` are the CPU devices here):

      >>> import numpy as np
      >>> from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
      >>> mesh = Mesh(np.array(jax.devices()), ("d",))
      >>> rows = NamedSharding(mesh, P("d"))
      >>> w = sm.ParamState(jnp.zeros((2 * len(jax.devices()), 2)), name="w")   # one device holds it, unsharded
      >>> @sm.transform.jit(state_shardings={rows: w})
      ... def update(x):
      ...     w.value = w.value + x
      ...     return w.value[0]
      >>> update(jnp.ones_like(w.value)), w.value.sharding.spec
      (Array([1., 1.], dtype=float32), P('d',))
    """
    if fun is None:
        return functools.partial(
            jit,
            static_argnums=static_argnums,
            static_argnames=static_argnames,
            donate_argnums=donate_argnums,
            name=name,
            state_shardings=state_shardings,
            **jit_kwargs,
        )
    return JittedFunction(fun, static_argnums, static_argnames, donate_argnums, name, state_shardings, **jit_kwargs)
