"""Tests for statemap/checkpoint.py (and its orbax side, statemap/_orbax_io.py): state dicts, save and restore.

Most tests run for both formats: an orbax checkpoint directory (`ckpt`, the default) and an ``.npz`` file. The
8-device sharding checks run in their own process (tests/_checkpoint_devices_script.py), as do the two
`jax.distributed` processes on loopback (tests/_checkpoint_multiprocess_worker.py).
"""

import json
import os
import re
import sys
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _device_checks import device_tests
from _launch import launch
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import statemap as sm
from statemap.util.filter import OfType

try:
    import orbax.checkpoint as ocp
except ImportError:  # without the extra statemap[checkpoint], only the .npz format is tested
    ocp = None
needs_orbax = pytest.mark.skipif(ocp is None, reason="needs orbax-checkpoint: pip install 'statemap[checkpoint]'")
FORMATS = ["ckpt", "ckpt.npz"] if ocp is not None else ["ckpt.npz"]  # a directory (orbax) and a file (NumPy)


@pytest.fixture(params=[pytest.param("ckpt", id="orbax", marks=needs_orbax), pytest.param("ckpt.npz", id="npz")])
def path(request, tmp_path):
    return tmp_path / request.param


class Model(sm.nn.Module):
    def __init__(self, n=3):
        self.layers = [sm.ParamState(jnp.ones((n, 2))), sm.ParamState(jnp.zeros(2, jnp.bfloat16))]
        self.opt = sm.LongTermState({"mu": jnp.zeros(n), "count": jnp.array(0, jnp.int32)})
        self.rng = sm.random.RandomState(7)
        self.h = sm.HiddenState(jnp.zeros(n))

    def __call__(self, x):
        return x @ self.layers[0].value


def _randomise(m):
    m.layers[0].value = jnp.arange(6.0).reshape(3, 2)
    m.layers[1].value = jnp.array([1.5, -2.0], jnp.bfloat16)
    m.opt.value = {"mu": jnp.array([1.0, 2.0, 3.0]), "count": jnp.array(4, jnp.int32)}
    m.rng.seed(123)
    m.h.value = jnp.full(3, 9.0)


def _assert_same(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            assert jax.random.key_impl(x) == jax.random.key_impl(y)
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x, np.float32), np.asarray(y, np.float32))


def _values(states):
    return [s.value for s in states]


# -- round trips -------------------------------------------------------------------------------------------------
def test_round_trip_restores_values_in_place_with_dtypes_and_keys(path):
    src, dst = Model(), Model()
    _randomise(src)
    sm.checkpoint.save(path, src)
    states = dst.states()
    f = sm.transform.jit(dst.__call__)
    f(jnp.ones((1, 3)))
    sm.checkpoint.restore(path, dst)
    assert all(s is states[p] for p, s in dst.states().items())  # the same State objects
    _assert_same(src.state_dict(), dst.state_dict())
    assert dst.layers[1].value.dtype == jnp.bfloat16 and dst.rng.value.dtype == src.rng.value.dtype
    assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(dst.state_dict()))
    np.testing.assert_array_equal(f(jnp.ones((1, 3))), jnp.ones((1, 3)) @ src.layers[0].value)
    assert float(dst.rng.uniform()) == float(src.rng.uniform())  # the generator continues identically


@pytest.mark.parametrize(
    "value",
    [
        jnp.array([1.5, -2.25, 3e38], jnp.bfloat16),
        jnp.array([0.5, -1.0], jnp.float16),
        jnp.array([-128, 127], jnp.int8),
        jnp.array([0, 2**32 - 1], jnp.uint32),
        jnp.array([True, False]),
        jnp.array([1 + 2j], jnp.complex64),
        jnp.array(3.0),
    ],
    ids=lambda v: str(v.dtype),
)
def test_dtypes_round_trip(path, value):
    s = sm.State(value)
    sm.checkpoint.save(path, [s])
    s2 = sm.State(jnp.zeros_like(value))
    sm.checkpoint.restore(path, [s2])
    assert s2.value.dtype == value.dtype
    np.testing.assert_array_equal(np.asarray(s2.value), np.asarray(value))


