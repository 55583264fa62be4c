"""fleetrun.report."""
