"""`scan`, `for_loop`, `checkpointed_scan`, `while_loop` and `bounded_while_loop`: `jax.lax` loops whose
bodies read and write states.

The body is traced once per signature (carry and one slice of `xs`). The states it writes join the carry;
the states it only reads enter as loop-invariant inputs. As in `jax.lax`, a weakly typed carry leaf (a
Python scalar in `init`) is promoted once to the type the body returns for it, which traces the body again.

The `jax.lax` call itself runs in a module-level runner keyed on a hashable `Plan` (traced entry and loop
options): called eagerly it goes through one `jax.jit` of that runner, so warm calls reuse one executable;
under a JAX trace it is inlined. `checkpointed_scan` is `scan` with the body under `jax.checkpoint`;
`bounded_while_loop` is `while_loop`'s traced body and condition run by nested scans of `jax.lax.cond`s.

Under `jax.disable_jit()` the loops run the Python body eagerly, one iteration at a time, as `jax.lax`'s loops
do (`_scan_eager`, `_while_eager`); the writes are committed when the loop ends, so an error keeps every state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, TypedDict, Unpack

import jax
import jax.numpy as jnp
import numpy as np

from .. import _compat
from .._errors import ArgumentError, ControlFlowError, describe_state, message, short_aval
from .._state import read_values, write_back
from .._trace import StateTrace
from ._control import (
    FlatTraced,
    Plan,
    StateUnion,
    abstract_leaves,
    call_plan,
    check_callable,
    flatten_checked,
    leaf_names,
    same_type,
    state_type_error,
    stateful,
)
from ._progress_bar import ProgressBar, make_progress_bar

__all__ = ["scan", "for_loop", "checkpointed_scan", "while_loop", "bounded_while_loop"]

_STATE_FIX = (
    "write values of the state's shape and dtype inside the loop (e.g. cast with .astype), or give the "
    "state that shape and dtype before the loop"
)


# -- helpers ------------------------------------------------------------------------------------------------
_MAX_LENGTH = 2**31 - 1  # jax.lax.scan and the loops count iterations in int32


def _scan_length(avals: Sequence[Any], names: Sequence[str], length: Any, who: str) -> int:
    if length is not None:
        if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or not 0 <= length <= _MAX_LENGTH:
            raise ArgumentError(
                message(
                    who,
                    f"length is not a non-negative int (at most {_MAX_LENGTH})",
                    "a Python int >= 0 that fits the int32 iteration counter (or None to take it from xs)",
                    f"{type(length).__name__} {length!r:.40}",
                    "pass the number of iterations as an int",
                )
            )
        length = int(length)
    source = None if length is None else f"length={length}"
    for aval, name in zip(avals, names, strict=True):
        if len(aval.shape) == 0:
            raise ControlFlowError(
                message(
                    who,
                    f"{name} is a scalar, which has no leading axis to loop over",
                    "arrays whose leading axis is the iteration axis",
                    short_aval(aval),
                    f"stack the values along a new axis 0, or pass {name} through the closure instead",
                )
            )
        if length is None:
            length, source = int(aval.shape[0]), name
        elif aval.shape[0] != length:
            raise ControlFlowError(
                message(
                    who,
                    f"{name} has leading axis size {aval.shape[0]}, but {source} sets {length} iterations",
                    f"every leaf of xs with leading axis size {length}",
                    f"{name}: {short_aval(aval)}",
                    "give every leaf of xs the same leading axis size (and length, if passed, that size)",
                )
            )
    if length is None:
        raise ControlFlowError(
            message(
                who,
                "cannot tell the number of iterations: xs has no arrays and length is None",
                "xs with at least one array, or length=",
                "no leaves in xs",
                "pass length=<number of iterations>",
            )
        )
    return int(length)


def _promote_weak(leaves: list[Any], avals: list[Any], out_avals: Sequence[Any]) -> bool:
    """As `jax.lax`: a weakly typed carry leaf takes the dtype the body returns for it; True if any did."""
    changed = False
    for i, (a, b) in enumerate(zip(avals, out_avals, strict=True)):
        if a.weak_type and tuple(a.shape) == tuple(b.shape) and a.dtype != b.dtype:
            leaves[i] = jax.lax.convert_element_type(leaves[i], jnp.result_type(leaves[i], b.dtype))
            changed = True
    return changed


def _check_carry(
    who: str,
    fun_name: str,
    names: Sequence[str],
    avals: Sequence[Any],
    out_avals: Sequence[Any],
    ft: FlatTraced,
) -> None:
    """The carry and every written state keep their shape and dtype over one iteration."""
    for name, a, b in zip(names, avals, out_avals, strict=True):
        if not same_type(a, b):
            raise ControlFlowError(
                message(
                    who,
                    f"the carry {name} changes type in one iteration",
                    f"{short_aval(a)} (its type on entry)",
                    f"{short_aval(b)} returned by {fun_name}",
                    f"make {fun_name} return the carry with its entry type (cast it with .astype, or give "
                    "the initial value that dtype)",
                )
            )
    e = ft.entry
    for j, i in enumerate(e.out_states):
        a, b = ft.state_in_avals[i], ft.state_out_avals[j]
        if not all(same_type(x, y) for x, y in zip(a, b, strict=True)):
            problem = "changes type in one iteration of the loop"
            raise state_type_error(who, e.states[i], problem, a, b, _STATE_FIX)


def _check_pair(out: Any, who: str, structure: Any = None) -> None:
    """Refuse an output of ``f`` that is not a pair ``(carry, y)`` (`structure`: its treedef, when traced)."""
    if isinstance(out, (tuple, list)) and len(out) == 2:
        return
    found = type(out).__name__ if structure is None else f"{type(out).__name__} with structure {structure}"
    raise ControlFlowError(
        message(
            who,
            "f must return a pair (carry, y)",
            "a tuple (new_carry, y)",
            found,
            "return (carry, y); use y=None when there is nothing to stack",
        )
    )


def _split_pair(ft: FlatTraced, who: str) -> tuple[list[int], Any, list[int], Any]:
    """(carry leaf positions, carry treedef, y leaf positions, y treedef) of ``f``'s ``(carry, y)``."""
    e = ft.entry
    out = jax.tree_util.tree_unflatten(e.out_treedef, list(range(e.n_out)))
    _check_pair(out, who, e.out_treedef)
    c_leaves, c_tree = jax.tree_util.tree_flatten(out[0])
    y_leaves, y_tree = jax.tree_util.tree_flatten(out[1])
    return c_leaves, c_tree, y_leaves, y_tree