def test_prng_keys_of_every_shape_and_implementation_round_trip(path):
    keys = {
        "one": sm.State(jax.random.key(1)),
        "batch": sm.State(jax.random.split(jax.random.key(2), 4)),
        "rbg": sm.State(jax.random.key(3, impl="rbg")),
        "gen": sm.random.RandomState(4),
    }
    sm.checkpoint.save(path, keys)
    fresh = {
        "one": sm.State(jax.random.key(0)),
        "batch": sm.State(jax.random.split(jax.random.key(0), 4)),
        "rbg": sm.State(jax.random.key(0, impl="rbg")),
        "gen": sm.random.RandomState(0),
    }
    sm.checkpoint.restore(path, fresh)
    _assert_same([s.value for s in keys.values()], [s.value for s in fresh.values()])
    np.testing.assert_array_equal(jax.random.uniform(fresh["rbg"].value), jax.random.uniform(keys["rbg"].value))
    wrong = {**fresh, "rbg": sm.State(jax.random.key(0))}  # threefry where the checkpoint has rbg
    with pytest.raises(sm.CheckpointError, match=r"(?s)entry 'rbg' has another shape or dtype"):
        sm.checkpoint.restore(path, wrong)


def test_nested_pytree_values_round_trip_an_optax_state(path):
    optax = pytest.importorskip("optax")
    params = {"w": jnp.arange(4.0).reshape(2, 2), "b": jnp.ones(2)}
    opt = optax.adam(0.1)
    state = sm.LongTermState(opt.init(params))
    nested = sm.State({"a": [jnp.ones(2), (jnp.zeros(1), None)], "b": jnp.array(7, jnp.int32)})
    state.value = jax.tree.map(lambda x: x + jnp.ones_like(x), state.value)  # as after one step
    sm.checkpoint.save(path, {"opt": state, "nested": nested})
    fresh, nested2 = sm.LongTermState(opt.init(params)), sm.State({"a": [jnp.zeros(2), (jnp.ones(1), None)],
                                                                   "b": jnp.array(0, jnp.int32)})  # fmt: skip
    sm.checkpoint.restore(path, {"opt": fresh, "nested": nested2})
    assert jax.tree.structure(fresh.value) == jax.tree.structure(state.value)
    _assert_same(fresh.value, state.value)
    _assert_same(nested2.value, nested.value)
    assert int(fresh.value[0].count) == 1


def test_lists_dicts_scalars_and_uninitialised_states(tmp_path):
    for name in FORMATS:
        a, b, lazy = sm.State(2.0), sm.State(jnp.arange(3)), sm.State(None)
        sm.checkpoint.save(tmp_path / f"l{name}", [a, b, lazy])
        a2, b2, lazy2 = sm.State(0.0), sm.State(jnp.zeros(3, jnp.int32)), sm.State(None)
        sm.checkpoint.restore(tmp_path / f"l{name}", [a2, b2, lazy2])
        assert float(a2.value) == 2.0 and b2.value.tolist() == [0, 1, 2] and lazy2.value is None
        later = sm.ParamState(None)
        sm.checkpoint.save(tmp_path / f"d{name}", {"p": sm.ParamState(jnp.ones(2))})
        sm.checkpoint.restore(tmp_path / f"d{name}", {"p": later})
        assert isinstance(later.value, jax.Array) and later.value.shape == (2,)
        sm.checkpoint.save(tmp_path / f"e{name}", [sm.State(None)])  # no arrays at all
        sm.checkpoint.restore(tmp_path / f"e{name}", [sm.State(None)])


def test_sharded_states_come_back_with_their_sharding(path):
    mesh = Mesh(np.array(jax.devices()[:2]), ("d",))
    row, rep = NamedSharding(mesh, P("d")), NamedSharding(mesh, P())
    w = sm.ParamState(jax.device_put(jnp.arange(8.0).reshape(4, 2), row))
    k = sm.State(jax.device_put(jax.random.split(jax.random.key(0), 2), row))
    sm.checkpoint.save(path, {"w": w, "k": k})
    w2 = sm.ParamState(jax.device_put(jnp.zeros((4, 2)), row))
    k2 = sm.State(jax.device_put(jax.random.split(jax.random.key(1), 2), rep))
    plain = sm.ParamState(jnp.zeros((4, 2)))  # on the default device: comes back there
    k2_sharding = k2.value.sharding  # JAX writes P() of a key array as P(None)
    sm.checkpoint.restore(path, {"w": w2, "k": k2})
    sm.checkpoint.restore(path, {"w": plain}, strict=False)
    assert w2.value.sharding == row and k2.value.sharding == k2_sharding and k2_sharding.is_equivalent_to(rep, 1)
    assert plain.value.sharding == jnp.zeros(1).sharding
    _assert_same([w.value, k.value], [w2.value, k2.value])
    np.testing.assert_array_equal(plain.value, w.value)


