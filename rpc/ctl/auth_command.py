"""``auth enable|disable``, ``user add|delete|get|list|passwd|grant-role|revoke-role`` and
``role add|delete|get|list|grant-permission|revoke-permission``
(ctlv3/command/auth_command.go, user_command.go, role_command.go, etcdctl 3.4.23).

etcdctl 3.4 has no ``auth status`` (3.5 added it): ``auth status`` prints the auth group's help.

``auth enable`` runs under --command-timeout; the user and role commands use context.TODO(),
so they wait for the server as long as it takes.  UserGet, UserList, RoleGet and RoleList are
retried by clientv3 as repeatable, the others not.  A password is read before the client is
made: interactively as bgentry/speakeasy does (prompt on stdout, ``/bin/stty -echo`` around a
byte-by-byte read of one line from stdin, then a newline), or with ``--interactive=false`` as
Go's ``fmt.Scanf("%s")`` (one space-separated word; a leading newline or no input gives "").
"""

from __future__ import annotations

import os
import subprocess

from . import errors, pflag
from .cobra import Command


def new_auth_command(run_for) -> Command:
    """``run_for(name)`` gives the run function of subcommand ``name``."""
    ac = Command("auth <enable or disable>", "Enable or disable authentication")
    ac.add(
        Command("enable", "Enables authentication", run=run_for("enable")),
        Command("disable", "Disables authentication", run=run_for("disable")),
    )
    return ac


def new_user_command(run_for) -> Command:
    uc = Command("user <subcommand>", "User related commands")
    uc.add(
        Command("add <user name or user:password> [options]", "Adds a new user", run=run_for("add"),
                flags=[pflag.bool_flag("interactive", True, "Read password from stdin instead of interactive terminal"),
                       pflag.string_flag("new-user-password", "", "Supply password from the command line flag"),
                       pflag.bool_flag("no-password", False, "Create a user without password (CN based auth only)")]),
        Command("delete <user name>", "Deletes a user", run=run_for("delete")),
        Command("get <user name> [options]", "Gets detailed information of a user", run=run_for("get"),
                flags=[pflag.bool_flag("detail", False, "Show permissions of roles granted to the user")]),
        Command("list", "Lists all users", run=run_for("list")),
        Command("passwd <user name> [options]", "Changes password of user", run=run_for("passwd"),
                flags=[pflag.bool_flag("interactive", True,
                                       "If true, read password from stdin instead of interactive terminal")]),
        Command("grant-role <user name> <role name>", "Grants a role to a user", run=run_for("grant-role")),
        Command("revoke-role <user name> <role name>", "Revokes a role from a user", run=run_for("revoke-role")),
    )
    return uc


def new_role_command(run_for) -> Command:
    rc = Command("role <subcommand>", "Role related commands")
    rc.add(
        Command("add <role name>", "Adds a new role", run=run_for("add")),
        Command("delete <role name>", "Deletes a role", run=run_for("delete")),
        Command("get <role name>", "Gets detailed information of a role", run=run_for("get")),
        Command("list", "Lists all roles", run=run_for("list")),
        Command("grant-permission [options] <role name> <permission type> <key> [endkey]", "Grants a key to a role",
                run=run_for("grant-permission"),
                flags=[pflag.bool_flag("prefix", False, "grant a prefix permission"),
                       pflag.bool_flag("from-key", False, "grant a permission of keys that are greater than or "
                                                          "equal to the given key using byte compare")]),
        Command("revoke-permission <role name> <key> [endkey]", "Revokes a key from a role",
                run=run_for("revoke-permission"),
                flags=[pflag.bool_flag("prefix", False, "revoke a prefix permission"),
                       pflag.bool_flag("from-key", False, "revoke a permission of keys that are greater than or "
                                                          "equal to the given key using byte compare")]),
    )
    return rc


# ------------------------------------------------------------------ helpers

def _b(s: str) -> bytes:
    """A command-line argument as the Go string (bytes) etcdctl holds."""
    return s.encode("utf-8", "surrogateescape")


def _call(ctl, client, method: str, make_req, repeatable: bool = False):
    """An Auth RPC under context.TODO(); a failure exits with ExitError.

    etcdctl sends a name or password that is not valid UTF-8 as it is (Go's protobuf does not
    check string fields); Python's protobuf refuses to hold one, so petcdctl says so."""
    try:
        req = make_req()
    except (UnicodeError, ValueError):
        errors.exit_with_error(errors.EXIT_BAD_FEATURE,
                               "a user name, role name or password that is not valid UTF-8 "
                               "is not supported by petcdctl")
    return ctl.rpc(client, "Auth", method, req, None, repeatable)


