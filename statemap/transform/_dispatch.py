"""The per-call protocol shared by `jit` and every mapping transform: find the program, run it, write back.

A transform (a `JittedFunction`, a `StatefulMapping`) turns each call signature into a `Program`: the states it
touches (held weakly), a pure function of (argument leaves, state values) → (new values of the states it writes,
result), and that function compiled for eager calls. The `Dispatcher` does the rest, in one of two ways:

- **Fast path** (eager calls, no static arguments): a `jax.jit` per list of states the transform is known to
  touch (its *known* list) receives their values plus the call's arguments, flat, so JAX's C++ dispatch does the
  signature check and the cache lookup. Its body runs only when JAX traces a new signature: it asks the
  transform for the program and inlines it. A program touching a state not yet known raises `NewStates`; the
  dispatcher makes a longer list (with its own `jax.jit`) and retries. Known states are held weakly; when one
  dies the list is compacted (a new list, a new `jax.jit`). The first try of a warm call runs inline in the
  transform's `__call__` (`Dispatched`), in one Python frame.
- **Traced path** (inside an enclosing statemap transform, or with static arguments): build the signature, get
  the program, read the values (recording the reads), run the compiled program, write back.

Both paths write back through `statemap._state.write_back`, the one write-back of every transform. A program
whose states changed shape since it was built raises `StaleProgram` when JAX retraces it; the dispatcher asks
for a fresh program once. Thread safety: the known list is an immutable snapshot replaced under a lock; a traced
body checks that its `jax.jit` still belongs to the current list (its `token`), else the call reads again.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import jax

from .. import _compat
from .._errors import MappingRuntimeError, StatemapError, without_jax_note
from .._state import (
    _GENERATION,
    MISSING,
    State,
    caller,
    dispatched_call,
    generation,
    read_values,
    write_back,
)
from .._trace import CONTEXT
from ._arguments import ArgSpec, CallSignature, value_signature

__all__ = ["Program", "Dispatcher", "Dispatched", "StaleProgram", "NewStates", "check_signatures"]

_MAX_TRIES = 8  # each try learns new states or drops dead ones; more means a function touching ever-new states


class StaleProgram(Exception):
    """Internal: a state's value no longer has the type the program was built for (never reaches users)."""


class NewStates(Exception):
    """Internal: a new signature touches states the fast path does not pass yet (never reaches users)."""

    def __init__(self, states: list[State]) -> None:
        super().__init__()
        self.states = states


def check_signatures(values: Sequence[Any], expected: tuple[Any, ...]) -> None:
    """Raise `StaleProgram` unless `values` have the signatures a program was built for."""
    if tuple(value_signature(v) for v in values) != expected:
        raise StaleProgram


class Program:
    """One call signature of a transform, ready to run.

    Args:
      states: The states the program reads (in the order `run` takes their values); held weakly.
      writes: Indices into `states` whose new values `run` returns, in that order.
      run: Pure ``run(arg_leaves, state_values) -> (new_values, result)``; inlined by the fast path. It raises
        `StaleProgram` (at JAX trace time) when the values' types differ from those it was built for. Called
        outside any trace it runs op by op, without compiling (the cold tier).
      exe: `run` compiled for eager calls (or `run` itself when it already runs compiled code, e.g. `pmap`).
      cacheable: False when the program closes over tracers of an enclosing trace (it must not be kept).
      direct: For a signature that cannot be traced abstractly (Python control flow on a state's concrete
        value): ``direct(sig) -> result`` runs the call itself, reading and writing states (the Python tier);
        `run` and `exe` are then unused.

    Attributes:
      fresh: True until the program first ran; a dispatcher with ``cold=True`` runs a fresh program op by op
        instead of compiling it (a signature called once never waits for XLA).
    """

    __slots__ = ("_refs", "writes", "run", "exe", "cacheable", "direct", "fresh")

    def __init__(
        self,
        states: Sequence[State],
        writes: Sequence[int],
        run: Callable[[list[Any], list[Any]], tuple[list[Any], Any]],
        exe: Callable[[list[Any], list[Any]], tuple[list[Any], Any]],
        cacheable: bool = True,
        direct: Callable[[CallSignature], Any] | None = None,
    ) -> None:
        self._refs = tuple(weakref.ref(s) for s in states)
        self.writes = tuple(writes)
        self.run = run
        self.exe = exe
        self.cacheable = cacheable
        self.direct = direct
        self.fresh = True

    def states(self) -> list[State] | None:
        """The live states, or None when one died (the program must be rebuilt)."""
        out = [r() for r in self._refs]
        return None if any(s is None for s in out) else out  # type: ignore[return-value]