@dataclasses.dataclass(frozen=True)
class _ScanOptions:
    """The loop options of one `scan` (part of its plan): `remat` puts the body under `jax.checkpoint`."""

    reverse: bool = False
    unroll: int | bool = 1
    remat: bool = False
    policy: Callable[..., bool] | None = None


def _disable_jit() -> bool:
    """True inside ``jax.disable_jit()``: loops then run their Python body eagerly, as `jax.lax`'s do."""
    return bool(jax.config.jax_disable_jit)  # type: ignore[attr-defined]


def _scan_eager(
    who: str, f: Callable[..., Any], init: Any, xs: Any, n: int, opts: _ScanOptions, bar: Any
) -> tuple[Any, Any]:
    """`jax.lax.scan` under `jax.disable_jit()`: a Python loop over the slices of `xs`, the body run as is.

    A hook-less frame holds the writes; they are committed when the loop ends (after an error, every state
    keeps its value). Returns ``(carry, ys)``; `init` is None for `for_loop` (``f(*x)``, carry unused).
    """
    star = init is _NO_CARRY
    carry, ys = init, []
    xs_leaves, xs_tree = jax.tree_util.tree_flatten(xs)
    order = range(n - 1, -1, -1) if opts.reverse else range(n)
    with StateTrace(name=who) as frame:
        for k, i in enumerate(order):
            x = jax.tree_util.tree_unflatten(xs_tree, [leaf[i] for leaf in xs_leaves])
            if star:
                y = f(*x)
            else:
                out = f(carry, x)
                _check_pair(out, who)
                carry, y = out
            ys.append(y)
            if bar is not None:
                bar.step(k)
    frame.commit()
    if opts.reverse:
        ys.reverse()
    return carry, jax.tree_util.tree_map(lambda *y: jnp.stack(y), *ys)