def get_prefix_range_end(key: bytes) -> bytes:
    """clientv3.GetPrefixRangeEnd: the key after the last byte below 0xff is incremented and
    the rest dropped; "\\x00" (open ended) when there is none."""
    for i in range(len(key) - 1, -1, -1):
        if key[i] < 0xFF:
            return key[:i] + bytes([key[i] + 1])
    return b"\x00"


# --- reading passwords

STTY = "/bin/stty"


def _stdin_byte() -> bytes:
    try:
        return os.read(0, 1)
    except OSError:
        return b""


def _stty(arg: str) -> str | None:
    """speakeasy's echoOff/echoOn: fork /bin/stty on our stdin/stdout/stderr and wait."""
    try:
        subprocess.run(["stty", arg], executable=STTY, check=False)
    except OSError as e:
        from . import goutil
        return "fork/exec %s: %s" % (STTY, goutil.errno_text(e))
    return None


def speakeasy_ask(prompt: str) -> tuple[bytes, str | None]:
    """speakeasy.Ask: (password, error text or None)."""
    errors.out(prompt)
    errors.flush()
    err = _stty("-echo")
    line = b""
    if err is not None:
        err = "failed turning off console echo for password entry:\n\t" + err
    else:
        while True:
            c = _stdin_byte()
            if c == b"" or c == b"\n":
                break
            line += c
        _stty("echo")
        if line.endswith(b"\r"):
            line = line[:-1]
    errors.out("\n")
    errors.flush()
    return line, err


def read_password_interactive(name: str) -> bytes:
    """readPasswordInteractive: asked twice, refused when empty or different."""
    password1, err1 = speakeasy_ask("Password of %s: " % name)
    if err1 is not None:
        errors.exit_with_error(errors.EXIT_BAD_ARGS, "failed to ask password: %s" % err1)
    if len(password1) == 0:
        errors.exit_with_error(errors.EXIT_BAD_ARGS, "empty password")
    password2, err2 = speakeasy_ask("Type password of %s again for confirmation: " % name)
    if err2 is not None:
        errors.exit_with_error(errors.EXIT_BAD_ARGS, "failed to ask password: %s" % err2)
    if password1 != password2:
        errors.exit_with_error(errors.EXIT_BAD_ARGS, "given passwords are different")
    return password1


# Go's unicode white space as fmt's scanner sees it (fmt/scan.go's space table).
_GO_SPACES = ({0x20, 0x85, 0xA0, 0x1680, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000}
              | set(range(0x09, 0x0E)) | set(range(0x2000, 0x200B)))
_EOF = -1


class _RuneReader:
    """fmt's readRune over os.Stdin: one byte at a time, invalid UTF-8 as U+FFFD (width 1)."""

    def __init__(self):
        self.pending = b""
        self.peeked: int | None = None

    def _byte(self) -> int | None:
        if self.pending:
            b, self.pending = self.pending[0], self.pending[1:]
            return b
        c = _stdin_byte()
        return c[0] if c else None

    def get(self) -> int:
        if self.peeked is not None:
            r, self.peeked = self.peeked, None
            return r
        b0 = self._byte()
        if b0 is None:
            return _EOF
        if b0 < 0x80:
            return b0
        buf = bytes([b0])
        while not _full_rune(buf):
            b = self._byte()
            if b is None:
                break
            buf += bytes([b])
        from . import goutil
        r, width = next(goutil._utf8_runes(buf))  # noqa: SLF001 - Go's DecodeRune
        self.pending = buf[width:] + self.pending
        return r

    def unread(self, r: int) -> None:
        self.peeked = r


def _full_rune(p: bytes) -> bool:
    """utf8.FullRune."""
    x = p[0]
    if x < 0xC2 or x > 0xF4:  # ASCII or invalid: a rune of its own
        return True
    need = 2 if x < 0xE0 else 3 if x < 0xF0 else 4
    if len(p) >= need:
        return True
    lo, hi = {0xE0: (0xA0, 0xBF), 0xED: (0x80, 0x9F), 0xF0: (0x90, 0xBF), 0xF4: (0x80, 0x8F)}.get(x, (0x80, 0xBF))
    if len(p) > 1 and not lo <= p[1] <= hi:
        return True
    if len(p) > 2 and not 0x80 <= p[2] <= 0xBF:
        return True
    return False


