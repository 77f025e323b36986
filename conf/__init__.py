"""Hydra configuration of mnv2_tasks: conf/ in a checkout, shipped in the wheel as the package ``mnv2_tasks.conf``."""
