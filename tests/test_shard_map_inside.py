"""statemap transforms inside `jax.shard_map` and statemap's own `shard_map` (check_vma=True), sharded `jit`
and `state_shardings`, shard_map policies on a 2-d mesh: 8 simulated CPU devices.

Runs tests/_shard_map_script.py (the `_compat.struct_like` entry keeps the shard_map axes a value varies over).
"""

from pathlib import Path

from _device_checks import device_tests

_SCRIPT = Path(__file__).with_name("_shard_map_script.py")
_CHECKS = [
    "vmap2_stateless",
    "vmap2_reading_a_state_and_a_collective",
    "map_and_loops",
    "jit_grad_cond_inside",
    "sharded_jit_keeps_state_sharding",
    "jit_state_shardings_on_a_2d_mesh",
    "vmap2_map_and_for_loop_inside_stateful_shard_map",
    "shard_map_policy_auto_on_a_2d_mesh",
]


report, test_script_ran_every_check, test_check = device_tests(_SCRIPT, _CHECKS)
