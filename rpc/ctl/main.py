"""petcdctl: a command line client that behaves like etcdctl 3.4 (API v3).

Entry point ``main()``; the command tree, the global flags and the glue
between flags, environment, client and printers (ctlv3/ctl.go, global.go).
"""

from __future__ import annotations

import os
import sys

from . import errors, goutil, pflag
from .cobra import Command
from .commands import build_root, unsupported_command_func
from .env import flag_to_env, set_pflags_from_env
from .tls_proxy import InsecureTls

# ------------------------------------------------------------------ global flags


def global_flags() -> list[pflag.Flag]:
    return [
        pflag.string_slice_flag("endpoints", ["127.0.0.1:2379"], "gRPC endpoints"),
        pflag.bool_flag("debug", False, "enable client-side debug logging"),
        pflag.string_flag("write-out", "simple",
                          "set the output format (fields, json, protobuf, simple, table)", "w"),
        pflag.bool_flag("hex", False, "print byte strings as hex encoded strings"),
        pflag.duration_flag("dial-timeout", 2 * goutil.SECOND, "dial timeout for client connections"),
        pflag.duration_flag("command-timeout", 5 * goutil.SECOND,
                            "timeout for short running command (excluding dial timeout)"),
        pflag.duration_flag("keepalive-time", 2 * goutil.SECOND, "keepalive time for client connections"),
        pflag.duration_flag("keepalive-timeout", 6 * goutil.SECOND,
                            "keepalive timeout for client connections"),
        pflag.bool_flag("insecure-transport", True, "disable transport security for client connections"),
        pflag.bool_flag("insecure-discovery", True,
                        "accept insecure SRV records describing cluster endpoints"),
        pflag.bool_flag("insecure-skip-tls-verify", False,
                        "skip server certificate verification (CAUTION: this option should be "
                        "enabled only for testing purposes)"),
        pflag.string_flag("cert", "", "identify secure client using this TLS certificate file"),
        pflag.string_flag("key", "", "identify secure client using this TLS key file"),
        pflag.string_flag("cacert", "", "verify certificates of TLS-enabled secure servers using this CA bundle"),
        pflag.string_flag("user", "", "username[:password] for authentication (prompt if password is not supplied)"),
        pflag.string_flag("password", "",
                          "password for authentication (if this option is used, --user option "
                          "shouldn't include password)"),
        pflag.string_flag("discovery-srv", "",
                          "domain name to query for SRV records describing cluster endpoints", "d"),
        pflag.string_flag("discovery-srv-name", "", "service name to query when using DNS discovery"),
    ]


# ------------------------------------------------------------------ the Ctl glue


class Ctl:
    """Per-invocation state: the chosen printer and helpers shared by commands."""

    def __init__(self, root_flags: pflag.FlagSet):
        self.root_flags = root_flags
        self.display = None

    def init_display(self, cmd: Command) -> None:
        from .printer import new_printer
        fs = cmd.flags()
        self.display = new_printer(fs.lookup("write-out").v, fs.lookup("hex").v)
        if self.display is None:
            errors.exit_with_error(errors.EXIT_BAD_FEATURE, "unsupported output format")

    def command_ctx(self):
        from .client import deadline_after
        return deadline_after(self.root_flags.lookup("command-timeout").v)

    def client_settings(self, cmd: Command, with_auth: bool = True, env: bool = True) -> dict:
        """clientConfigFromCmd: environment, debug listing, endpoints, TLS and auth."""
        fs = cmd.flags()
        inherited = cmd.inherited_flags()
        if cmd.use.startswith("watch"):
            # etcdctl silences the warnings about these two (they are not flags)
            inherited.add(pflag.Flag("watch-key", _NoValue(), "watch key"))
            inherited.add(pflag.Flag("watch-range-end", _NoValue(), "watch range end"))
        if env:
            set_pflags_from_env(inherited)
            if fs.lookup("debug").v:
                for f in inherited.sorted():
                    errors.err("%s=%s\n" % (flag_to_env("ETCDCTL", f.name), f.value.string()))
        cfg = {
            "endpoints": list(fs.lookup("endpoints").v),
            "dial_timeout": fs.lookup("dial-timeout").v,
            "keepalive_time": fs.lookup("keepalive-time").v,
            "keepalive_timeout": fs.lookup("keepalive-timeout").v,
            "tls": self._tls(fs),
            "auth": None,
        }
        if with_auth:
            cfg["auth"] = self._auth(fs)
        return cfg

    def _tls(self, fs: pflag.FlagSet):
        paths = {}
        for name in ("cert", "key", "cacert"):
            f = fs.lookup(name)
            if f.v == "" and f.changed:
                errors.exit_with_error(errors.EXIT_BAD_ARGS, "empty string is passed to --%s option" % name)
            paths[name] = f.v
        if fs.lookup("insecure-skip-tls-verify").v:
            for name in ("cert", "key"):
                if paths[name]:
                    try:
                        open(paths[name], "rb").close()
                    except OSError as e:
                        errors.exit_with_error(errors.EXIT_BAD_ARGS, "open %s: %s" % (paths[name], _os_err(e)))
            return InsecureTls(paths["cert"], paths["key"])
        if not any(paths.values()):
            return None
        import grpc
        data = {}
        for name, path in paths.items():
            if path:
                try:
                    with open(path, "rb") as fh:
                        data[name] = fh.read()
                except OSError as e:
                    errors.exit_with_error(errors.EXIT_BAD_ARGS, "open %s: %s" % (path, _os_err(e)))
        return grpc.ssl_channel_credentials(root_certificates=data.get("cacert"),
                                            private_key=data.get("key"),
                                            certificate_chain=data.get("cert"))

    def _auth(self, fs: pflag.FlagSet):
        user, password = fs.lookup("user").v, fs.lookup("password").v
        if user == "":
            return None
        if password == "":
            if ":" not in user:
                return user, _ask_password("Password: ")
            name, pw = user.split(":", 1)
            return name, pw
        return user, password

    def must_client_from_cmd(self, cmd: Command):
        cfg = self.client_settings(cmd)
        self.init_display(cmd)
        return self.must_client(cfg)

    def must_client(self, cfg: dict):
        from .client import Client, ClientError
        try:
            return Client(cfg["endpoints"], cfg["dial_timeout"], cfg["keepalive_time"],
                          cfg["keepalive_timeout"], cfg["tls"], cfg["auth"])
        except ClientError as e:
            errors.exit_with_error(errors.EXIT_BAD_CONNECTION, str(e))

    def rpc(self, client, service: str, method: str, req, deadline, repeatable: bool):
        from .client import RPCError, deadline_passed
        try:
            return client.call(service, method, req, deadline, repeatable)
        except RPCError as e:
            errors.exit_with_error(errors.EXIT_ERROR, e.client_message(deadline_passed(deadline)))


