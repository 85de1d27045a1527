"""petcd.sim."""