def scanf_word() -> bytes:
    """``fmt.Scanf("%s", &password)`` with its error ignored: the word, or "" when the input
    ends or a newline comes first."""
    rr = _RuneReader()

    def skip_space() -> bool:
        while True:
            r = rr.get()
            if r == _EOF:
                return True
            if r == 0x0D:
                nxt = rr.get()
                if nxt == 0x0A:
                    return False  # "\r\n": an unexpected newline
                if nxt != _EOF:
                    rr.unread(nxt)
                continue  # a lone "\r" is a space
            if r == 0x0A:
                return False  # unexpected newline
            if r not in _GO_SPACES:
                rr.unread(r)
                return True

    if not skip_space():
        return b""
    r = rr.get()
    if r == _EOF:
        return b""  # unexpected EOF
    rr.unread(r)
    word = []
    while True:
        r = rr.get()
        if r == _EOF or r in _GO_SPACES:
            break
        word.append(chr(r))
    return "".join(word).encode("utf-8")


def _pw_str(pw: bytes) -> str:
    return pw.decode("utf-8", "surrogateescape")


# ------------------------------------------------------------------ auth

ROOT_ROLE_NOT_EXIST = "etcdserver: root user does not have root role"


def auth_enable_command_func(ctl, cmd: Command, args: list[str]) -> None:
    from petcd.rpc.pb import rpc_pb2

    from .client import RPCError, deadline_passed

    if len(args) != 0:
        errors.exit_with_error(errors.EXIT_BAD_ARGS, "auth enable command does not accept any arguments")
    deadline = ctl.command_ctx()
    client = ctl.must_client_from_cmd(cmd)
    # as etcdctl: a root user without the root role gets it (the role created first), then again
    while True:
        try:
            client.call("Auth", "AuthEnable", rpc_pb2.AuthEnableRequest(), deadline, False)
            break
        except RPCError as e:
            msg = e.client_message(deadline_passed(deadline))
        if msg != ROOT_ROLE_NOT_EXIST:
            errors.exit_with_error(errors.EXIT_ERROR, msg)
        ctl.rpc(client, "Auth", "RoleAdd", rpc_pb2.AuthRoleAddRequest(name="root"), deadline, False)
        ctl.rpc(client, "Auth", "UserGrantRole", rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root"),
                deadline, False)
    errors.out("Authentication Enabled\n")


def auth_disable_command_func(ctl, cmd: Command, args: list[str]) -> None:
    from petcd.rpc.pb import rpc_pb2

    if len(args) != 0:
        errors.exit_with_error(errors.EXIT_BAD_ARGS, "auth disable command does not accept any arguments")
    deadline = ctl.command_ctx()
    client = ctl.must_client_from_cmd(cmd)
    ctl.rpc(client, "Auth", "AuthDisable", rpc_pb2.AuthDisableRequest(), deadline, False)
    errors.out("Authentication Disabled\n")


# ------------------------------------------------------------------ user

def user_add_command_func(ctl, cmd: Command, args: list[str]) -> None:
    from petcd.rpc.pb import auth_pb2, rpc_pb2

    if len(args) != 1:
        errors.exit_with_error(errors.EXIT_BAD_ARGS, "user add command requires user name as its argument")
    no_password = cmd.local.lookup("no-password").v
    from_flag = cmd.local.lookup("new-user-password").v
    password = b""
    if not no_password:
        if from_flag != "":
            user, password = args[0], _b(from_flag)
        elif ":" not in args[0]:
            user = args[0]
            if not cmd.local.lookup("interactive").v:
                password = scanf_word()
            else:
                password = read_password_interactive(args[0])
        else:
            user, pw = args[0].split(":", 1)
            password = _b(pw)
            if len(user) == 0:
                errors.exit_with_error(errors.EXIT_BAD_ARGS, "empty user name is not allowed")
    else:
        user = args[0]
    client = ctl.must_client_from_cmd(cmd)

    def make_req():
        return rpc_pb2.AuthUserAddRequest(name=user, password=_pw_str(password),
                                          options=auth_pb2.UserAddOptions(no_password=no_password))

    resp = _call(ctl, client, "UserAdd", make_req)
    ctl.display.user_add(user, resp)


def user_delete_command_func(ctl, cmd: Command, args: list[str]) -> None:
    from petcd.rpc.pb import rpc_pb2

    if len(args) != 1:
        errors.exit_with_error(errors.EXIT_BAD_ARGS, "user delete command requires user name as its argument")
    client = ctl.must_client_from_cmd(cmd)
    resp = _call(ctl, client, "UserDelete", lambda: rpc_pb2.AuthUserDeleteRequest(name=args[0]))
    ctl.display.user_delete(args[0], resp)


