"""petcd.rpc.pb."""
