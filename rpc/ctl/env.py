"""ETCDCTL_* environment variables (etcd's pkg/flags.SetPflagsFromEnv) and the
capnslog lines that pkg/flags prints about them."""

from __future__ import annotations

import datetime
import os

from . import errors, goutil, pflag

PREFIX = "ETCDCTL"

# The environment as the process got it (os.Environ() of the commands etcdctl runs),
# before petcdctl itself sets anything.
ORIGINAL_ENVIRON = dict(os.environ)


def flag_to_env(prefix: str, name: str) -> str:
    return prefix + "_" + name.upper().replace("-", "_")


def capnslog(level: str, pkg: str, message: str) -> None:
    now = datetime.datetime.now()
    errors.err("%s %s | %s: %s\n" % (now.strftime("%Y-%m-%d %H:%M:%S.%f"), level, pkg, message))


def set_pflags_from_env(fs: pflag.FlagSet, prefix: str = PREFIX) -> None:
    """Apply ETCDCTL_<FLAG> for every flag in ``fs`` not given on the command line.

    Invalid values are ignored (etcdctl drops the error); a variable that is
    also given as a flag is fatal; unknown ETCDCTL_ variables are warned about.
    """
    already_set: set[str] = set()
    used: set[str] = set()
    for f in fs.sorted():
        key = flag_to_env(prefix, f.name)
        if f.changed:
            already_set.add(key)
        if key not in already_set:
            val = os.environ.get(key, "")
            if val != "":
                used.add(key)
                try:
                    fs.set(f.name, val)
                except pflag.FlagError:
                    pass
    for key, val in os.environ.items():
        if key in used:
            continue
        if key in already_set:
            capnslog("C", "pkg/flags",
                     "conflicting environment variable %s is shadowed by corresponding "
                     "command-line flag (either unset environment variable or disable flag)"
                     % goutil.quote(key.encode("utf-8", "surrogateescape")))
            raise errors.CtlExit(1)
        if key.startswith(prefix + "_"):
            capnslog("W", "pkg/flags", "unrecognized environment variable %s=%s" % (key, val))
