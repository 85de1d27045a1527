"""petcd.store."""
