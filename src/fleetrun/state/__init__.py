"""fleetrun.state."""