_NO_CARRY: Any = object()  # `for_loop`'s marker for "no carry" (`f(*x) -> y`)


def _trace_scan(
    who: str, f: Callable[..., Any], init_leaves: list[Any], init_tree: Any, x_abstract: Any, star: bool
) -> tuple[FlatTraced, list[int], list[int], Any]:
    """Trace `f` for the carry `init_leaves` (promoted in place like `jax.lax`): (traced, carry positions,
    y positions, y treedef); `f(carry, x) -> (carry, y)`, or with `star` ``f(*x) -> y``."""
    sf = stateful(f, who)

    def trace(avals: list[Any]) -> tuple[FlatTraced, list[int], list[int], Any]:
        if star:
            ft = FlatTraced(sf.trace(*x_abstract))
            return ft, [], list(range(ft.entry.n_out)), ft.entry.out_treedef
        ft = FlatTraced(sf.trace(jax.tree_util.tree_unflatten(init_tree, avals), x_abstract))
        c_pos, c_tree, y_pos, y_tree = _split_pair(ft, who)
        if c_tree != init_tree:
            raise ControlFlowError(
                message(
                    who,
                    "f returned a carry of another pytree structure than init",
                    f"structure {init_tree}",
                    f"structure {c_tree}",
                    "return the new carry in the same containers as init",
                )
            )
        return ft, c_pos, y_pos, y_tree

    avals = abstract_leaves(init_leaves)
    ft, c_pos, y_pos, y_tree = trace(avals)
    if _promote_weak(init_leaves, avals, [ft.result_avals[p] for p in c_pos]):
        avals = abstract_leaves(init_leaves)
        ft, c_pos, y_pos, y_tree = trace(avals)
    names = leaf_names(init_tree, "init")
    _check_carry(who, "f", names, avals, [ft.result_avals[p] for p in c_pos], ft)
    return ft, c_pos, y_pos, y_tree


def _run_scan(
    who: str, f: Callable[..., Any], init: Any, xs: Any, length: Any, opts: _ScanOptions, bars: tuple[Any, Any]
) -> tuple[Any, Any]:
    """Shared by `scan`, `checkpointed_scan` (``f(carry, x) -> (carry, y)``) and `for_loop` (``f(*x) -> y``,
    `init` is `_NO_CARRY`). `bars` is ``(progress_bar, pbar)``. Returns ``(carry, ys)``."""
    check_callable(f, who, "f")
    star = init is _NO_CARRY
    init_leaves, init_tree, _ = flatten_checked(None if star else init, who, "init")
    xs_leaves, xs_tree, xs_names = flatten_checked(xs, who, "xs")
    xs_avals = abstract_leaves(xs_leaves)
    n = _scan_length(xs_avals, xs_names, length, who)
    bar = make_progress_bar(bars[0], n, who, bars[1])
    if n > 0 and _disable_jit():
        return _scan_eager(who, f, init, xs, n, opts, bar)
    x_abstract = jax.tree_util.tree_unflatten(xs_tree, [_compat.struct_like(a, tuple(a.shape[1:])) for a in xs_avals])
    ft, c_pos, y_pos, y_tree = _trace_scan(who, f, init_leaves, init_tree, x_abstract, star)
    e = ft.entry
    plan = Plan((e.token, star, n, opts, bar), e.cacheable, (ft, c_pos, y_pos))
    carried = list(e.out_states)
    invariant = [i for i, w in enumerate(e.written) if not w]
    leaves = [jax.tree_util.tree_leaves(v) for v in read_values(e.states)]
    c_final, s_final, ys = call_plan(
        _scan_runner,
        _scan_jitted,
        plan,
        ft.consts,
        init_leaves,
        [leaves[i] for i in carried],
        [leaves[i] for i in invariant],
        xs_leaves,
    )
    new_values = [jax.tree_util.tree_unflatten(e.state_treedefs[i], s_final[j]) for j, i in enumerate(carried)]
    write_back(e.states, dict(zip(carried, new_values, strict=True)), who)
    carry = None if star else jax.tree_util.tree_unflatten(init_tree, c_final)
    return carry, jax.tree_util.tree_unflatten(y_tree, ys)


