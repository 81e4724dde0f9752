"""The application layer: what a user runs (CLI, centralized mode, simulation runner, demo, report)."""