class RunOutside(Exception):
    """Internal: the fast path's traced body found a program to run outside `jax.jit` (never reaches users)."""

    def __init__(self, program: Program, states: list[State]) -> None:
        super().__init__()
        self.program = program
        self.states = states


class _Known:
    """Immutable snapshot of the fast path: known states (weakly), their positions, and the `jax.jit` for them.

    Each list of known states has its own `jax.jit` (its compiled code takes one value per state), identified
    by `token`, which the traced body checks against the dispatcher's current list. A new generation that keeps
    the same programs keeps the list, the token and the compiled code (`stamped`).
    """

    __slots__ = ("refs", "index", "token", "jitted", "jitted_kw", "generation", "who", "call", "single")

    def __init__(
        self,
        refs: tuple[weakref.ref[State], ...],
        token: object,
        jitted: tuple[Callable[..., Any], Callable[..., Any]],
        generation: int,
        who: str,
    ) -> None:
        self.refs = refs
        self.index: dict[int, int] = {id(r()): i for i, r in enumerate(refs)}
        self.token = token
        # ``jitted(*values, *args)`` for calls without keyword arguments (an empty dict costs JAX's argument
        # parsing ~0.15 us), ``jitted_kw(kwargs, *values, *args)`` for the others.
        self.jitted, self.jitted_kw = jitted
        self.generation = generation  # the generation of states every compiled signature was checked against
        self.who = who  # the transformed function, in messages
        self.call = caller(refs, self.jitted, who)  # read the values, call, commit (`Dispatched.__call__`)
        self.single = refs[0] if len(refs) == 1 else None  # `Dispatched.__call__` inlines the one-state case

    def stamped(self, generation: int) -> _Known:
        return _Known(self.refs, self.token, (self.jitted, self.jitted_kw), generation, self.who)


Resolve = Callable[[CallSignature, bool], tuple[Program, list[State]]]


Around = Callable[[Callable[[tuple[Any, ...], dict[str, Any]], Any], tuple[Any, ...], dict[str, Any]], Any]
_AGAIN = object()  # `Dispatcher._handle`: the fast path learned something; try the call again


