"""Compatibility shim for tools that still call ``setup.py`` (``python setup.py --version``, old pip
editable installs). Every piece of metadata lives in ``pyproject.toml`` (PEP 621); setuptools reads it
from there. Install with ``pip install .`` or ``pip install -e .``."""

from setuptools import setup

setup()