def _scan_runner(
    plan: Plan,
    consts: list[Any],
    init_leaves: list[Any],
    carried_leaves: list[Any],
    inv_leaves: list[Any],
    xs_leaves: list[Any],
) -> tuple[list[Any], list[Any], list[Any]]:
    ft, c_pos, y_pos = plan.data
    _, star, n, opts, bar = plan.key
    carried = ft.entry.out_states
    invariant = [i for i, w in enumerate(ft.entry.written) if not w]
    n_states = len(ft.entry.states)

    def run(args: list[Any], state_leaves: list[Any]) -> tuple[list[Any], list[Any]]:
        res, new = ft.call(consts, args, state_leaves)
        return res, new

    if opts.remat:  # prevent_cse=False: a scan body does not need it (see jax.checkpoint)
        run = jax.checkpoint(run, prevent_cse=False, policy=opts.policy)

    def body(carry: tuple[Any, ...], x: list[Any]) -> tuple[tuple[Any, ...], list[Any]]:
        c, s_carried, count = carry
        state_leaves: list[Any] = [None] * n_states
        for j, i in enumerate(carried):
            state_leaves[i] = s_carried[j]
        for j, i in enumerate(invariant):
            state_leaves[i] = inv_leaves[j]  # closed over: a loop-invariant input of jax.lax.scan
        res, new = run(list(c) + list(x), state_leaves)
        if bar is not None:
            bar.step(count)
            count = count + 1
        return ([res[p] for p in c_pos], new, count), [res[p] for p in y_pos]

    counter = None if bar is None else jnp.zeros((), jnp.int32)
    carry0 = (init_leaves, carried_leaves, counter)
    (c_final, s_final, _), ys = jax.lax.scan(
        body, carry0, xs_leaves, length=n, reverse=opts.reverse, unroll=opts.unroll
    )
    return c_final, s_final, ys


_scan_jitted = jax.jit(_scan_runner, static_argnums=(0,))


# -- public -------------------------------------------------------------------------------------------------
_Pbar = ProgressBar | int | None


class _LoopOptions(TypedDict, total=False):
    """The options `checkpointed_scan` and `for_loop` take as keywords, as `scan` does (same meaning and
    defaults: no `reverse`, `unroll` 1, no progress bar)."""

    reverse: bool
    unroll: int | bool
    progress_bar: bool | int
    pbar: _Pbar


def _loop_options(
    who: str, options: _LoopOptions, remat: bool = False, policy: Callable[..., bool] | None = None
) -> tuple[_ScanOptions, tuple[Any, Any]]:
    """`options` as `_run_scan`'s ``(opts, bars)``; an unknown keyword raises as for a plain function."""
    for key in options:
        if key not in _LoopOptions.__optional_keys__:
            raise TypeError(f"{who}() got an unexpected keyword argument {key!r}")
    opts = _ScanOptions(bool(options.get("reverse", False)), options.get("unroll", 1), remat, policy)
    return opts, (options.get("progress_bar", False), options.get("pbar"))