class _NoValue(pflag.Value):
    """A placeholder flag value: setting it does nothing, it prints as ""."""

    type_name = "string"

    def __init__(self):
        self.v = ""

    def set(self, s: str) -> None:
        pass

    def string(self) -> str:
        return ""


def _os_err(e: OSError) -> str:
    return {2: "no such file or directory", 13: "permission denied",
            21: "is a directory"}.get(e.errno, (e.strerror or str(e)).lower())


def _ask_password(prompt: str) -> str:
    """bgentry/speakeasy: prompt on stdout, stty -echo around reading stdin."""
    import subprocess

    errors.out(prompt)
    sys.stdout.buffer.flush()
    subprocess.run(["stty", "-echo"], check=False)
    line = sys.stdin.buffer.readline()
    subprocess.run(["stty", "echo"], check=False)
    errors.out("\n")
    return line.rstrip(b"\n").rstrip(b"\r").decode("utf-8", "surrogateescape")


# ------------------------------------------------------------------ execution


def execute(argv: list[str]) -> int:
    api = os.environ.pop("ETCDCTL_API", "")
    if api not in ("", "3"):
        if api == "2":
            errors.err("petcdctl does not implement the v2 API\n")
        else:
            errors.err("unsupported API version %s\n" % api)
        return 1
    root = build_root(global_flags())
    ctl = Ctl(root.persistent)
    ctl.os_args = [sys.argv[0] if sys.argv else "petcdctl"] + list(argv)
    cmd, rest, err = root.find(argv)
    if err is not None:
        errors.err("Error: %s\nRun '%s --help' for usage.\n" % (err, cmd.command_path()))
        errors.exit_with_error(errors.EXIT_ERROR, err)
    if cmd.unsupported:
        unsupported_command_func(ctl, cmd, rest)
    fs = cmd.flags()
    try:
        args = fs.parse(rest)
    except pflag.HelpRequested:
        errors.out(cmd.usage())
        return 0
    except pflag.FlagError as e:
        errors.err("Error: %s\n" % e)
        errors.out(cmd.usage())
        errors.err("\n")
        errors.exit_with_error(errors.EXIT_ERROR, str(e))
    if cmd.help_flag.v or not cmd.runnable():
        errors.out(cmd.usage())
        return 0
    cmd.run(ctl, cmd, args)
    return 0


def main(argv: list[str] | None = None) -> None:
    if argv is None:
        argv = sys.argv[1:]
    try:
        code = execute(argv)
    except errors.CtlExit as e:
        code = e.code
    except KeyboardInterrupt:
        code = 130
    errors.flush_and_exit(code)


if __name__ == "__main__":
    main()
