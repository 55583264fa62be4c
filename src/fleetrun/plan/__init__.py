"""fleetrun.plan."""
