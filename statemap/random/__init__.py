"""Random numbers as state: `RandomState`, the global `DEFAULT` generator and numpy-style samplers."""

from ._rng import DEFAULT as DEFAULT
from ._rng import RandomState as RandomState
from ._rng import clone_rng as clone_rng
from ._rng import default_rng as default_rng
from ._rng import get_key as get_key
from ._rng import get_key_data as get_key_data
from ._rng import restore_key as restore_key
from ._rng import seed as seed
from ._rng import seed_context as seed_context
from ._rng import set_key as set_key
from ._rng import split_key as split_key
from ._rng import split_keys as split_keys

# Samplers: the methods of `DEFAULT`.
from ._rng import bernoulli as bernoulli
from ._rng import beta as beta
from ._rng import categorical as categorical
from ._rng import choice as choice
from ._rng import exponential as exponential
from ._rng import gamma as gamma
from ._rng import multivariate_normal as multivariate_normal
from ._rng import normal as normal
from ._rng import permutation as permutation
from ._rng import poisson as poisson
from ._rng import rand as rand
from ._rng import randint as randint
from ._rng import randn as randn
from ._rng import random as random
from ._rng import shuffle as shuffle
from ._rng import truncated_normal as truncated_normal
from ._rng import uniform as uniform
from ._rng import chisquare as chisquare
from ._rng import power as power
from ._rng import standard_t as standard_t
from ._rng import triangular as triangular
from ._rng import rand_like as rand_like
from ._rng import randn_like as randn_like
from ._rng import randint_like as randint_like

__all__ = [
    "DEFAULT",
    "RandomState",
    "clone_rng",
    "default_rng",
    "get_key",
    "get_key_data",
    "restore_key",
    "seed",
    "seed_context",
    "set_key",
    "split_key",
    "split_keys",
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
    "chisquare",
    "power",
    "standard_t",
    "triangular",
    "rand_like",
    "randn_like",
    "randint_like",
]
