"""Random numbers as state: `RandomState`, the global `DEFAULT` generator and numpy-style samplers."""

from ._rng import DEFAULT as DEFAULT
from ._rng import RandomState as RandomState
from ._rng import default_rng as default_rng
from ._rng import get_key as get_key
from ._rng import seed as seed

# --- samplers: add re-exports below this line ---
from ._rng import seed_context as seed_context
from ._rng import set_key as set_key
from ._rng import split_key as split_key
from ._rng import split_keys as split_keys
from ._samplers import bernoulli as bernoulli
from ._samplers import beta as beta
from ._samplers import categorical as categorical
from ._samplers import choice as choice
from ._samplers import exponential as exponential
from ._samplers import gamma as gamma
from ._samplers import multivariate_normal as multivariate_normal
from ._samplers import normal as normal
from ._samplers import permutation as permutation
from ._samplers import poisson as poisson
from ._samplers import rand as rand
from ._samplers import randint as randint
from ._samplers import randn as randn
from ._samplers import random as random
from ._samplers import shuffle as shuffle
from ._samplers import truncated_normal as truncated_normal
from ._samplers import uniform as uniform

__all__ = [
    "DEFAULT",
    "RandomState",
    "default_rng",
    "get_key",
    "seed",
    "set_key",
    "split_key",
    "split_keys",
    # --- sampler names ---
    "seed_context",
    "bernoulli",
    "beta",
    "categorical",
    "choice",
    "exponential",
    "gamma",
    "multivariate_normal",
    "normal",
    "permutation",
    "poisson",
    "rand",
    "randint",
    "randn",
    "random",
    "shuffle",
    "truncated_normal",
    "uniform",
]
