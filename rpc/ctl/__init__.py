"""petcd.rpc.ctl."""