def scan(
    f: Callable[..., Any],
    init: Any,
    xs: Any,
    length: int | None = None,
    reverse: bool = False,
    unroll: int | bool = 1,
    progress_bar: bool | int = False,
    *,
    pbar: _Pbar = None,
) -> tuple[Any, Any]:
    """Loop `f` over the leading axis of `xs` carrying a value, like `jax.lax.scan`, with states.

    `f(carry, x)` returns ``(new_carry, y)``; `scan` returns the final carry and the `y`s stacked. `f` may
    read and write `State`s it closes over: written states are carried from one iteration to the next (and
    written back at the end), read-only states are loop-invariant inputs. A `RandomState` drawn from inside
    `f` advances every iteration, so each iteration gets new numbers. `f` runs once per signature; under
    `jax.disable_jit()` it runs eagerly once per iteration instead, as in `jax.lax.scan`.

    Args:
      f: ``f(carry, x) -> (carry, y)``.
      init: Initial carry (pytree of arrays, no states).
      xs: Pytree of arrays sliced along axis 0, or None with `length`.
      length: Number of iterations; required when `xs` has no leaves.
      reverse: Loop from the end of `xs` (outputs stay aligned with `xs`).
      unroll: As in `jax.lax.scan`.
      progress_bar: True for a tqdm bar updated about 100 times, or an int to update it every that many
        iterations (needs tqdm).
      pbar: A `ProgressBar` (or an int: its update frequency), instead of `progress_bar`.

    Returns:
      ``(final_carry, stacked_ys)``.

    Raises:
      ControlFlowError: leaves of `xs` of different lengths (naming the leaf), a carry or written state
        whose type changes in one iteration, or `f` not returning a pair.
      StateArgumentError: `init` or `xs` contains a `State`.
      ArgumentError: both `progress_bar` and `pbar` are given, or either is invalid.

    Examples:
      >>> total = sm.State(jnp.zeros(()), name="total")
      >>> def step(c, x):
      ...     total.value = total.value + x
      ...     return c * 2, total.value
      >>> sm.transform.scan(step, 1, jnp.arange(4.0))
      (Array(16, dtype=int32, weak_type=True), Array([0., 1., 3., 6.], dtype=float32))
      >>> total.value
      Array(6., dtype=float32)
    """
    return _run_scan("scan", f, init, xs, length, _ScanOptions(bool(reverse), unroll), (progress_bar, pbar))


def checkpointed_scan(
    f: Callable[..., Any],
    init: Any,
    xs: Any,
    length: int | None = None,
    *,
    policy: Callable[..., bool] | None = None,
    **options: Unpack[_LoopOptions],
) -> tuple[Any, Any]:
    """`scan` whose body is rematerialised under differentiation: `jax.checkpoint` of the body, per iteration.

    Same results and state handling as `scan`. Under `grad`, each iteration stores only its carry (and the
    states it carries) instead of every intermediate of `f`, and recomputes those in the backward pass:
    memory of one iteration's intermediates instead of all of them, for one more forward pass.

    Args:
      f / init / xs / length: As in `scan`.
      policy: A `jax.checkpoint_policies` policy choosing intermediates that may be saved anyway.
      **options: `reverse`, `unroll`, `progress_bar` and `pbar`, as in `scan`.

    Returns:
      ``(final_carry, stacked_ys)``.

    Examples:
      >>> w = sm.ParamState(jnp.array(0.5), name="w")
      >>> def loss(xs):
      ...     step = lambda h, x: (jnp.tanh(w.value * h + x), None)
      ...     return sm.transform.checkpointed_scan(step, 0.0, xs)[0]
      >>> g_remat = sm.transform.grad(loss, grad_states=w)(jnp.arange(3.0))
      >>> g_plain = sm.transform.grad(
      ...     lambda xs: sm.transform.scan(lambda h, x: (jnp.tanh(w.value * h + x), None), 0.0, xs)[0],
      ...     grad_states=w)(jnp.arange(3.0))
      >>> bool(jnp.allclose(g_remat, g_plain))
      True
    """
    opts, bars = _loop_options("checkpointed_scan", options, remat=True, policy=policy)
    return _run_scan("checkpointed_scan", f, init, xs, length, opts, bars)


def for_loop(f: Callable[..., Any], *xs: Any, length: int | None = None, **options: Unpack[_LoopOptions]) -> Any:
    """Call `f(*x_i)` for each slice ``x_i`` of `xs` along axis 0, in order, and stack the outputs.

    A `scan` without a carry: states written by `f` accumulate from one iteration to the next.

    Args:
      f: Function of one slice of each of `xs`.
      *xs: Pytrees of arrays with the same leading axis size.
      length: As in `scan`.
      **options: `reverse`, `unroll`, `progress_bar` and `pbar`, as in `scan`.

    Returns:
      The outputs of `f`, stacked along a new axis 0.

    Examples:
      >>> acc = sm.State(jnp.zeros(2), name="acc")
      >>> def step(x, w):
      ...     acc.value = acc.value + w * x
      ...     return acc.value.sum()
      >>> sm.transform.for_loop(step, jnp.ones((3, 2)), jnp.arange(3.0))
      Array([0., 2., 6.], dtype=float32)
    """
    opts, bars = _loop_options("for_loop", options)
    return _run_scan("for_loop", f, _NO_CARRY, xs, length, opts, bars)[1]


