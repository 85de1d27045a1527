"""The parts of spf13/cobra (as configured by etcdctl 3.4) that shape its output:
command lookup (with prefix matching and suggestions), flag merging and
etcdctl's usage template, plus cobra's default usage template (which the txn
command's request parser prints).
"""

from __future__ import annotations

from . import goutil, pflag
from .tabwriter import format_tabs

API_VERSION = "3.4"


def petcd_version() -> str:
    """petcdctl's own version (the installed petcd's), which it gives where etcdctl gives its own."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("petcd")
    except PackageNotFoundError:
        return "0.0.0+unknown"


class Command:
    def __init__(self, use: str, short: str = "", long: str = "", run=None,
                 flags=(), persistent_flags=(), unsupported: bool = False):
        self.use = use
        self.short = short
        self.long = long
        self.run = run
        self.local = pflag.FlagSet(flags)
        self.persistent = pflag.FlagSet(persistent_flags)
        self.parent: Command | None = None
        self.commands: list[Command] = []
        self.unsupported = unsupported
        self.help_flag: pflag.Flag | None = None

    # -- tree ----------------------------------------------------------------

    def add(self, *cmds: "Command") -> "Command":
        for c in cmds:
            c.parent = self
            self.commands.append(c)
        return self

    @property
    def name(self) -> str:
        return self.use.split(" ", 1)[0] if self.use else ""

    def root(self) -> "Command":
        c = self
        while c.parent is not None:
            c = c.parent
        return c

    def command_path(self) -> str:
        if self.parent is not None:
            return self.parent.command_path() + " " + self.name
        return self.name

    def runnable(self) -> bool:
        return self.run is not None

    def available(self) -> bool:
        if self.parent is not None and self.name == "help":
            return False
        return self.runnable() or any(c.available() for c in self.commands)

    def sorted_commands(self) -> list["Command"]:
        return sorted(self.commands, key=lambda c: c.name)

    # -- flags ---------------------------------------------------------------

    def ensure_help_flag(self) -> None:
        if self.help_flag is None:
            name = self.name or "this command"
            self.help_flag = pflag.bool_flag("help", False, "help for " + name, "h")
            self.local.add(self.help_flag)

    def parents_persistent(self) -> pflag.FlagSet:
        fs = pflag.FlagSet()
        p = self.parent
        while p is not None:
            for f in p.persistent.formal.values():
                fs.add(f)
            p = p.parent
        return fs

    def flags(self, include_help: bool = True) -> pflag.FlagSet:
        """All flags a command parses: its own, its persistent ones, its parents' persistent ones.

        cobra adds the -h/--help flag only when it executes a command, so its
        command lookup (``include_help=False``) does not know about it.
        """
        if include_help:
            self.ensure_help_flag()
        fs = pflag.FlagSet()
        for f in self.local.formal.values():
            if include_help or f is not self.help_flag:
                fs.add(f)
        for f in self.persistent.formal.values():
            fs.add(f)
        for f in self.parents_persistent().formal.values():
            fs.add(f)
        return fs

    def local_flags(self, include_help: bool = True) -> pflag.FlagSet:
        if include_help:
            self.ensure_help_flag()
        parents = self.parents_persistent()
        fs = pflag.FlagSet()
        for f in list(self.local.formal.values()) + list(self.persistent.formal.values()):
            if not include_help and f is self.help_flag:
                continue
            if parents.lookup(f.name) is None:
                fs.add(f)
        return fs

    def inherited_flags(self) -> pflag.FlagSet:
        local = self.local_flags()
        fs = pflag.FlagSet()
        for f in self.parents_persistent().formal.values():
            if local.lookup(f.name) is None:
                fs.add(f)
        return fs

    def has_available_flags(self) -> bool:
        return len(self.flags()) > 0

    def use_line(self) -> str:
        if self.parent is not None:
            line = self.parent.command_path() + " " + self.use
        else:
            line = self.use
        if self.has_available_flags() and "[flags]" not in line:
            line += " [flags]"
        return line

    # -- lookup (cobra's Find) ---------------------------------------------------

    def find_next(self, nxt: str) -> "Command | None":
        matches = []
        for c in self.commands:
            if c.name == nxt:
                return c
            if c.name.startswith(nxt):  # cobra.EnablePrefixMatching = true in etcdctl
                matches.append(c)
        if len(matches) == 1:
            return matches[0]
        return None

    def find(self, args: list[str]):
        """Return (command, remaining args, error message or None)."""
        def inner(c: Command, inner_args: list[str]):
            wo = strip_flags(inner_args, c)
            if not wo:
                return c, inner_args
            nxt = c.find_next(wo[0])
            if nxt is not None:
                return inner(nxt, args_minus_first(c, inner_args, wo[0]))
            return c, inner_args

        found, rest = inner(self, args)
        if found.commands and found.parent is None:
            wo = strip_flags(rest, found)
            if wo:
                return found, rest, "unknown command %s for %s%s" % (
                    goutil.quote(_b(wo[0])), goutil.quote(_b(found.command_path())),
                    found.find_suggestions(wo[0]))
        return found, rest, None

    def find_suggestions(self, arg: str) -> str:
        sugg = []
        for c in self.commands:
            if not c.available():
                continue
            if _levenshtein(arg.lower(), c.name.lower()) <= 2 or c.name.lower().startswith(arg.lower()):
                sugg.append(c.name)
        if not sugg:
            return ""
        return "\n\nDid you mean this?\n" + "".join("\t%s\n" % s for s in sugg)

    # -- usage -------------------------------------------------------------------

    def all_subcommands(self) -> list["Command"]:
        out = []
        for c in self.sorted_commands():
            out.append(c)
            out.extend(c.all_subcommands())
        return out

    def usage(self, include_help: bool = True) -> str:
        """etcdctl's usage text (ctlv3/help.go template through a tabwriter).

        ``include_help=False`` renders a command whose -h flag cobra has not
        added yet (the root, when ``help`` shows it for an unknown topic).
        """
        root = self.root()
        t = "NAME:\n"
        if self.parent is None:
            t += "\t%s - %s\n" % (self.name, self.short)
        else:
            t += "\t%s - %s\n" % (cmd_name(self, root), self.short)
        t += "\nUSAGE:\n\t%s\n" % self.use_line()
        if self.parent is None:
            t += "\nVERSION:\n\t%s\n" % petcd_version()
        if self.commands:
            t += "\nAPI VERSION:\n\t%s\n" % API_VERSION
            t += "\n\nCOMMANDS:\n"
            for sub in self.all_subcommands():
                if sub.runnable() and not sub.unsupported:  # help lists only what works
                    t += "\t%s\t%s\n" % (cmd_name(sub, self), sub.short)
        if self.long:
            t += "\nDESCRIPTION:\n"
            for line in self.long.strip("\n\t ").split("\n"):
                t += "\t%s\n" % line
        local = self.local_flags(include_help)
        if len(local):
            t += "\nOPTIONS:\n" + etcd_flag_usages(local)
        inherited = self.inherited_flags()
        if len(inherited):
            t += "\nGLOBAL OPTIONS:\n" + etcd_flag_usages(inherited)
        t += "\n"
        return format_tabs(t)

    def default_usage(self) -> str:
        """cobra's default usage template (used for txn's put/get/del parsers)."""
        t = "Usage:"
        if self.runnable():
            t += "\n  " + self.use_line()
        if any(c.available() for c in self.commands):
            t += "\n  " + self.command_path() + " [command]"
        local = self.local_flags()
        if len(local):
            t += "\n\nFlags:\n" + local.flag_usages().rstrip(" \t\n")
        inherited = self.inherited_flags()
        if len(inherited):
            t += "\n\nGlobal Flags:\n" + inherited.flag_usages().rstrip(" \t\n")
        return t + "\n"


def cmd_name(cmd: Command, start: Command) -> str:
    parts = [cmd.name]
    while cmd.parent is not None and cmd.parent.name != start.name:
        cmd = cmd.parent
        parts.insert(0, cmd.name)
    return " ".join(parts)


def etcd_flag_usages(fs: pflag.FlagSet) -> str:
    out = []
    for f in fs.sorted():
        if f.shorthand:
            s = "  -%s, --%s" % (f.shorthand, f.name)
        else:
            s = "      --%s" % f.name
        if f.no_opt_def_val:
            s += "["
        if f.value.type_name == "string":
            s += "=" + goutil.quote(_b(f.def_value))
        else:
            s += "=" + f.def_value
        if f.no_opt_def_val:
            s += "]"
        s += "\t%s\n" % f.usage
        out.append(s)
    return "".join(out)


def _has_no_opt_def_val(name: str, fs: pflag.FlagSet) -> bool:
    f = fs.lookup(name)
    return f is not None and f.no_opt_def_val != ""


def _short_has_no_opt_def_val(name: str, fs: pflag.FlagSet) -> bool:
    if not name:
        return False
    f = fs.shorthand_lookup(name[0])
    return f is not None and f.no_opt_def_val != ""


def _takes_value(s: str, fs: pflag.FlagSet) -> bool:
    if s.startswith("--") and "=" not in s and not _has_no_opt_def_val(s[2:], fs):
        return True
    return (s.startswith("-") and "=" not in s and len(s) == 2
            and not _short_has_no_opt_def_val(s[1:], fs))


def strip_flags(args: list[str], c: Command) -> list[str]:
    if not args:
        return args
    fs = c.flags(include_help=False)
    commands = []
    args = list(args)
    while args:
        s = args.pop(0)
        if s == "--":
            break
        if _takes_value(s, fs):
            if len(args) <= 1:
                break
            args = args[1:]
            continue
        if s != "" and not s.startswith("-"):
            commands.append(s)
    return commands


def args_minus_first(c: Command, args: list[str], x: str) -> list[str]:
    fs = c.flags(include_help=False)
    pos = 0
    while pos < len(args):
        s = args[pos]
        if s == "--":
            break
        if _takes_value(s, fs):
            pos += 2
            continue
        if not s.startswith("-") and s == x:
            return args[:pos] + args[pos + 1:]
        pos += 1
    return args


def _levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _b(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")