def test_restore_inside_a_transform_writes_the_values_there(path):
    w = sm.ParamState(jnp.arange(3.0))
    sm.checkpoint.save(path, {"w": w})
    w.value = jnp.zeros(3)

    def reset():
        sm.checkpoint.restore(path, {"w": w})
        return w.value * 2

    np.testing.assert_array_equal(sm.transform.jit(reset)(), [0.0, 2.0, 4.0])
    np.testing.assert_array_equal(w.value, [0.0, 1.0, 2.0])


# -- checks and errors -------------------------------------------------------------------------------------------
def test_restore_checks_keys_and_names_the_states(path):
    sm.checkpoint.save(path, Model(), OfType(sm.ParamState))
    with pytest.raises(sm.CheckpointError, match=r"(?s)missing entries for 'opt' \(state 'opt' \(LongTermState"):
        sm.checkpoint.restore(path, Model())
    m = Model()
    sm.checkpoint.restore(path, m, strict=False)  # loads only the parameters
    sm.checkpoint.restore(path, m, OfType(sm.ParamState))  # or select them
    sm.checkpoint.save(path, Model(), overwrite=True)
    with pytest.raises(sm.CheckpointError, match=r"unexpected entries 'opt', 'rng', 'h' \(no state has these keys\)"):
        sm.checkpoint.restore(path, Model(), OfType(sm.ParamState))


def test_restore_refuses_other_shapes_dtypes_and_structures_and_writes_nothing(path):
    sm.checkpoint.save(path, Model(n=4))
    m = Model()
    before = _values(m.states().values())
    with pytest.raises(
        sm.CheckpointError,
        match=r"(?s)restore: entry 'layers.0' has another shape or dtype than state 'layers.0' \(ParamState, "
        r"created at .*test_checkpoint.py:\d+\).*expected: f32\[3,2\].*found:    f32\[4,2\].*fix:",
    ):
        sm.checkpoint.restore(path, m)
    assert all(a is b for a, b in zip(_values(m.states().values()), before, strict=True))  # nothing written
    w = sm.ParamState(jnp.ones(2, jnp.int32), name="w")
    sm.checkpoint.save(path, {"w": sm.ParamState(jnp.ones(2))}, overwrite=True)
    with pytest.raises(sm.CheckpointError, match=r"(?s)state 'w'.*i32\[2\].*f32\[2\]"):
        sm.checkpoint.restore(path, {"w": w})
    sm.checkpoint.save(path, {"w": sm.State({"a": jnp.ones(2)})}, overwrite=True)
    with pytest.raises(
        sm.CheckpointError, match=r"(?s)entry 'w' has another pytree structure.*\['w'\].*\[\"w\['a'\]\"\]"
    ):
        sm.checkpoint.restore(path, {"w": w})


def test_a_restore_failing_while_reading_leaves_every_state_unchanged(tmp_path, monkeypatch):
    src = Model()
    _randomise(src)
    for name in FORMATS:
        sm.checkpoint.save(tmp_path / name, src)
    m = Model()
    before = _values(m.states().values())
    real_wrap = sm.checkpoint._wrap
    calls = []

    def wrap_then_fail(arr, info):  # the third leaf read fails (a damaged file, a full disk, ...)
        calls.append(info["name"])
        if len(calls) == 3:
            raise OSError("read error")
        return real_wrap(arr, info)

    monkeypatch.setattr(sm.checkpoint, "_wrap", wrap_then_fail)
    for name in FORMATS:
        calls.clear()
        with pytest.raises(OSError, match="read error"):
            sm.checkpoint.restore(tmp_path / name, m)
        assert all(a is b for a, b in zip(_values(m.states().values()), before, strict=True))