def _check_cond(cnd: FlatTraced, who: str) -> None:
    """`cond_fun` only reads states and returns a boolean scalar."""
    for i in cnd.entry.out_states:
        raise ControlFlowError(
            message(
                who,
                f"cond_fun writes {describe_state(cnd.entry.states[i])}",
                "a cond_fun that only reads states",
                "a write in cond_fun",
                "move the write (random draws too) into body_fun",
            )
        )
    out = cnd.result_avals
    if len(out) != 1 or out[0].shape != () or out[0].dtype != jnp.bool_:
        raise ControlFlowError(
            message(
                who,
                "cond_fun must return a boolean scalar",
                "bool[]",
                ", ".join(short_aval(a) for a in out) or "no output",
                "return a scalar comparison, e.g. `x < 10` or `jnp.all(...)`",
            )
        )


def _while_eager(
    who: str, cond_fun: Callable[..., Any], body_fun: Callable[..., Any], init_val: Any, bound: Any
) -> Any:
    """`jax.lax.while_loop` under `jax.disable_jit()`: a Python loop (at most ``bound[0]`` steps if given).

    Returns `_NOT_EAGER` when Python cannot read the condition (a traced value, e.g. under `vmap2`): the
    loop then runs traced. Writes are committed when the loop ends (after an error, every state is kept).
    """
    val = jax.tree_util.tree_map(jnp.asarray, init_val)
    steps = 0
    with StateTrace(name=who) as frame:
        try:
            while (bound is None or steps < bound[0]) and bool(cond_fun(val)):
                val = jax.tree_util.tree_map(jnp.asarray, body_fun(val))
                steps += 1
        except jax.errors.ConcretizationTypeError:
            return _NOT_EAGER
    frame.commit()
    return val


_NOT_EAGER: Any = object()


def _trace_while(
    who: str, cond_fun: Callable[..., Any], body_fun: Callable[..., Any], leaves: list[Any], tree: Any
) -> tuple[FlatTraced, FlatTraced]:
    """Trace `body_fun` (promoting `leaves` in place like `jax.lax`) and `cond_fun`; check carry and condition."""
    body_sf, cond_sf = stateful(body_fun, who), stateful(cond_fun, who)

    def trace_body(avals: list[Any]) -> FlatTraced:
        ft = FlatTraced(body_sf.trace(jax.tree_util.tree_unflatten(tree, avals)))
        if ft.entry.out_treedef != tree:
            raise ControlFlowError(
                message(
                    who,
                    "body_fun returned another pytree structure than init_val",
                    f"structure {tree}",
                    f"structure {ft.entry.out_treedef}",
                    "return the new value in the same containers as init_val",
                )
            )
        return ft

    avals = abstract_leaves(leaves)
    body = trace_body(avals)
    if _promote_weak(leaves, avals, body.result_avals):
        avals = abstract_leaves(leaves)
        body = trace_body(avals)
    _check_carry(who, "body_fun", leaf_names(tree, "init_val"), avals, body.result_avals, body)
    cnd = FlatTraced(cond_sf.trace(jax.tree_util.tree_unflatten(tree, avals)))
    _check_cond(cnd, who)
    return body, cnd


def _run_while(who: str, cond_fun: Callable[..., Any], body_fun: Callable[..., Any], init_val: Any, bound: Any) -> Any:
    """Shared by `while_loop` (`bound` None) and `bounded_while_loop` (``bound=(max_steps, base)``)."""
    check_callable(cond_fun, who, "cond_fun")
    check_callable(body_fun, who, "body_fun")
    leaves, tree, _ = flatten_checked(init_val, who, "init_val")
    if _disable_jit():
        out = _while_eager(who, cond_fun, body_fun, init_val, bound)
        if out is not _NOT_EAGER:
            return out
    body, cnd = _trace_while(who, cond_fun, body_fun, leaves, tree)
    union = StateUnion([body, cnd])
    carried = union.written
    invariant = [p for p in range(len(union.states)) if p not in set(carried)]
    state_leaves = union.values_to_leaves(read_values(union.states))
    cacheable = body.entry.cacheable and cnd.entry.cacheable
    plan = Plan((body.entry.token, cnd.entry.token, bound), cacheable, (body, cnd, union, invariant))
    runner, jitted = (_while_runner, _while_jitted) if bound is None else (_bounded_runner, _bounded_jitted)
    c_final, s_final = call_plan(
        runner,
        jitted,
        plan,
        (body.consts, cnd.consts),
        leaves,
        [state_leaves[p] for p in carried],
        [state_leaves[p] for p in invariant],
    )
    write_back(union.states, dict(zip(carried, union.leaves_to_values(carried, s_final), strict=True)), who)
    return jax.tree_util.tree_unflatten(tree, c_final)


