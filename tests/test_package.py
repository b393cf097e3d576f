"""Package-level checks: public names exist, are documented with a runnable example, and exports are tidy."""

import importlib
import inspect
import types

import pytest

import statemap as sm

NAMESPACES = [
    "statemap",
    "statemap.transform",
    "statemap.random",
    "statemap.util.filter",
    "statemap.nn",
    "statemap.environ",
    "statemap.typing",
]


def _public(namespace):
    module = importlib.import_module(namespace)
    return [(namespace, name, getattr(module, name, None)) for name in module.__all__]


PUBLIC = [entry for ns in NAMESPACES for entry in _public(ns)]


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_all_names_exist_and_are_unique(namespace):
    module = importlib.import_module(namespace)
    assert len(module.__all__) == len(set(module.__all__)), namespace
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing, f"{namespace}.__all__ lists missing names: {missing}"


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_module_docstring(namespace):
    assert (importlib.import_module(namespace).__doc__ or "").strip(), namespace


def _ours(obj):
    return (getattr(obj, "__module__", None) or "").startswith("statemap")


def _needs_example(obj):
    """statemap's classes and functions carry an example; modules, constants and type aliases do not."""
    if isinstance(obj, types.ModuleType):
        return False
    return (inspect.isclass(obj) or inspect.isfunction(obj)) and _ours(obj)


@pytest.mark.parametrize(
    "namespace, name, obj",
    [e for e in PUBLIC if _needs_example(e[2])],
    ids=[f"{ns}.{n}" for ns, n, o in PUBLIC if _needs_example(o)],
)
def test_public_name_has_docstring_with_example(namespace, name, obj):
    doc = inspect.getdoc(obj) or ""
    assert doc.strip(), f"{namespace}.{name} has no docstring"
    assert ">>>" in doc, f"{namespace}.{name}: docstring has no runnable `>>>` example"


def test_instances_in_all_are_documented_by_their_class():
    # e.g. statemap.random.DEFAULT is an instance: its class must carry the example.
    for namespace, name, obj in PUBLIC:
        if not inspect.isclass(obj) and not inspect.isfunction(obj) and _ours(type(obj)):
            assert ">>>" in (inspect.getdoc(type(obj)) or ""), f"{namespace}.{name}"


def test_version():
    assert isinstance(sm.__version__, str) and sm.__version__.count(".") >= 1


def test_py_typed_shipped():
    import pathlib

    assert (pathlib.Path(sm.__file__).parent / "py.typed").exists()


def test_brainstate_style_paths():
    assert sm.transform.jit is not None
    assert sm.util.filter.OfType is not None
    assert sm.nn.Module is not None
    assert sm.random.RandomState is not None