@needs_orbax
def test_restore_refuses_what_save_did_not_write(tmp_path):
    np.savez(tmp_path / "plain.npz", w=np.ones(2))
    np.save(tmp_path / "one.npy", np.ones(2))
    (tmp_path / "text.npz").write_text("not a zip")
    for name, found in [("plain.npz", r"an .npz file with entries \['w'\]"), ("one.npy", "a single ndarray"),
                        ("text.npz", "ValueError")]:  # fmt: skip
        with pytest.raises(sm.CheckpointError, match=rf"(?s)restore: '.*' is not a statemap checkpoint.*{found}.*fix:"):
            sm.checkpoint.restore(tmp_path / name, {"w": sm.State(jnp.ones(2))})
    (tmp_path / "folder").mkdir()
    ocp.PyTreeCheckpointer().save(tmp_path / "orbax_only", {"w": np.ones(2)})
    for name in ["folder", "orbax_only"]:
        with pytest.raises(sm.CheckpointError, match=r"(?s)is not a complete statemap checkpoint.*expected: a dir"):
            sm.checkpoint.restore(tmp_path / name, {"w": sm.State(jnp.ones(2))})
    with pytest.raises(FileNotFoundError):
        sm.checkpoint.restore(tmp_path / "nothing.npz", {"w": sm.State(jnp.ones(2))})


def test_restore_refuses_an_unknown_format_version(tmp_path):
    sm.checkpoint.save(tmp_path / "c.npz", {"w": sm.State(jnp.ones(2))})
    with zipfile.ZipFile(tmp_path / "c.npz") as zf, zipfile.ZipFile(tmp_path / "d.npz", "w") as out:
        for name in zf.namelist():
            data = zf.read(name)
            if name == "__statemap__.npy":
                meta = json.loads(str(np.load(tmp_path / "c.npz")["__statemap__"]))
                meta["format"] = "statemap.checkpoint/99"
                with out.open(name, "w") as f:
                    np.lib.format.write_array(f, np.array(json.dumps(meta)))
            else:
                out.writestr(name, data)
    with pytest.raises(sm.CheckpointError, match=r"(?s)unknown checkpoint format.*statemap.checkpoint/99"):
        sm.checkpoint.restore(tmp_path / "d.npz", {"w": sm.State(jnp.ones(2))})


def test_bad_targets_and_duplicate_keys(tmp_path):
    with pytest.raises(sm.CheckpointError, match="cannot take the states of a int"):
        sm.checkpoint.state_dict(3)
    with pytest.raises(sm.CheckpointError, match="entry 'x' is not a State"):
        sm.checkpoint.state_dict({"x": jnp.ones(2)})

    class Dotted(sm.nn.Module):
        def __init__(self):
            self.a = {"b": {"c": sm.State(1.0)}, "b.c": sm.State(2.0)}

    with pytest.raises(sm.CheckpointError, match="two states have the key 'a.b.c'"):
        Dotted().state_dict()
    clash = {"a": sm.State({"b": jnp.ones(1)}), "a['b']": sm.State(jnp.ones(1))}
    with pytest.raises(sm.CheckpointError, match=r"(?s)save: two leaves have the name \"a\['b'\]\".*fix:"):
        sm.checkpoint.save(tmp_path / "clash", clash)
    with pytest.raises(sm.CheckpointError, match=r"(?s)state 's'.*holds a leaf that is not an array.*a str"):
        sm.checkpoint.save(tmp_path / "str", {"s": sm.State("text", name="s")})
    assert os.listdir(tmp_path) == []


def test_save_inside_a_transform_is_refused(path):
    w = sm.State(jnp.ones(2), name="w")

    @sm.transform.jit
    def f():
        w.value = w.value * 2
        sm.checkpoint.save(path, {"w": w})

    with pytest.raises(sm.CheckpointError, match=r"(?s)state 'w'.*holds a JAX tracer"):
        f()
    assert not os.path.exists(path)


def test_state_dict_with_filters_on_a_dict_target_and_load_state_dict():
    w, h = sm.ParamState(jnp.ones(2)), sm.HiddenState(jnp.zeros(2))
    assert list(sm.checkpoint.state_dict({"w": w, "h": h}, sm.ParamState)) == ["w"]
    sm.checkpoint.load_state_dict([w, h], {"0": np.zeros(2, np.float32), "1": np.ones(2, np.float32)})
    assert isinstance(h.value, jax.Array) and h.value.tolist() == [1.0, 1.0]


