"""fleetrun.engine."""
