"""Sphinx configuration of pyshm's documentation site (docs/).

Built with warnings as errors by .ci/docs.sh and tests/distribution/test_docs.py:

    python -m sphinx -W --keep-going -b html docs build/docs/html

The pages are Markdown (MyST), the same files GitHub shows; the API
reference is autodoc over the installed pyshm, its signatures typed from the
stubs the package ships (_ext/pyshm_stubs.py).  Nothing is fetched while
building (no intersphinx): the site builds offline.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "_ext"))

import pyshm  # noqa: E402  (the installed one: its docstrings and stubs are documented)

project = "pyshm"
author = "The pyshm developers"
copyright = "The pyshm developers"
release = pyshm.__version__
version = pyshm.__version__

extensions = ["myst_parser", "sphinx.ext.autodoc", "pyshm_stubs"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# Links to a heading of another page (channels.md#wait-policy-spin), as on
# GitHub; a link to a heading that does not exist is a warning, so an error.
myst_heading_anchors = 4

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_class_signature = "mixed"
pyshm_stub_modules = ["pyshm._pyshm"]

html_theme = "alabaster"
html_title = f"pyshm {release}"
html_theme_options = {"description": "Named shared memory, channels and slots between processes",
                      "fixed_sidebar": True}
