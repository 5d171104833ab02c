"""Shim for Beam's --setup_file (Dataflow workers build an sdist); metadata lives in pyproject.toml."""
from setuptools import setup

setup()
