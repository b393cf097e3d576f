"""pmap2 on 8 simulated CPU devices: runs tests/_pmap_devices_script.py in its own process."""

from pathlib import Path

from _device_checks import device_tests

_SCRIPT = Path(__file__).with_name("_pmap_devices_script.py")
_CHECKS = [
    "device_count",
    "parity_with_jax_pmap",
    "states_sliced_per_device",
    "state_on_axis_1",
    "static_broadcasted_argnums_user_numbering",
    "donate_argnums_user_numbering",
    "compile_once_per_signature",
    "random_per_device",
    "pmap2_new_states",
    "pmap2_of_vmap2",
    "errors_name_pmap2_and_leave_states_untouched",
]


report, test_script_ran_every_check, test_check = device_tests(_SCRIPT, _CHECKS)