def while_loop(cond_fun: Callable[..., Any], body_fun: Callable[..., Any], init_val: Any) -> Any:
    """Run ``val = body_fun(val)`` while ``cond_fun(val)``, like `jax.lax.while_loop`, with states.

    `body_fun` may read and write states (written ones are carried); `cond_fun` may read states, including
    those `body_fun` writes, but must not write any. Under `jax.disable_jit()` the loop runs in Python, as
    `jax.lax.while_loop` does.

    Args:
      cond_fun: ``cond_fun(val) -> scalar bool``.
      body_fun: ``body_fun(val) -> val`` (same structure and types).
      init_val: Initial value (pytree of arrays, no states).

    Returns:
      The final value.

    Raises:
      ControlFlowError: `cond_fun` writes a state or does not return a scalar boolean, or the carry or a
        written state changes type in one iteration.

    Examples:
      >>> n = sm.State(jnp.array(0), name="n")
      >>> def body(x):
      ...     n.value = n.value + 1
      ...     return x * 2.0
      >>> sm.transform.while_loop(lambda x: x < 100.0, body, 3.0), n.value
      (Array(192., dtype=float32, weak_type=True), Array(6, dtype=int32, weak_type=True))
    """
    return _run_while("while_loop", cond_fun, body_fun, init_val, None)


def bounded_while_loop(
    cond_fun: Callable[..., Any], body_fun: Callable[..., Any], init_val: Any, *, max_steps: int, base: int = 16
) -> Any:
    """`while_loop` stopping after at most `max_steps` iterations, and differentiable in reverse mode.

    Runs ``val = body_fun(val)`` while ``cond_fun(val)``, but never more than `max_steps` times. It is built
    of `jax.lax.scan`s of `jax.lax.cond` (no `jax.lax.while_loop`), so `grad` can differentiate it. The
    `max_steps` iterations are grouped in nested scans of `base` iterations; each group is rematerialised
    (`jax.checkpoint`) and skipped once the loop is done, so memory under `grad` grows like
    ``base * log_base(max_steps)`` iterations and the run time after the loop ends stays small. States are
    handled as in `while_loop`: only the iterations that run write them.

    Args:
      cond_fun: ``cond_fun(val) -> scalar bool``; may read states, must not write any.
      body_fun: ``body_fun(val) -> val`` (same structure and types).
      init_val: Initial value (pytree of arrays, no states).
      max_steps: The most iterations to run (an int >= 0).
      base: Iterations per nested scan (an int >= 2): larger compiles faster, smaller saves memory.

    Returns:
      The final value, as `while_loop` would give when it stops within `max_steps` iterations.

    Raises:
      ArgumentError: `max_steps` or `base` is not a valid int.
      ControlFlowError: as `while_loop`.

    Examples:
      >>> n = sm.State(jnp.array(0), name="n")
      >>> def body(x):
      ...     n.value = n.value + 1
      ...     return x * 2.0
      >>> sm.transform.bounded_while_loop(lambda x: x < 100.0, body, 3.0, max_steps=4), n.value
      (Array(48., dtype=float32, weak_type=True), Array(4, dtype=int32, weak_type=True))
      >>> sm.transform.grad(lambda x: sm.transform.bounded_while_loop(lambda v: v < 10.0, lambda v: v * x, 1.0,
      ...                                                          max_steps=100))(3.0)
      Array(27., dtype=float32, weak_type=True)
    """
    who = "bounded_while_loop"
    for what, x, low in (("max_steps", max_steps, 0), ("base", base, 2)):
        if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or not low <= x <= _MAX_LENGTH:
            raise ArgumentError(
                message(
                    who,
                    f"{what} is not an int >= {low} (at most {_MAX_LENGTH})",
                    f"a Python int >= {low} that fits the int32 iteration counter",
                    f"{type(x).__name__} {x!r:.40}",
                    f"pass e.g. {what}={max(low, 16)}",
                )
            )
    return _run_while(who, cond_fun, body_fun, init_val, (int(max_steps), int(base)))


