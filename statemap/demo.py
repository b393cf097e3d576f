"""A short demo: an ensemble of leaky integrate-and-fire neurons, written as stateful objects.

Run it with ``python -m statemap.demo`` (or ``make demo``). It builds an ensemble of 4 neuron populations with
`vmap2_new_states` (random initial potentials differ per member), simulates them for 200 steps with
`jit(for_loop(vmap2(step)))`, prints each member's spike count and final potentials, checks the result against the
same simulation hand-written in pure JAX, and prints the mapping plan that `explain` reports.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import statemap as sm


class LIF(sm.nn.Module):
    """Leaky integrate-and-fire neurons: dV/dt = (-V + I) / tau, spike and reset when V > threshold."""

    def __init__(self, n: int, tau: float = 10.0, threshold: float = 1.0) -> None:
        self.n = n
        self.tau = tau
        self.threshold = threshold

    def init_state(self, **kwargs: object) -> None:
        self.V = sm.HiddenState(sm.random.uniform(0.0, 1.0, size=self.n))
        self.spikes = sm.ShortTermState(jnp.zeros(self.n, dtype=jnp.int32))

    def update(self, current: jax.Array, dt: float = 1.0) -> jax.Array:
        v = self.V.value + dt * (-self.V.value + current) / self.tau
        spike = v > self.threshold
        self.V.value = jnp.where(spike, 0.0, v)
        # Spikes are counted as int32: adding a bool to an int needs an explicit cast under strict promotion.
        self.spikes.value = self.spikes.value + spike.astype(jnp.int32)
        return jnp.sum(spike)


_Triple = tuple[jax.Array, jax.Array, jax.Array]


def pure_reference(v0: jax.Array, currents: jax.Array, tau: float, threshold: float) -> _Triple:
    """The same simulation written by hand in pure JAX (explicit state passing).

    Returns:
      Per member: the final potentials, the spike counts per neuron, and the population spike count per step.
    """

    def step(carry: tuple[jax.Array, jax.Array], c: jax.Array) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
        v, s = carry
        v = v + (-v + c) / tau
        spike = v > threshold
        return (jnp.where(spike, 0.0, v), s + spike.astype(jnp.int32)), jnp.sum(spike)

    def member(v: jax.Array, cur: jax.Array) -> _Triple:
        (v, s), counts = jax.lax.scan(step, (v, jnp.zeros(v.shape, jnp.int32)), cur)
        return v, s, counts

    v, s, counts = jax.jit(jax.vmap(member, in_axes=(0, 1)))(v0, currents)
    return v, s, counts


def main() -> None:
    members, neurons, steps = 4, 5, 200
    sm.random.seed(2026)
    net = LIF(neurons)
    sm.transform.vmap2_new_states(net, {}, axis_size=members)
    v0 = net.V.value
    print(f"ensemble of {members} LIF populations x {neurons} neurons; initial V[:, 0] = {np.round(v0[:, 0], 3)}")

    # Member m receives input current 1.05 + 0.05 * m: stronger drive, more spikes.
    drive = 1.05 + 0.05 * jnp.arange(members, dtype=jnp.float32)
    currents = jnp.broadcast_to(drive[None, :, None], (steps, members, neurons))

    step = sm.transform.vmap2(
        net.update, state_in_axes={0: [net.V, net.spikes]}, state_out_axes={0: [net.V, net.spikes]}
    )
    simulate = sm.transform.jit(lambda cur: sm.transform.for_loop(step, cur))
    counts = simulate(currents)

    print(f"spikes per member over {steps} steps: {np.asarray(net.spikes.value.sum(axis=1))}")
    print(f"population spike counts at the last step: {np.asarray(counts[-1])}")
    print(f"final V of member 0: {np.round(np.asarray(net.V.value[0]), 4)}")

    v_ref, s_ref, counts_ref = pure_reference(v0, currents, net.tau, net.threshold)
    same = (
        np.allclose(v_ref, net.V.value, atol=1e-5)
        and np.array_equal(s_ref, net.spikes.value)
        and np.array_equal(counts_ref, counts.T)
    )
    print(f"matches the hand-written pure-JAX simulation: {same}")
    print()
    print(step.explain(currents[0]))
    if not same:
        raise SystemExit("demo: statemap and pure JAX disagree")


if __name__ == "__main__":
    main()
