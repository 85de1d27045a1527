"""petcd.actors."""
