"""The benchmark models, each written twice: with statemap states and as pure JAX with explicit state.

The pure versions keep their state in Python attributes and write the new values back after every call, which
is what a user without statemap writes by hand. Both versions of a model draw the same random numbers:
statemap's mapping splits a `RandomState` key ``K`` into ``jax.random.split(K, 2B + 1)``; the state keeps key 0,
lane ``i`` draws its first numbers directly with key ``1 + i`` when it draws in the lane itself, and otherwise
starts from key ``B + 1 + i`` (inside a `grad` or a loop in the lane, each draw splits that key into
``(new, sub)`` and samples with ``sub``). The pure versions do exactly that, so trajectories can be compared.
"""

from __future__ import annotations

import dataclasses
import importlib
import weakref
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "many_states",
    "small_pair",
    "EnsembleSizes",
    "LifSizes",
    "PureEnsemble",
    "PureLif",
    "StatemapEnsemble",
    "StatemapLif",
    "cold_mlp_pure",
    "cold_small",
    "per_lane_draw_hlo",
    "COLD_SMALL_KINDS",
    "cold_mlp_statemap",
    "for_loop_missing",
]


def _lib(lib: Any) -> Any:
    """The stateful library to build with: statemap by default; brainstate for the optional peer column (the
    workloads use only names the two share)."""
    return importlib.import_module("statemap") if lib is None else lib


