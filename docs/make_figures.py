"""Regenerate the figures shown in the documentation.

Run ``.venv/bin/python docs/make_figures.py`` from the repository root. Each page listed in `FIGURES` is run
as the test suite runs it (its ``>>>`` examples, with the test suite's JAX settings and seed), and the figure
it wrote into its temporary directory ``out_dir`` is copied next to the page. Importing this module does
nothing.
"""

import doctest
import os
import shutil
import sys

DOCS = os.path.dirname(os.path.abspath(__file__))
# page (relative to docs/) -> figure files it writes into its `out_dir`
FIGURES = {"tutorials/spiking.md": ["raster.png"]}


def run_page(page: str) -> dict:
    """Run the examples of `page` in one namespace (as pytest's doctest runner does) and return it."""
    import jax

    import statemap as sm

    jax.config.update("jax_numpy_rank_promotion", "raise")
    jax.config.update("jax_numpy_dtype_promotion", "strict")
    sm.random.seed(0)
    path = os.path.join(DOCS, page)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    test = doctest.DocTestParser().get_doctest(text, {}, page, path, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    result = runner.run(test, clear_globs=False)
    if result.failed:
        raise SystemExit(f"{page}: {result.failed} example(s) failed")
    return test.globs


def main() -> None:
    for page, names in FIGURES.items():
        namespace = run_page(page)
        for name in names:
            target = os.path.join(DOCS, os.path.dirname(page), name)
            shutil.copyfile(os.path.join(namespace["out_dir"], name), target)
            print(f"wrote {os.path.relpath(target)}")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(DOCS))
    main()