def user_get_command_func(ctl, cmd: Command, args: list[str]) -> None:
    from petcd.rpc.pb import rpc_pb2

    if len(args) != 1:
        errors.exit_with_error(errors.EXIT_BAD_ARGS, "user get command requires user name as its argument")
    name = args[0]
    client = ctl.must_client_from_cmd(cmd)
    resp = _call(ctl, client, "UserGet", lambda: rpc_pb2.AuthUserGetRequest(name=name), repeatable=True)
    if cmd.local.lookup("detail").v:
        errors.out("User: %s\n" % name)
        for role in resp.roles:
            errors.out("\n")
            role_resp = _call(ctl, client, "RoleGet", lambda: rpc_pb2.AuthRoleGetRequest(role=role),
                              repeatable=True)
            ctl.display.role_get(role, role_resp)
    else:
        ctl.display.user_get(name, resp)


def user_list_command_func(ctl, cmd: Command, args: list[str]) -> None:
    from petcd.rpc.pb import rpc_pb2

    if len(args) != 0:
        errors.exit_with_error(errors.EXIT_BAD_ARGS, "user list command requires no arguments")
    client = ctl.must_client_from_cmd(cmd)
    ctl.display.user_list(_call(ctl, client, "UserList", lambda: rpc_pb2.AuthUserListRequest(), repeatable=True))


def user_passwd_command_func(ctl, cmd: Command, args: list[str]) -> None:
    from petcd.rpc.pb import rpc_pb2

    if len(args) != 1:
        errors.exit_with_error(errors.EXIT_BAD_ARGS, "user passwd command requires user name as its argument")
    if not cmd.local.lookup("interactive").v:
        password = scanf_word()
    else:
        password = read_password_interactive(args[0])
    client = ctl.must_client_from_cmd(cmd)
    ctl.display.user_change_password(_call(
        ctl, client, "UserChangePassword",
        lambda: rpc_pb2.AuthUserChangePasswordRequest(name=args[0], password=_pw_str(password))))


def user_grant_role_command_func(ctl, cmd: Command, args: list[str]) -> None:
    from petcd.rpc.pb import rpc_pb2

    if len(args) != 2:
        errors.exit_with_error(errors.EXIT_BAD_ARGS,
                               "user grant command requires user name and role name as its argument")
    client = ctl.must_client_from_cmd(cmd)
    resp = _call(ctl, client, "UserGrantRole",
                 lambda: rpc_pb2.AuthUserGrantRoleRequest(user=args[0], role=args[1]))
    ctl.display.user_grant_role(args[0], args[1], resp)


def user_revoke_role_command_func(ctl, cmd: Command, args: list[str]) -> None:
    from petcd.rpc.pb import rpc_pb2

    if len(args) != 2:
        errors.exit_with_error(errors.EXIT_BAD_ARGS,
                               "user revoke-role requires user name and role name as its argument")
    client = ctl.must_client_from_cmd(cmd)
    resp = _call(ctl, client, "UserRevokeRole",
                 lambda: rpc_pb2.AuthUserRevokeRoleRequest(name=args[0], role=args[1]))
    ctl.display.user_revoke_role(args[0], args[1], resp)


# ------------------------------------------------------------------ role

PERMISSION_TYPES = {"READ": 0, "WRITE": 1, "READWRITE": 2}


def role_add_command_func(ctl, cmd: Command, args: list[str]) -> None:
    from petcd.rpc.pb import rpc_pb2

    if len(args) != 1:
        errors.exit_with_error(errors.EXIT_BAD_ARGS, "role add command requires role name as its argument")
    client = ctl.must_client_from_cmd(cmd)
    ctl.display.role_add(args[0], _call(ctl, client, "RoleAdd", lambda: rpc_pb2.AuthRoleAddRequest(name=args[0])))


def role_delete_command_func(ctl, cmd: Command, args: list[str]) -> None:
    from petcd.rpc.pb import rpc_pb2

    if len(args) != 1:
        errors.exit_with_error(errors.EXIT_BAD_ARGS, "role delete command requires role name as its argument")
    client = ctl.must_client_from_cmd(cmd)
    resp = _call(ctl, client, "RoleDelete", lambda: rpc_pb2.AuthRoleDeleteRequest(role=args[0]))
    ctl.display.role_delete(args[0], resp)