# -- overwriting and atomic saves -----------------------------------------------------------------------------------
def test_an_existing_path_is_refused_unless_overwrite(path):
    w = sm.State(jnp.ones(2), name="w")
    sm.checkpoint.save(path, {"w": w})
    w.value = jnp.full(2, 5.0)
    with pytest.raises(
        sm.CheckpointError,
        match=r"(?s)save: '.*ckpt(\.npz)?' already exists.*expected: a path that does not exist yet, or "
        r"overwrite=True.*fix:      pass overwrite=True",
    ):
        sm.checkpoint.save(path, {"w": w})
    sm.checkpoint.save(path, {"w": w}, overwrite=True)
    sm.checkpoint.save(path, {"w": w}, overwrite=True)
    assert sorted(os.listdir(path.parent)) == [path.name]  # no staging or old copy left
    w2 = sm.State(jnp.zeros(2))
    sm.checkpoint.restore(path, {"w": w2})
    assert w2.value.tolist() == [5.0, 5.0]


def test_overwrite_replaces_only_a_checkpoint_of_the_same_format(tmp_path):
    w = {"w": sm.State(jnp.ones(2))}
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    (tmp_path / "file").write_text("keep me")
    (tmp_path / "dir.npz").mkdir()
    for name, kind in [("mine", "statemap checkpoint directory"), ("file", "statemap checkpoint directory"),
                       ("dir.npz", "file")]:  # fmt: skip
        with pytest.raises(sm.CheckpointError, match=rf"(?s)exists and is not a {kind}.*fix:      choose another"):
            sm.checkpoint.save(tmp_path / name, w, overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me" and (tmp_path / "file").read_text() == "keep me"


@pytest.mark.filterwarnings("ignore:Sharding info not provided when restoring:UserWarning")  # orbax, no target
@needs_orbax
def test_files_left_by_a_save_are_exactly_the_checkpoint(tmp_path):
    m = Model()
    sm.checkpoint.save(tmp_path / "c.npz", m)
    sm.checkpoint.save(tmp_path / "ckpt", m)
    assert sorted(os.listdir(tmp_path)) == ["c.npz", "ckpt"]
    assert {"arrays", "statemap"} <= set(os.listdir(tmp_path / "ckpt"))
    with np.load(tmp_path / "c.npz", allow_pickle=False) as data:
        assert {"layers.0", "layers.1", "opt['mu']", "opt['count']", "rng", "h", "__statemap__"} == set(data.files)
        np.testing.assert_array_equal(data["layers.0"], np.ones((3, 2)))
    assert zipfile.ZipFile(tmp_path / "c.npz").namelist()[-1] == "__statemap__.npy"
    # The orbax directory is readable by orbax alone: a flat dict of the same leaf names.
    tree = ocp.PyTreeCheckpointer().restore(tmp_path / "ckpt" / "arrays")
    assert set(tree) == {"layers.0", "layers.1", "opt['mu']", "opt['count']", "rng", "h"}
    assert tree["layers.1"].dtype == jnp.bfloat16 and tree["rng"].dtype == np.uint32


def test_a_failed_npz_save_keeps_the_previous_file(tmp_path, monkeypatch):
    m = Model()
    path = tmp_path / "c.npz"
    sm.checkpoint.save(path, m)
    before = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np.lib.format, "write_array", broken)
    with pytest.raises(OSError, match="disk full"):
        sm.checkpoint.save(path, m, overwrite=True)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["c.npz"]


@needs_orbax
def test_a_failed_orbax_save_leaves_no_checkpoint_and_keeps_the_previous_one(tmp_path, monkeypatch):
    w = sm.State(jnp.arange(2.0))
    sm.checkpoint.save(tmp_path / "old", {"w": w})

    def broken(*args, **kwargs):  # every array is written; the commit fails (a crash before the rename)
        raise OSError("disk full")

    monkeypatch.setattr(ocp.CompositeCheckpointHandler, "finalize", broken)
    with pytest.raises(OSError, match="disk full"):
        sm.checkpoint.save(tmp_path / "new", {"w": w})
    with pytest.raises(OSError, match="disk full"):
        sm.checkpoint.save(tmp_path / "old", {"w": sm.State(jnp.zeros(2))}, overwrite=True)
    monkeypatch.undo()
    assert not (tmp_path / "new").exists()
    w2 = sm.State(jnp.zeros(2))
    sm.checkpoint.restore(tmp_path / "old", {"w": w2})  # the previous checkpoint, whole
    assert w2.value.tolist() == [0.0, 1.0]
    leftovers = sorted(set(os.listdir(tmp_path)) - {"old"})
    assert [n.split(".")[0] for n in leftovers] == ["new", "old"]
    assert all("orbax-checkpoint-tmp" in n for n in leftovers)
    for name in leftovers:  # orbax's temporary directories: never accepted as a checkpoint
        with pytest.raises(sm.CheckpointError, match=r"(?s)restore: .* is not a complete statemap checkpoint"):
            sm.checkpoint.restore(tmp_path / name, {"w": w2})
    sm.checkpoint.save(tmp_path / "old", {"w": sm.State(jnp.full(2, 3.0))}, overwrite=True)  # stale staging goes
    assert not [n for n in os.listdir(tmp_path) if n.startswith("old.")]
    sm.checkpoint.restore(tmp_path / "old", {"w": w2})
    assert w2.value.tolist() == [3.0, 3.0]


