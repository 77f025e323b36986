"""mnv2_tasks."""