def role_get_command_func(ctl, cmd: Command, args: list[str]) -> None:
    from petcd.rpc.pb import rpc_pb2

    if len(args) != 1:
        errors.exit_with_error(errors.EXIT_BAD_ARGS, "role get command requires role name as its argument")
    client = ctl.must_client_from_cmd(cmd)
    resp = _call(ctl, client, "RoleGet", lambda: rpc_pb2.AuthRoleGetRequest(role=args[0]), repeatable=True)
    ctl.display.role_get(args[0], resp)


def role_list_command_func(ctl, cmd: Command, args: list[str]) -> None:
    from petcd.rpc.pb import rpc_pb2

    if len(args) != 0:
        errors.exit_with_error(errors.EXIT_BAD_ARGS, "role list command requires no arguments")
    client = ctl.must_client_from_cmd(cmd)
    ctl.display.role_list(_call(ctl, client, "RoleList", lambda: rpc_pb2.AuthRoleListRequest(), repeatable=True))


def _perm_range(cmd: Command, args: list[str]) -> tuple[bytes, bytes]:
    """permRange: (key, range end) from ``<key> [endkey]`` and --prefix/--from-key."""
    prefix = cmd.local.lookup("prefix").v
    from_key = cmd.local.lookup("from-key").v
    key = _b(args[0])
    if len(key) == 0:
        if prefix and from_key:
            errors.exit_with_error(errors.EXIT_BAD_ARGS, "--from-key and --prefix flags are mutually exclusive")
        # the empty key stands for the whole key space: ["\x00", <end>)
        return b"\x00", (b"\x00" if prefix or from_key else b"")
    if len(args) == 1:
        if prefix:
            if from_key:
                errors.exit_with_error(errors.EXIT_BAD_ARGS, "--from-key and --prefix flags are mutually exclusive")
            return key, get_prefix_range_end(key)
        if from_key:
            return key, b"\x00"
        return key, b""
    if prefix:
        errors.exit_with_error(errors.EXIT_BAD_ARGS, "unexpected endkey argument with --prefix flag")
    if from_key:
        errors.exit_with_error(errors.EXIT_BAD_ARGS, "unexpected endkey argument with --from-key flag")
    return key, _b(args[1])


def role_grant_permission_command_func(ctl, cmd: Command, args: list[str]) -> None:
    from petcd.rpc.pb import auth_pb2, rpc_pb2

    if len(args) < 3:
        errors.exit_with_error(errors.EXIT_BAD_ARGS, "role grant command requires role name, permission type, "
                                                     "and key [endkey] as its argument")
    perm_type = PERMISSION_TYPES.get(args[1].upper())  # clientv3.StrToPermissionType
    if perm_type is None:
        errors.exit_with_error(errors.EXIT_BAD_ARGS, "invalid permission type: %s" % args[1])
    key, range_end = _perm_range(cmd, args[2:])
    client = ctl.must_client_from_cmd(cmd)
    perm = auth_pb2.Permission(permType=perm_type, key=key, range_end=range_end)
    resp = _call(ctl, client, "RoleGrantPermission",
                 lambda: rpc_pb2.AuthRoleGrantPermissionRequest(name=args[0], perm=perm))
    ctl.display.role_grant_permission(args[0], resp)


def role_revoke_permission_command_func(ctl, cmd: Command, args: list[str]) -> None:
    from petcd.rpc.pb import rpc_pb2

    if len(args) < 2:
        errors.exit_with_error(errors.EXIT_BAD_ARGS, "role revoke-permission command requires role name and "
                                                     "key [endkey] as its argument")
    key, range_end = _perm_range(cmd, args[1:])
    client = ctl.must_client_from_cmd(cmd)
    resp = _call(ctl, client, "RoleRevokePermission",
                 lambda: rpc_pb2.AuthRoleRevokePermissionRequest(role=args[0], key=key, range_end=range_end))
    # etcdctl prints the key as given (not "\x00" for an empty one) and the range end it sent
    ctl.display.role_revoke_permission(args[0], _b(args[1]), range_end, resp)


RUN_FUNCS = {
    "auth": {"enable": "auth_enable_command_func", "disable": "auth_disable_command_func"},
    "user": {"add": "user_add_command_func", "delete": "user_delete_command_func",
             "get": "user_get_command_func", "list": "user_list_command_func",
             "passwd": "user_passwd_command_func", "grant-role": "user_grant_role_command_func",
             "revoke-role": "user_revoke_role_command_func"},
    "role": {"add": "role_add_command_func", "delete": "role_delete_command_func",
             "get": "role_get_command_func", "list": "role_list_command_func",
             "grant-permission": "role_grant_permission_command_func",
             "revoke-permission": "role_revoke_permission_command_func"},
}
