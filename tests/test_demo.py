"""The demo runs, prints checkable numbers, and agrees with its pure-JAX reference."""

import statemap.demo


def test_demo_runs_and_matches_pure_jax(capsys):
    statemap.demo.main()
    out = capsys.readouterr().out
    assert "matches the hand-written pure-JAX simulation: True" in out
    assert "spikes per member over 200 steps" in out
    assert "'V'" in out and "declared" in out
