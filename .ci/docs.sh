#!/usr/bin/env bash
# The documentation site: docs/ (Markdown pages read by Sphinx with MyST,
# the API reference by autodoc over the installed pyshm, typed from its
# stubs) built into build/docs/html with warnings as errors -- a broken link
# or heading, an autodoc import that fails, a docstring that is not valid
# reST fails the build.  The suite builds it too
# (tests/distribution/test_docs.py); this step leaves the site to look at.
#
# Installs what it needs itself, into the Python it runs (PYTHON, default
# the active `python`): the `docs` extra's packages, read from
# pyproject.toml (the one list of them), and pyshm from this checkout when
# that Python has none.  Nothing is fetched while building (no intersphinx).
#
# Usage: bash .ci/docs.sh   (PYTHON=... to pick the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python}
out=build/docs

# The docs extra of pyproject.toml (tomllib: Python 3.11+; tomli before).
mapfile -t needs < <("$py" - <<'PYEOF'
try:
    import tomllib
except ImportError:
    import tomli as tomllib
with open("pyproject.toml", "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["optional-dependencies"]["docs"]))
PYEOF
)
echo "docs: installing ${needs[*]}"
"$py" -m pip install -q "${needs[@]}"
if ! "$py" -c "import pyshm" 2>/dev/null; then
    echo "docs: no pyshm in $py: installing this checkout"
    "$py" -m pip install -q -e .
fi
"$py" -c "import pyshm, sphinx, myst_parser; \
print('pyshm', pyshm.__version__, 'from', pyshm.__file__); \
print('Sphinx', sphinx.__version__, 'MyST-Parser', myst_parser.__version__)"

rm -rf "$out"
"$py" -m sphinx -W --keep-going -b html -d "$out/.doctrees" docs "$out/html"
echo "docs: the site is in $out/html ($(find "$out/html" -name '*.html' | wc -l) pages)"