def _while_pures(
    plan: Plan, consts: tuple[list[Any], list[Any]], inv_leaves: list[Any]
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """(cond, body) of a while plan as pure functions of the carry ``(value leaves, carried state leaves)``."""
    body, cnd, union, invariant = plan.data
    body_consts, cnd_consts = consts
    carried = union.written
    to_carry = [union.writes[0][p] for p in carried]

    def by_position(s_carried: list[Any]) -> list[Any]:
        out: list[Any] = [None] * len(union.states)
        for j, p in enumerate(carried):
            out[p] = s_carried[j]
        for j, p in enumerate(invariant):
            out[p] = inv_leaves[j]  # closed over: a loop-invariant input of the loop
        return out

    def cond_pure(carry: tuple[Any, ...]) -> Any:
        c, s_carried = carry
        res, _ = cnd.call(cnd_consts, c, union.gather(1, by_position(s_carried)))
        return res[0]

    def body_pure(carry: tuple[Any, ...]) -> tuple[Any, ...]:
        c, s_carried = carry
        res, new = body.call(body_consts, c, union.gather(0, by_position(s_carried)))
        return res, [new[j] for j in to_carry]

    return cond_pure, body_pure


def _while_runner(
    plan: Plan, consts: tuple[list[Any], list[Any]], leaves: list[Any], carried_leaves: list[Any], inv_leaves: list[Any]
) -> tuple[Any, ...]:
    cond_pure, body_pure = _while_pures(plan, consts, inv_leaves)
    return jax.lax.while_loop(cond_pure, body_pure, (leaves, carried_leaves))


_while_jitted = jax.jit(_while_runner, static_argnums=(0,))


def _bounded_runner(
    plan: Plan, consts: tuple[list[Any], list[Any]], leaves: list[Any], carried_leaves: list[Any], inv_leaves: list[Any]
) -> Any:
    """At most `max_steps` iterations as nested scans: ``base**k`` iterations per group at level k.

    The carry is ``(value, alive, step)``; `alive` turns False at the first false condition, after which
    every iteration (and every whole group, through a `jax.lax.cond`) passes the carry through unchanged.
    """
    cond_pure, body_pure = _while_pures(plan, consts, inv_leaves)
    max_steps, base = plan.key[-1]

    def running(carry: tuple[Any, ...]) -> Any:
        _, alive, i = carry
        return alive & (i < max_steps)

    def step(carry: tuple[Any, ...]) -> tuple[Any, ...]:
        val, _, i = carry
        go = running(carry) & cond_pure(val)
        return jax.lax.cond(go, body_pure, lambda v: v, val), go, i + 1

    def group(span: int) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
        """Runs `span` iterations (a power of `base`), skipped as a whole when the loop is done."""
        if span == 1:
            return step
        inner = jax.checkpoint(group(span // base), prevent_cse=False)

        def run(carry: tuple[Any, ...]) -> tuple[Any, ...]:
            one = lambda c, _: (jax.lax.cond(running(c), inner, lambda c: c, c), None)  # noqa: E731
            return jax.lax.scan(one, carry, None, length=base)[0]

        return run

    span = 1
    while span * base < max_steps:
        span *= base
    inner = group(span)
    carry0 = ((leaves, carried_leaves), jnp.ones((), jnp.bool_), jnp.zeros((), jnp.int32))
    top = -(-max_steps // span)  # ceil: groups of `span` iterations covering max_steps
    (out, _, _), _ = jax.lax.scan(lambda c, _: (inner(c), None), carry0, None, length=top)
    return out


_bounded_jitted = jax.jit(_bounded_runner, static_argnums=(0,))
