"""Hydra configuration of the package (shipped as package data; see mnv2_tasks/cli.py)."""
