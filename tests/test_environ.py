"""Tests of `statemap.environ`: global settings, per-thread contexts, checks and the dtypes of the precision."""

import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import statemap as sm
from statemap import environ


@pytest.fixture(autouse=True)
def _fresh_globals():
    """Each test starts with no global values and leaves none behind (`set` changes the whole process)."""
    saved = environ._GLOBAL
    environ._GLOBAL = {}
    try:
        yield
    finally:
        environ._GLOBAL = saved
    assert environ._CONTEXTS.stack == []


def test_set_and_get():
    environ.set(dt=0.1, precision=16)
    assert environ.get("dt") == 0.1 and environ.get_dt() == 0.1
    assert environ.get("precision") == 16 and environ.get_precision() == 16
    environ.set(dt=2)
    assert environ.get("dt") == 2.0 and isinstance(environ.get("dt"), float)


def test_defaults():
    assert environ.get("precision") == 32  # conftest runs JAX with x64 disabled
    assert environ.dftype() == jnp.float32 and environ.ditype() == jnp.int32
    assert environ.get("dt", 0.5) == 0.5
    assert environ.get("precision", 16) == 32  # a key's own default comes before the argument
    assert "dt" not in environ.all() and environ.all()["precision"] == 32


def test_unset_dt_raises_with_fix():
    with pytest.raises(sm.SettingError, match=r"environ.get: setting 'dt' is not set[\s\S]*environ.set\(dt=...\)"):
        environ.get("dt")
    with pytest.raises(sm.SettingError, match="'dt' is not set"):
        environ.get_dt()


@pytest.mark.parametrize(
    ("call", "who"),
    [
        (lambda: environ.set(dtt=0.1), "environ.set"),
        (lambda: environ.get("precison"), "environ.get"),
        (lambda: environ.context(mode="train").__enter__(), "environ.context"),
    ],
)
def test_unknown_key_names_it_and_lists_the_known_ones(call, who):
    with pytest.raises(sm.SettingError, match=rf"^{who}: unknown setting[\s\S]*'dt', [\s\S]*'precision'"):
        call()
    assert issubclass(sm.SettingError, ValueError) and issubclass(sm.SettingError, sm.StatemapError)


def test_context_overrides_and_restores():
    environ.set(dt=0.1)
    with environ.context(dt=0.2, precision="bf16") as env:
        assert env == {"dt": 0.2, "precision": "bf16"}
        with environ.context(dt=0.3):
            assert environ.get("dt") == 0.3 and environ.get("precision") == "bf16"
        assert environ.get("dt") == 0.2
        environ.set(dt=0.4)  # changes the global value; the context still wins inside the block
        assert environ.get("dt") == 0.2
    assert environ.get("dt") == 0.4 and environ.get("precision") == 32


def test_context_restores_on_exception():
    with pytest.raises(KeyError):
        with environ.context(dt=0.2):
            raise KeyError("x")
    assert environ.get("dt", None) is None


def test_bad_value_changes_nothing():
    environ.set(dt=0.1)
    with pytest.raises(sm.SettingError, match="not a known precision"):
        environ.set(dt=0.5, precision=8)
    assert environ.get("dt") == 0.1
    with pytest.raises(sm.SettingError, match="not a positive time step"):
        with environ.context(precision=16, dt=-1.0):
            pass  # pragma: no cover
    assert environ.get("precision") == 32 and environ._CONTEXTS.stack == []


@pytest.mark.parametrize(
    ("precision", "ftype", "itype"),
    [(32, jnp.float32, jnp.int32), (16, jnp.float16, jnp.int16), ("bf16", jnp.bfloat16, jnp.int16)],
)
def test_dtypes_of_the_precision(precision, ftype, itype):
    with environ.context(precision=precision):
        assert environ.dftype() == ftype and environ.ditype() == itype
        assert jnp.zeros(2, environ.dftype()).dtype == ftype


def test_precision_64_needs_x64_and_never_flips_it():
    with pytest.raises(sm.SettingError, match=r"precision=64 needs 64-bit[\s\S]*jax_enable_x64"):
        environ.set(precision=64)
    assert not jax.config.jax_enable_x64
    with jax.enable_x64(True):
        assert environ.get("precision") == 64  # the default follows JAX
        with environ.context(precision=64):
            assert environ.dftype() == jnp.float64 and environ.ditype() == jnp.int64
        with environ.context(precision=32):
            assert environ.dftype() == jnp.float32
    assert not jax.config.jax_enable_x64


@given(
    value=st.one_of(
        st.integers(-70, 70),
        st.floats(allow_nan=True, allow_infinity=True),
        st.booleans(),
        st.text(max_size=4),
        st.none(),
        st.sampled_from([16, 32, "bf16", np.int32(16), np.float32(0.5), np.int64(3)]),
    )
)
def test_check_property(value):
    """Every value is stored (normalised) or refused with a SettingError naming the key; nothing else."""
    for key in ("precision", "dt"):
        try:
            with environ.context(**{key: value}):
                stored = environ.get(key)
        except sm.SettingError as e:
            assert str(e).startswith(f"environ: {key}=")
            continue
        if key == "dt":
            assert isinstance(stored, float) and stored > 0 and not isinstance(value, (bool, str))
        else:
            assert stored in (16, 32, "bf16") and type(value) is not bool


def test_dt_from_numpy_and_arrays():
    with environ.context(dt=np.float32(0.5)):
        assert environ.get("dt") == 0.5
    with environ.context(dt=jnp.array(0.25)):
        assert environ.get("dt") == 0.25
    with pytest.raises(sm.SettingError, match="dt="):
        environ.set(dt=jnp.ones(2))
    with pytest.raises(sm.SettingError, match="dt="):
        sm.transform.jit(lambda d: environ.set(dt=d))(0.1)


def test_contexts_do_not_leak_between_threads():
    environ.set(dt=0.1)
    entered, release = threading.Event(), threading.Event()
    seen = {}

    def worker():
        with environ.context(dt=0.9, precision=16):
            entered.set()
            release.wait(10)
            seen["worker"] = environ.get("dt"), environ.get("precision")

    t = threading.Thread(target=worker)
    t.start()
    assert entered.wait(10)
    try:
        # the worker is inside its context: this thread still sees the global values
        assert environ.get("dt") == 0.1 and environ.get("precision") == 32
        with environ.context(dt=0.5):
            assert environ.get("dt") == 0.5
    finally:
        release.set()
        t.join(10)
    assert seen["worker"] == (0.9, 16)
    assert environ.get("dt") == 0.1


def test_set_is_seen_by_other_threads():
    out = []
    environ.set(dt=0.3)
    t = threading.Thread(target=lambda: out.append(environ.get("dt")))
    t.start()
    t.join(10)
    assert out == [0.3]


def test_register_a_setting():
    environ.register("test_environ_fit", default=False, check=bool)
    assert environ.get("test_environ_fit") is False
    with environ.context(test_environ_fit=1):
        assert environ.get("test_environ_fit") is True
    environ.register("test_environ_nodefault")
    assert environ.get("test_environ_nodefault", "x") == "x"
    with pytest.raises(sm.SettingError, match=r"environ.register: setting 'dt' is already registered"):
        environ.register("dt")
    with pytest.raises(sm.SettingError, match=r"setting 'a b' is not a valid name"):
        environ.register("a b")


def test_module_is_exported():
    assert sm.environ is environ
    assert {"set", "get", "context", "all", "dftype", "ditype"} <= set(environ.__all__)
