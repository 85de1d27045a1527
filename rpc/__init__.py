"""petcd.rpc."""