# -- one batched state read and written (cases 1 and 2) ------------------------------------------------------
def small_pair(batch: int, width: int, jit_outer: bool, lib: Any = None) -> dict[str, Callable[[], Any]]:
    """``{"lib": ..., "pure": ...}`` zero-argument calls: ``vmap2(f)`` (in ``jit`` if `jit_outer`) and
    ``jax.jit(jax.vmap(pure))`` with the state passed and written back by hand."""
    sm = _lib(lib)
    s = sm.ShortTermState(jnp.zeros((batch, width)), name="s")
    x = jnp.ones((batch, width))

    def f(x: jax.Array) -> jax.Array:
        s.value = s.value * 0.5 + x
        return jnp.sum(s.value)

    fn = sm.transform.vmap2(f, state_in_axes={0: s}, state_out_axes={0: s})
    if jit_outer:
        fn = sm.transform.jit(fn)

    def pure(sv: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        new = sv * 0.5 + x
        return jnp.sum(new), new

    pure_fn = jax.jit(jax.vmap(pure))
    box = {"s": jnp.zeros((batch, width))}

    def pure_call() -> jax.Array:
        out, box["s"] = pure_fn(box["s"], x)
        return out

    return {"lib": lambda: fn(x), "pure": pure_call, "floor": _floor_wrapper(pure_fn, jnp.zeros((batch, width)), x)}


class _Box:
    def __init__(self, value: jax.Array) -> None:
        self.value = value


class _Wrapper:
    """The least Python any stateful wrapper does per call: an object's ``__call__`` reading the value of a
    weakly held state, calling a compiled function, writing the new value back."""

    def __init__(self, compiled: Callable[..., Any], box: _Box) -> None:
        self.compiled = compiled
        self.ref = weakref.ref(box)

    def __call__(self, *args: Any) -> Any:
        box = self.ref()
        assert box is not None
        out, box.value = self.compiled(box.value, *args)
        return out


def _floor_wrapper(compiled: Callable[..., Any], value: jax.Array, x: jax.Array) -> Callable[[], Any]:
    box = _Box(value)
    wrapper = _Wrapper(compiled, box)
    return lambda: (box, wrapper(x))[1]  # the lambda keeps the box alive, as a model keeps its states


# -- many states read and written (case 3) -------------------------------------------------------------------
def many_states(count: int, mode: str, batch: int, width: int, lib: Any = None) -> dict[str, Callable[[], Any]]:
    """`count` states each updated by ``s + x``: under ``jit`` (mode ``"jit"``, states ``(width,)``) or eager
    ``vmap2`` (mode ``"vmap2"``, states ``(batch, width)``), against the same pure function under
    ``jax.jit``."""
    sm = _lib(lib)
    shape = (batch, width) if mode == "vmap2" else (width,)
    states = [sm.ShortTermState(jnp.zeros(shape), name=f"s{i}") for i in range(count)]
    x = jnp.ones(shape)

    def f(x: jax.Array) -> jax.Array:
        for s in states:
            s.value = s.value + x
        return x.sum()

    def pure(vals: list, x: jax.Array) -> tuple[jax.Array, list]:
        return x.sum(), [v + x for v in vals]

    if mode == "vmap2":
        fn = sm.transform.vmap2(f, state_in_axes={0: states}, state_out_axes={0: states})
        pure_fn = jax.jit(jax.vmap(pure))
    else:
        fn = sm.transform.jit(f)
        pure_fn = jax.jit(pure)
    box = {"v": [jnp.zeros(shape) for _ in range(count)]}

    def pure_call() -> jax.Array:
        out, box["v"] = pure_fn(box["v"], x)
        return out

    return {"lib": lambda: fn(x), "pure": pure_call}


# -- ensemble of two-layer MLPs, per-member dropout, one SGD step per call -----------------------------------
@dataclasses.dataclass(frozen=True)
class EnsembleSizes:
    members: int = 64
    inputs: int = 32
    hidden: int = 64
    outputs: int = 1
    batch: int = 128
    p_keep: float = 0.8
    lr: float = 0.05
    seed: int = 0


def _ensemble_init(z: EnsembleSizes) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    r = np.random.default_rng(z.seed)
    e, d, h, o = z.members, z.inputs, z.hidden, z.outputs
    params = [
        (r.standard_normal((e, d, h)) / np.sqrt(d)).astype(np.float32),
        np.zeros((e, h), np.float32),
        (r.standard_normal((e, h, o)) / np.sqrt(h)).astype(np.float32),
        np.zeros((e, o), np.float32),
    ]
    x = r.standard_normal((z.batch, d)).astype(np.float32)
    y = np.sin(x[:, :o] * 2.0).astype(np.float32)
    return params, x, y


class StatemapEnsemble:
    """64 MLPs as `ParamState`s with a leading member axis; ``step(x, y)`` returns the per-member losses."""

    def __init__(self, z: EnsembleSizes, lib: Any = None) -> None:
        sm = _lib(lib)
        params, self.x, self.y = _ensemble_init(z)
        self.x, self.y = jnp.asarray(self.x), jnp.asarray(self.y)
        names = ["w1", "b1", "w2", "b2"]
        self.params = [sm.ParamState(jnp.asarray(p), name=n) for p, n in zip(params, names, strict=True)]
        self.rng = sm.random.RandomState(z.seed)
        w1, b1, w2, b2 = self.params
        rng, p_keep, lr = self.rng, z.p_keep, z.lr

        def loss(x: jax.Array, y: jax.Array) -> jax.Array:
            h = jnp.tanh(x @ w1.value + b1.value)
            keep = rng.bernoulli(p_keep, size=h.shape)
            h = jnp.where(keep, h / p_keep, 0.0)
            return jnp.mean((h @ w2.value + b2.value - y) ** 2)

        grad = sm.transform.grad(loss, grad_states=self.params, return_value=True)

        def sgd_step(x: jax.Array, y: jax.Array) -> jax.Array:
            grads, value = grad(x, y)
            for p, g in zip(self.params, grads, strict=True):
                p.value = p.value - lr * g
            return value

        self.step = sm.transform.jit(
            sm.transform.vmap2(
                sgd_step, in_axes=None, state_in_axes={0: sm.ParamState}, state_out_axes={0: sm.ParamState}
            )
        )

    def __call__(self) -> jax.Array:
        return self.step(self.x, self.y)


class PureEnsemble:
    """The same ensemble in pure JAX: parameters and key passed in and written back by hand."""

    def __init__(self, z: EnsembleSizes) -> None:
        params, x, y = _ensemble_init(z)
        self.x, self.y = jnp.asarray(x), jnp.asarray(y)
        self.params = tuple(jnp.asarray(p) for p in params)
        self.key = jax.random.key(z.seed)
        p_keep, lr, members = z.p_keep, z.lr, z.members

        def member_step(params: tuple, key: jax.Array, x: jax.Array, y: jax.Array) -> tuple[tuple, jax.Array]:
            def loss(p: tuple) -> jax.Array:
                w1, b1, w2, b2 = p
                _, sub = jax.random.split(key)
                h = jnp.tanh(x @ w1 + b1)
                keep = jax.random.bernoulli(sub, p_keep, h.shape)
                h = jnp.where(keep, h / p_keep, 0.0)
                return jnp.mean((h @ w2 + b2 - y) ** 2)

            value, grads = jax.value_and_grad(loss)(params)
            return tuple(p - lr * g for p, g in zip(params, grads, strict=True)), value

        def train(params: tuple, key: jax.Array, x: jax.Array, y: jax.Array) -> tuple[tuple, jax.Array, jax.Array]:
            keys = jax.random.split(key, 2 * members + 1)
            new, value = jax.vmap(member_step, in_axes=(0, 0, None, None))(params, keys[members + 1 :], x, y)
            return new, keys[0], value

        self.train = jax.jit(train)

    def __call__(self) -> jax.Array:
        self.params, self.key, value = self.train(self.params, self.key, self.x, self.y)
        return value


# -- leaky integrate-and-fire population, vmapped over trials ------------------------------------------------
@dataclasses.dataclass(frozen=True)
class LifSizes:
    trials: int = 32
    neurons: int = 4000
    steps: int = 1000
    seed: int = 0


_DT_TAU, _V_REST, _V_TH, _V_RESET, _SIGMA = 0.1, 0.0, 1.0, 0.0, 0.3


def _lif_drive(z: LifSizes) -> np.ndarray:
    return np.linspace(0.5, 1.5, z.neurons, dtype=np.float32)  # below/above threshold: a spread of rates


def for_loop_missing(lib: Any = None) -> str | None:
    """Why the LIF workload cannot run on statemap yet (None when `sm.transform.for_loop` exists)."""
    if hasattr(_lib(lib).transform, "for_loop"):
        return None
    return "statemap.transform.for_loop is not available yet (control flow, issue 3)"


class StatemapLif:
    """Membrane potential as a `HiddenState` per trial; one call runs every trial for `steps` steps."""

    def __init__(self, z: LifSizes, lib: Any = None) -> None:
        sm = _lib(lib)
        n, steps = z.neurons, z.steps
        self.V = sm.HiddenState(jnp.full((z.trials, n), _V_REST, jnp.float32), name="V")
        drive = sm.ParamState(jnp.asarray(_lif_drive(z)), name="drive")
        rng = sm.random.RandomState(z.seed)
        self.rng = rng
        V = self.V

        def step(i: jax.Array) -> jax.Array:
            v = V.value
            noise = rng.normal(size=(n,))
            v = v + _DT_TAU * (_V_REST - v + drive.value) + _SIGMA * noise
            spike = v >= _V_TH
            V.value = jnp.where(spike, _V_RESET, v)
            return jnp.mean(spike.astype(jnp.float32))

        def trial() -> jax.Array:
            return sm.transform.for_loop(step, jnp.arange(steps))

        self.run = sm.transform.jit(sm.transform.vmap2(trial, state_in_axes={0: V}, state_out_axes={0: V}))

    def __call__(self) -> jax.Array:
        return self.run()


class PureLif:
    """The same population with `jax.lax.scan` inside `jax.vmap`; V and the key are written back by hand."""

    def __init__(self, z: LifSizes) -> None:
        n, steps, trials = z.neurons, z.steps, z.trials
        self.V = jnp.full((trials, n), _V_REST, jnp.float32)
        self.key = jax.random.key(z.seed)
        self.drive = jnp.asarray(_lif_drive(z))  # an argument, like statemap's ParamState (not a constant)

        def trial(v0: jax.Array, key: jax.Array, drive: jax.Array) -> tuple[jax.Array, jax.Array]:
            def body(carry: tuple, i: jax.Array) -> tuple[tuple, jax.Array]:
                v, k = carry
                k, sub = jax.random.split(k)
                noise = jax.random.normal(sub, (n,))
                v = v + _DT_TAU * (_V_REST - v + drive) + _SIGMA * noise
                spike = v >= _V_TH
                return (jnp.where(spike, _V_RESET, v), k), jnp.mean(spike.astype(jnp.float32))

            (v, _), rates = jax.lax.scan(body, (v0, key), jnp.arange(steps))
            return rates, v

        def run(V: jax.Array, key: jax.Array, drive: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
            keys = jax.random.split(key, 2 * trials + 1)
            rates, v = jax.vmap(trial, in_axes=(0, 0, None))(V, keys[trials + 1 :], drive)
            return rates, v, keys[0]

        self.run = jax.jit(run)

    def __call__(self) -> jax.Array:
        rates, self.V, self.key = self.run(self.V, self.key, self.drive)
        return rates


# -- cold call of a 16-layer MLP ensemble (3 states per layer + a counter) -----------------------------------
def _mlp_init(layers: int, width: int, members: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    r = np.random.default_rng(seed)
    weights = [(r.standard_normal((members, width, width)) / np.sqrt(width)).astype(np.float32) for _ in range(layers)]
    x = r.standard_normal((members, width)).astype(np.float32)
    return weights, x


def cold_mlp_statemap(layers: int, width: int, members: int, seed: int = 0, lib: Any = None) -> Callable[[], Any]:
    """Fresh states and a fresh `vmap2` wrapper; returns the (untimed-so-far) first call."""
    sm = _lib(lib)
    weights, x_np = _mlp_init(layers, width, members, seed)
    ws = [sm.ParamState(jnp.asarray(w), name=f"w{i}") for i, w in enumerate(weights)]
    bs = [sm.ParamState(jnp.zeros((members, width)), name=f"b{i}") for i in range(layers)]
    acts = [sm.ShortTermState(jnp.zeros((members, width)), name=f"act{i}") for i in range(layers)]
    count = sm.ShortTermState(jnp.zeros((), jnp.int32), name="count")
    per_member = ws + bs + acts

    def forward(x: jax.Array) -> jax.Array:
        h = x
        for w, b, a in zip(ws, bs, acts, strict=True):
            h = jnp.tanh(h @ w.value + b.value)
            a.value = h
        count.value = count.value + 1
        return jnp.sum(h)

    fn = sm.transform.vmap2(forward, state_in_axes={0: per_member}, state_out_axes={0: per_member})
    x = jnp.asarray(x_np)
    return lambda: fn(x)


def cold_mlp_pure(layers: int, width: int, members: int, seed: int = 0) -> Callable[[], Any]:
    """A fresh function object under `jax.jit(jax.vmap(...))`, so JAX's caches cannot hit."""
    weights, x_np = _mlp_init(layers, width, members, seed)
    ws = [jnp.asarray(w) for w in weights]
    bs = [jnp.zeros((members, width)) for _ in range(layers)]
    count = jnp.zeros((), jnp.int32)
    x = jnp.asarray(x_np)

    def forward(ws: list, bs: list, count: jax.Array, x: jax.Array) -> tuple:
        h = x
        new_acts = []
        for w, b in zip(ws, bs, strict=True):
            h = jnp.tanh(h @ w + b)
            new_acts.append(h)
        return jnp.sum(h), new_acts, count + 1

    def call() -> Any:
        fn = jax.jit(jax.vmap(forward, in_axes=(0, 0, None, 0), out_axes=(0, 0, None)))
        out, new_acts, new_count = fn(ws, bs, count, x)
        return out, new_acts, new_count

    return call


# -- first calls of small mappings (case 9) ------------------------------------------------------------------
COLD_SMALL_KINDS = ("stateless", "state", "random")


def cold_small(kind: str, contender: str, batch: int = 8, width: int = 16) -> Callable[[], Any]:
    """A first call of a fresh mapping of a small function; `kind` in `COLD_SMALL_KINDS`.

    `contender` is ``"statemap"`` (eager `vmap2`), ``"vmap"`` (eager `jax.vmap`) or ``"jit_vmap"``
    (`jax.jit(jax.vmap)`), each on the same computation with fresh function objects (no cache can hit).
    """
    x = jnp.asarray(np.linspace(0.0, 1.0, batch * width, dtype=np.float32).reshape(batch, width))
    if contender == "statemap":
        return _cold_small_statemap(kind, x)
    mapper = jax.vmap if contender == "vmap" else (lambda f, **kw: jax.jit(jax.vmap(f, **kw)))
    if kind == "stateless":
        f0 = mapper(lambda x: jnp.sin(x) * 2 + x)
        return lambda: f0(x)
    h = jnp.zeros((batch, width))
    if kind == "state":
        f1 = mapper(lambda h, x: h + jnp.sin(x) * 2 + x)
        return lambda: f1(h, x)
    key = jax.random.key(0)

    def lane(h: jax.Array, k: jax.Array, x: jax.Array) -> jax.Array:
        return h + jax.random.normal(k, x.shape) + x

    f2 = mapper(lane)

    def call() -> Any:
        keys = jax.random.split(key, batch + 1)
        return f2(h, keys[1:], x), keys[0]

    return call


def _cold_small_statemap(kind: str, x: jax.Array) -> Callable[[], Any]:
    import statemap as sm

    if kind == "stateless":
        f0 = sm.transform.vmap2(lambda x: jnp.sin(x) * 2 + x)
        return lambda: f0(x)
    h = sm.ShortTermState(jnp.zeros(x.shape), name="h")
    rng = sm.random.RandomState(0)

    def step(x: jax.Array) -> jax.Array:
        noise = rng.normal(size=x.shape) if kind == "random" else jnp.sin(x) * 2
        h.value = h.value + noise + x
        return h.value

    f = sm.transform.vmap2(step, state_in_axes={0: h}, state_out_axes={0: h})
    return lambda: f(x)


def per_lane_draw_hlo(batch: int, width: int) -> tuple[int, int]:
    """(statemap, hand-written) optimised HLO instruction counts of one per-lane draw plus a state."""
    import statemap as sm

    x = jnp.ones((batch, width))
    h = sm.ShortTermState(jnp.zeros((batch, width)), name="h")
    rng = sm.random.RandomState(0)

    def step(x: jax.Array) -> jax.Array:
        h.value = h.value + rng.normal(size=x.shape) + x
        return h.value

    mapped = sm.transform.vmap2(step, state_in_axes={0: h}, state_out_axes={0: h})

    def pure(h: jax.Array, key: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        keys = jax.random.split(key, batch + 1)
        return jax.vmap(lambda h, k, x: h + jax.random.normal(k, x.shape) + x)(h, keys[1:], x), keys[0]

    return _hlo_size(mapped.lower(x)), _hlo_size(jax.jit(pure).lower(h.value, rng.value, x))


def _hlo_size(lowered: Any) -> int:
    import re

    text = lowered.compile().as_text()
    return sum(1 for line in text.splitlines() if re.match(r"^\s*(ROOT )?[%\w.\-]+ = ", line))
