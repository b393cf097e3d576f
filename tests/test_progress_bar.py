"""Tests of the tqdm progress bar of scan / for_loop."""

import sys

import jax
import jax.numpy as jnp
import pytest

import statemap as sm

T = sm.transform


def test_scan_progress_bar_reaches_the_end(capsys):
    s = sm.State(jnp.zeros(()), name="s")

    def f(c, x):
        s.value = s.value + x
        return c, None

    T.scan(f, None, jnp.arange(5.0), progress_bar=True)
    jax.effects_barrier()
    err = capsys.readouterr().err
    assert "scan" in err and "5/5" in err
    assert float(s.value) == 10.0


def test_for_loop_progress_bar_with_print_frequency_under_jit(capsys):
    run = T.jit(lambda xs: T.for_loop(lambda x: x * 2, xs, progress_bar=3))
    run(jnp.arange(7.0))
    jax.effects_barrier()
    err = capsys.readouterr().err
    assert "for_loop" in err and "3/7" in err and "6/7" in err and "7/7" in err
    run(jnp.arange(7.0))  # the compiled loop runs again: a fresh bar
    jax.effects_barrier()
    assert "7/7" in capsys.readouterr().err


def test_bad_progress_bar_spec():
    with pytest.raises(sm.ArgumentError, match="progress_bar is neither a bool nor a positive int"):
        T.scan(lambda c, x: (c, x), None, jnp.zeros(2), progress_bar=0)
    with pytest.raises(ValueError, match="progress_bar"):
        T.scan(lambda c, x: (c, x), None, jnp.zeros(2), progress_bar="yes")


def test_missing_tqdm_gives_a_clear_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    with pytest.raises(ImportError, match="scan: progress_bar needs the tqdm package"):
        T.scan(lambda c, x: (c, x), None, jnp.zeros(2), progress_bar=True)
    assert T.scan(lambda c, x: (c, x), None, jnp.zeros(2))[1].shape == (2,)  # no bar: no tqdm needed


# -- ProgressBar and pbar= -----------------------------------------------------------------------------------
def test_pbar_progress_bar_with_desc_freq_and_tqdm_options(capsys):
    s = sm.State(jnp.zeros(()), name="s")

    def f(c, x):
        s.value = s.value + x
        return c + 1, x

    carry, ys = T.scan(f, 0, jnp.arange(6.0), pbar=T.ProgressBar(freq=2, desc="training", ascii=True))
    jax.effects_barrier()
    err = capsys.readouterr().err
    assert "training" in err and "2/6" in err and "4/6" in err and "6/6" in err
    ref = jax.lax.scan(lambda c, x: ((c[0] + 1, c[1] + x), x), (0, 0.0), jnp.arange(6.0))
    assert (int(carry), float(s.value)) == (int(ref[0][0]), float(ref[0][1]))


def test_pbar_int_and_count_for_for_loop_and_checkpointed_scan(capsys):
    out = T.for_loop(lambda x: x * 2, jnp.arange(10.0), pbar=5)
    jax.effects_barrier()
    err = capsys.readouterr().err
    assert "for_loop" in err and "5/10" in err and "10/10" in err
    assert out.tolist() == [2.0 * i for i in range(10)]
    T.checkpointed_scan(lambda c, x: (c, None), None, jnp.arange(9.0), pbar=T.ProgressBar(count=3))
    jax.effects_barrier()
    err = capsys.readouterr().err
    assert "checkpointed_scan" in err and "3/9" in err and "6/9" in err and "9/9" in err


def test_equal_bars_share_one_compiled_loop():
    from statemap.transform import _loops

    def f(c, x):
        return c, None

    T.scan(f, None, jnp.arange(3.0), pbar=T.ProgressBar(freq=1))
    size = _loops._scan_jitted._cache_size()
    T.scan(f, None, jnp.arange(3.0), pbar=T.ProgressBar(freq=1))
    assert _loops._scan_jitted._cache_size() == size
    jax.effects_barrier()


def test_bad_pbar_and_progress_bar_arguments():
    f = lambda c, x: (c, x)  # noqa: E731
    with pytest.raises(sm.ArgumentError, match="both pbar and progress_bar are given"):
        T.scan(f, None, jnp.zeros(2), progress_bar=True, pbar=3)
    with pytest.raises(sm.ArgumentError, match="pbar is neither a ProgressBar nor a positive int"):
        T.scan(f, None, jnp.zeros(2), pbar="fast")
    with pytest.raises(sm.ArgumentError, match="freq is not a positive int"):
        T.ProgressBar(freq=0)
    with pytest.raises(sm.ArgumentError, match="both freq and count are given"):
        T.ProgressBar(freq=2, count=3)
    with pytest.raises(sm.ArgumentError, match="desc is not a str"):
        T.ProgressBar(desc=("{i}", lambda d: d))
    with pytest.raises(sm.ArgumentError, match="tqdm keyword argument is not hashable"):
        T.ProgressBar(colour=["red"])
    assert repr(T.ProgressBar(freq=3, desc="x", leave=False)) == "ProgressBar(freq=3, desc='x', leave=False)"