# -- orbax is optional ---------------------------------------------------------------------------------------------
@needs_orbax
def test_without_orbax_npz_works_and_a_directory_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "orbax.checkpoint", None)  # `import orbax.checkpoint` raises ImportError
    w = sm.State(jnp.ones(2))
    sm.checkpoint.save(tmp_path / "c.npz", {"w": w})
    sm.checkpoint.restore(tmp_path / "c.npz", {"w": w})
    fix = r"fix:      pip install 'statemap\[checkpoint\]', or use a single-file checkpoint: a path ending in '.npz'"
    with pytest.raises(sm.CheckpointError, match=rf"(?s)save: the checkpoint directory .* orbax-checkpoint is not "
                       rf"installed.*{fix}"):  # fmt: skip
        sm.checkpoint.save(tmp_path / "ckpt", {"w": w})
    assert not (tmp_path / "ckpt").exists()
    monkeypatch.undo()
    sm.checkpoint.save(tmp_path / "ckpt", {"w": w})
    monkeypatch.setitem(sys.modules, "orbax.checkpoint", None)
    with pytest.raises(sm.CheckpointError, match=rf"(?s)restore: .*{fix}"):
        sm.checkpoint.restore(tmp_path / "ckpt", {"w": w})


# -- 8 devices, and two processes ----------------------------------------------------------------------------------
_SCRIPT = Path(__file__).with_name("_checkpoint_devices_script.py")
_CHECKS = [
    "statemap_imports_without_orbax",
    "sharded_round_trip_keeps_every_sharding",
    "restore_reshards_into_the_current_sharding",
    "npz_restore_keeps_the_sharding",
]
report, test_devices_script_ran_every_check, test_devices_check = device_tests(_SCRIPT, _CHECKS)
test_devices_script_ran_every_check = needs_orbax(test_devices_script_ran_every_check)
test_devices_check = needs_orbax(test_devices_check)

_WORKER = Path(__file__).with_name("_checkpoint_multiprocess_worker.py")
_ROOT = str(Path(__file__).resolve().parent.parent)


def _launch(nproc: int, folder: Path) -> list[dict]:
    """Run the worker as `nproc` processes of one `jax.distributed` job (tests/_launch.py)."""
    return launch(_WORKER, nproc, str(folder))


@needs_orbax
def test_two_processes_save_their_shards_and_one_process_restores_them(tmp_path):
    two = _launch(2, tmp_path)
    for r in two:
        assert r["devices"] == 8 and r["local"] == 4
        assert r["restored"] == np.arange(16.0).reshape(8, 2).tolist() and r["spec"] == ["d"]
        assert r["count"] == 5.0 and r["uniform_equal"]
        assert r["overwritten"] == (np.arange(16.0) * 2).reshape(8, 2).tolist()
        assert re.search(r"(?s)state 'split' \(State.*split over this process's devices only.*fix:", r["split_error"])
    assert sorted(two[0]["writers"]) == ["ocdbt.process_0", "ocdbt.process_1"]  # each process wrote its shards
    assert not (tmp_path / "split").exists()
    (one,) = _launch(1, tmp_path)  # 8 devices in one process read what two processes wrote
    assert one["devices"] == 8 and one["local"] == 8
    assert one["restored"] == (np.arange(16.0) * 2).reshape(8, 2).tolist() and one["spec"] == ["d"]