class Dispatcher:
    """Runs calls of one transform object (see the module docstring).

    Args:
      resolve: ``resolve(sig, fresh) -> (program, live states)``: the transform's cached program for `sig`, or a
        new one (always a new one when `fresh`: the cached one was stale).
      spec: How the transform's arguments are split (static ones).
      fast: Whether eager calls may take the fast path (no static arguments; the program inlines under jit).
      jit_kwargs: Extra keyword arguments for the fast path's `jax.jit`.
      cold: Whether the first eager call of a signature runs its program op by op instead of compiling it.
      name: How messages name the transformed function (default: the transform's name).
      around: ``around(run, args, kwargs)``, for a transform that must do something around each call (route it,
        place states afterwards): every call goes through it, with ``run(args, kwargs)`` dispatching the call;
        `Dispatched.__call__`'s inline fast path is then off.
    """

    def __init__(
        self,
        resolve: Resolve,
        spec: ArgSpec,
        fast: bool,
        jit_kwargs: dict[str, Any] | None = None,
        cold: bool = False,
        name: str | None = None,
        around: Around | None = None,
    ) -> None:
        self._resolve = resolve
        self.spec = spec
        self.name = name or spec.who  # the user's function, in messages
        self._fast = fast and not spec.has_static
        self._cold = cold
        self._around = around
        # Whether eager calls take the fast path now. With a cold tier, calls take the traced path until one
        # ran cold: a fresh transform's first call then never enters the fast path's `jax.jit` (its trace and
        # aborts cost as much as the call). A Python-tier program turns it off for good.
        self._fast_ready = self._fast and not cold
        self._has_direct = False
        self._jit_kwargs = dict(jit_kwargs or {})
        self._lock = threading.Lock()
        # What the fast path compiled, keyed like its `jax.jit` cache: (signature key, state value types).
        self._seen: dict[Hashable, tuple[CallSignature, Program]] = {}
        self._known = self._empty()
        self.ready: _Known | None = None  # the known list while `Dispatched.__call__` may try it inline
        self._publish()
        self.calls = 0  # number of calls (cache statistics of the transforms)

    def _empty(self, refs: tuple[weakref.ref[State], ...] = (), gen: int | None = None) -> _Known:
        """A known list of `refs` with its own `jax.jit` (empty cache), checked against generation `gen`."""
        token = object()
        body, body_kw = functools.partial(self._body, token, {}), functools.partial(self._body, token)
        jitted = jax.jit(body, **self._jit_kwargs), jax.jit(body_kw, **self._jit_kwargs)
        return _Known(refs, token, jitted, generation() if gen is None else gen, self.name)

    def _publish(self) -> None:
        self.ready = self._known if self._fast_ready and self._around is None else None

    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self._around is not None:
            return self._around(self.run, args, kwargs)
        return self.run(args, kwargs)

    def run(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Dispatch one call: the fast path when eager and ready, else the traced path."""
        self.calls += 1
        if self._fast_ready and not CONTEXT.stack:
            return self._retry(args, kwargs)
        return self._call_traced(CallSignature.of(self.spec, args, kwargs))

    def after(self, error: Exception, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Finish a call whose inline fast-path try (`Dispatched.__call__`) raised `error`."""
        self.calls += 1
        out = self._handle(error, args, kwargs)
        return self._retry(args, kwargs) if out is _AGAIN else out

    def _retry(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The fast path: each failed try adapts the known list (or the generation) and tries again."""
        for _ in range(_MAX_TRIES):
            known = self._known
            if known.generation != _GENERATION[0]:  # states were created or re-bound since: check again
                self._revalidate(known)
                continue
            fn = functools.partial(known.jitted_kw, kwargs) if kwargs else known.jitted
            try:
                out = known.call(args, fn)
            except Exception as e:
                out = self._handle(e, args, kwargs)
                if out is _AGAIN:
                    continue
                return out
            if out is not MISSING:
                return out
            if any(r() is None for r in known.refs):  # a known state died: compact (new positions, new jax.jit)
                self._compact(known)
                continue
            break  # a known state holds a dead tracer: the traced path tells if it matters
        return self._call_traced(CallSignature.of(self.spec, args, kwargs))

    def _handle(self, error: Exception, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """What the fast path's `jax.jit` raised: learn and return `_AGAIN`, finish the call another way, or raise."""
        if isinstance(error, NewStates):
            self._grow(error.states)
            return _AGAIN
        if isinstance(error, RunOutside):
            sig = CallSignature.of(self.spec, args, kwargs)
            if not _is_eager(sig):  # called under a raw JAX trace: no op-by-op run there
                return self._call_traced(sig)
            return self._run_outside(error.program, error.states, sig)
        if isinstance(error, StatemapError):
            raise without_jax_note(error) from None
        if isinstance(error, _compat.InternalFloatingPointError):
            raise _floating_point_error(error, self.name) from None
        if isinstance(error, (TypeError, OverflowError)):
            CallSignature.of(self.spec, args, kwargs)  # raises a statemap ArgumentError naming a bad argument
        raise error

    def _body(self, token: object, kwargs: dict[str, Any], *flat: Any) -> tuple[Any, ...]:
        """Body of the fast path's `jax.jit` (traced by JAX for a new signature only): ``(kwargs, *values, *args)``
        (a call without keyword arguments has ``kwargs={}`` bound, not passed).

        Everything is flat, the cheapest for JAX's C++ dispatch to parse: one value per known state, then the
        arguments. Returns ``(result, *new)`` with one entry per known state: its new value where this signature
        writes it, else None (the positions of the Nones are part of the output's structure, so they are static
        per signature; a state holding None written with None is no change).
        """
        known = self._known
        if known.token is not token:  # the list changed since the caller read its values: read them again
            raise NewStates([])
        n = len(known.refs)
        values, args = flat[:n], flat[n:]
        sig = CallSignature.of(self.spec, args, kwargs)
        for fresh in (False, True):
            program, states = self._resolve(sig, fresh)
            missing = [s for s in states if id(s) not in known.index]
            if missing:
                raise NewStates(missing)
            if program.direct is not None or (self._cold and program.fresh):
                program.fresh = False
                raise RunOutside(program, states)
            pos = [known.index[id(s)] for s in states]
            try:
                new_values, out = program.run(sig.leaves, [values[p] for p in pos])
            except StaleProgram:
                continue
            if known.generation != generation():  # states re-bound while this traced: check again first
                raise NewStates([])
            # Keyed like JAX's cache of this `jax.jit`: the signature and the types of the state values.
            self._seen[(sig.key, tuple(value_signature(v) for v in values))] = (sig.abstract(), program)
            new: list[Any] = [None] * n
            for i, v in zip(program.writes, new_values, strict=True):
                new[pos[i]] = v
            return (out, *new)
        raise _bug(self.spec.who)

    def _call_traced(self, sig: CallSignature) -> Any:
        for fresh in (False, True):
            program, states = self._resolve(sig, fresh)
            if program.direct is not None or (self._cold and program.fresh and _is_eager(sig)):
                program.fresh = False
                return self._run_outside(program, states, sig)
            values = read_values(states)
            try:
                new_values, out = program.exe(sig.leaves, values)
            except StaleProgram:
                continue
            except _compat.InternalFloatingPointError as e:
                raise _floating_point_error(e, self.name) from None
            write_back(states, dict(zip(program.writes, new_values, strict=True)), self.name)
            return out
        raise _bug(self.spec.who)

    def _run_outside(self, program: Program, states: list[State], sig: CallSignature) -> Any:
        """Run a program outside `jax.jit`: its Python tier, or op by op (the cold tier)."""
        with self._lock:  # `ready` follows the flag and the current list together
            if program.direct is not None:  # the Python tier: keep this transform off the fast path from now on
                self._has_direct = True
            self._fast_ready = self._fast and not self._has_direct
            self._publish()
        if program.direct is not None:
            return program.direct(sig)
        try:
            new_values, out = program.run(sig.leaves, read_values(states))
        except StaleProgram:  # another thread changed a state's type since the program was resolved
            return self._call_traced(sig)
        write_back(states, dict(zip(program.writes, new_values, strict=True)), self.name)
        return out

    def _revalidate(self, known: _Known) -> None:
        """After a new generation of states: trace every compiled signature again (abstractly, no compile).

        When each still resolves to the same program (same states, same roles), the compiled code stays;
        otherwise the fast path starts over with a new `jax.jit` (positions and programs changed).
        """
        gen = generation()
        kept = all(_resolves_to(self._resolve, sig, program) for sig, program in list(self._seen.values()))
        with self._lock:
            if self._known is known:
                if not kept:
                    self._seen = {}
                self._known = known.stamped(gen) if kept else self._empty()
                self._publish()

    def _grow(self, states: list[State]) -> None:
        """Add `states` to the known list: a new list, with its own `jax.jit`, when one is new."""
        with self._lock:
            known = self._known
            new = tuple(weakref.ref(s) for s in states if id(s) not in known.index)
            if new:
                self._known = self._empty(known.refs + new, known.generation)
                self._publish()

    def _compact(self, known: _Known) -> None:
        """Drop the dead states of `known` (unless another thread replaced the list already)."""
        with self._lock:
            if self._known is known:
                self._seen = {}
                self._known = self._empty(tuple(r for r in known.refs if r() is not None))
                self._publish()

    def clear(self) -> None:
        """Forget the known states and the fast path's compiled code."""
        with self._lock:
            self._seen = {}
            self._known = self._empty()
            self._publish()


def _resolves_to(resolve: Resolve, sig: CallSignature, program: Program) -> bool:
    """Whether `sig` still resolves to `program` (same states in the same roles) after a new generation."""
    try:
        return resolve(sig, False)[0] is program
    except Exception:  # the call itself will trace again and raise, naming the problem
        return False


class Dispatched:
    """Base of the transforms whose calls a `Dispatcher` runs: calling one tries the fast path inline.

    A warm eager call is the hot path of every transform, so its first try runs in the transform's own
    ``__call__``, one Python frame: the generation and trace checks, then read the known states' values, call
    the fast path's `jax.jit`, write back. That code is `statemap._state.dispatched_call` (it reads and commits
    state values, which only `_state.py` does). Anything else (a new generation of states, a trace on the
    stack, keyword arguments, a dead state, a new signature's trace raising, an `around` hook) goes to the
    dispatcher, which finishes the call.
    """

    _dispatcher: Dispatcher
    __call__ = dispatched_call


def run_program(program: Program, states: list[State], leaves: list[Any]) -> Any:
    """Run a program once through its compiled form and write back (for programs that are not cached)."""
    new_values, out = program.exe(leaves, read_values(states))
    write_back(states, dict(zip(program.writes, new_values, strict=True)))
    return out


def _floating_point_error(e: Exception, name: str) -> FloatingPointError:
    """JAX's internal NaN/inf signal as the `FloatingPointError` plain `jax.jit` raises, naming the function."""
    kind = getattr(e, "ty", "nan")
    return FloatingPointError(
        f"invalid value ({kind}) encountered in {name} (jax_debug_nans / jax_debug_infs are on; run it under "
        "jax.disable_jit() to find the operation)"
    )


def _is_eager(sig: CallSignature) -> bool:
    """True for a call outside every trace (statemap's and JAX's): its program may run op by op."""
    return not CONTEXT.stack and not any(_compat.is_tracer(x) for x in sig.leaves)


def _bug(who: str) -> MappingRuntimeError:
    return MappingRuntimeError(
        f"{who}: a fresh program does not match the states' current types; this is a bug in statemap, please "
        "report it with the function's code"
    )
