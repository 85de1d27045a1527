"""Suite-wide setup."""

import signal

# A suite started in the background by a non-interactive shell (as CI may start it) inherits
# SIGINT ignored, and every process it starts would too: etcdctl watch, lock and elect, which
# tests stop with SIGINT as a user's Ctrl-C does, would never exit. Python's own handler here
# means exec'd children get the default action again.
signal.signal(signal.SIGINT, signal.default_int_handler)
