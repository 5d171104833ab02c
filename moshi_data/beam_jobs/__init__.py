"""Thin Apache Beam wiring and command-line entry points."""
