"""fleetrun.executors."""
