"""A small re-implementation of spf13/pflag's parsing rules and messages."""

from __future__ import annotations

import csv
import io

from . import goutil


class FlagError(Exception):
    """A flag parse error; str() is pflag's message."""


class HelpRequested(Exception):
    """pflag.ErrHelp."""


class Value:
    type_name = ""
    go_varname = ""  # name pflag's FlagUsages prints after the flag

    def set(self, s: str) -> None:
        raise NotImplementedError

    def string(self) -> str:
        raise NotImplementedError


class BoolValue(Value):
    type_name = "bool"

    def __init__(self, v: bool):
        self.v = v

    def set(self, s: str) -> None:
        try:
            self.v = goutil.parse_bool(s)
        except goutil.GoError:
            self.v = False  # Go stores ParseBool's zero result even on error
            raise

    def string(self) -> str:
        return "true" if self.v else "false"


class StringValue(Value):
    type_name = "string"
    go_varname = "string"

    def __init__(self, v: str):
        self.v = v

    def set(self, s: str) -> None:
        self.v = s

    def string(self) -> str:
        return self.v


class Int64Value(Value):
    type_name = "int64"
    go_varname = "int"

    def __init__(self, v: int):
        self.v = v

    def set(self, s: str) -> None:
        try:
            self.v = goutil.parse_int(s, 0, 64)
        except goutil.GoError as e:
            # Go stores ParseInt's result even on error: 0, or the clamped bound.
            if "out of range" in str(e):
                self.v = -(1 << 63) if s.startswith("-") else (1 << 63) - 1
            else:
                self.v = 0
            raise

    def string(self) -> str:
        return str(self.v)


class IntValue(Int64Value):
    type_name = "int"
    go_varname = "int"


class DurationValue(Value):
    type_name = "duration"
    go_varname = "duration"

    def __init__(self, v: int):
        self.v = v

    def set(self, s: str) -> None:
        try:
            self.v = goutil.parse_duration(s)
        except goutil.GoError:
            self.v = 0
            raise

    def string(self) -> str:
        return goutil.duration_string(self.v)


class StringSliceValue(Value):
    type_name = "stringSlice"
    go_varname = "strings"

    def __init__(self, v: list[str]):
        self.v = list(v)
        self.changed = False

    def set(self, s: str) -> None:
        if s == "":
            vals: list[str] = []
        else:
            try:
                vals = next(csv.reader(io.StringIO(s), strict=True))
            except (csv.Error, StopIteration) as e:  # pragma: no cover - rare
                raise goutil.GoError(str(e)) from e
        if not self.changed:
            self.v = vals
        else:
            self.v = self.v + vals
        self.changed = True

    def string(self) -> str:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="").writerow(self.v)
        return "[" + buf.getvalue() + "]"


class Flag:
    def __init__(self, name: str, value: Value, usage: str, shorthand: str = "",
                 no_opt_def_val: str = ""):
        self.name = name
        self.value = value
        self.usage = usage
        self.shorthand = shorthand
        self.no_opt_def_val = no_opt_def_val
        if isinstance(value, BoolValue) and not no_opt_def_val:
            self.no_opt_def_val = "true"
        self.def_value = value.string()
        self.changed = False

    @property
    def v(self):
        return self.value.v

    def default_is_zero(self) -> bool:
        return self.def_value in {"bool": ("false",), "string": ("",), "int64": ("0",), "int": ("0",),
                                  "duration": ("0", "0s"), "stringSlice": ("[]",)}[
            self.value.type_name]


def bool_flag(name, default, usage, shorthand=""):
    return Flag(name, BoolValue(default), usage, shorthand)


def string_flag(name, default, usage, shorthand=""):
    return Flag(name, StringValue(default), usage, shorthand)


def int64_flag(name, default, usage, shorthand=""):
    return Flag(name, Int64Value(default), usage, shorthand)


def int_flag(name, default, usage, shorthand=""):
    return Flag(name, IntValue(default), usage, shorthand)


def duration_flag(name, default, usage, shorthand=""):
    return Flag(name, DurationValue(default), usage, shorthand)


def string_slice_flag(name, default, usage, shorthand=""):
    return Flag(name, StringSliceValue(default), usage, shorthand)


class FlagSet:
    """An ordered set of flags; iteration is sorted by name as pflag's VisitAll."""

    def __init__(self, flags=()):
        self.formal: dict[str, Flag] = {}
        for f in flags:
            self.add(f)
        self.args: list[str] = []

    def add(self, f: Flag) -> None:
        if f.name not in self.formal:
            self.formal[f.name] = f

    def lookup(self, name: str) -> Flag | None:
        return self.formal.get(name)

    def shorthand_lookup(self, c: str) -> Flag | None:
        for f in self.formal.values():
            if f.shorthand == c:
                return f
        return None

    def sorted(self) -> list[Flag]:
        return [self.formal[k] for k in sorted(self.formal)]

    def __len__(self):
        return len(self.formal)

    # -- setting ---------------------------------------------------------

    def set_flag(self, f: Flag, value: str) -> None:
        try:
            f.value.set(value)
        except goutil.GoError as e:
            if f.shorthand:
                name = "-%s, --%s" % (f.shorthand, f.name)
            else:
                name = "--%s" % f.name
            raise FlagError("invalid argument %s for %s flag: %s"
                            % (goutil.quote(_b(value)), goutil.quote(_b(name)), e)) from None
        f.changed = True

    def set(self, name: str, value: str) -> None:
        """FlagSet.Set (used for environment variables)."""
        f = self.formal.get(name)
        if f is None:
            raise FlagError("no such flag -%s" % name)
        self.set_flag(f, value)

    # -- parsing -----------------------------------------------------------

    def parse(self, arguments: list[str]) -> list[str]:
        self.args = []
        args = list(arguments)
        while args:
            s = args.pop(0)
            if len(s) == 0 or s[0] != "-" or len(s) == 1:
                self.args.append(s)
                continue
            if s[1] == "-":
                if len(s) == 2:
                    self.args.extend(args)
                    break
                args = self._parse_long(s, args)
            else:
                args = self._parse_short(s, args)
        return self.args

    def _parse_long(self, s: str, args: list[str]) -> list[str]:
        name = s[2:]
        if len(name) == 0 or name[0] == "-" or name[0] == "=":
            raise FlagError("bad flag syntax: %s" % s)
        split = name.split("=", 1)
        name = split[0]
        f = self.formal.get(name)
        if f is None:
            if name == "help":
                raise HelpRequested()
            raise FlagError("unknown flag: --%s" % name)
        if len(split) == 2:
            value = split[1]
        elif f.no_opt_def_val:
            value = f.no_opt_def_val
        elif args:
            value = args.pop(0)
        else:
            raise FlagError("flag needs an argument: %s" % s)
        self.set_flag(f, value)
        return args

    def _parse_short(self, s: str, args: list[str]) -> list[str]:
        shorthands = s[1:]
        while shorthands:
            shorthands, args = self._parse_single_short(shorthands, args)
        return args

    def _parse_single_short(self, shorthands: str, args: list[str]):
        if shorthands.startswith("test."):
            return "", args
        out_shorts = shorthands[1:]
        c = shorthands[0]
        f = self.shorthand_lookup(c)
        if f is None:
            if c == "h":
                raise HelpRequested()
            raise FlagError("unknown shorthand flag: %s in -%s"
                            % (_quote_rune_go(c), shorthands))
        if len(shorthands) > 2 and shorthands[1] == "=":
            value = shorthands[2:]
            out_shorts = ""
        elif f.no_opt_def_val:
            value = f.no_opt_def_val
        elif len(shorthands) > 1:
            value = shorthands[1:]
            out_shorts = ""
        elif args:
            value = args.pop(0)
        else:
            raise FlagError("flag needs an argument: %s in -%s"
                            % (_quote_rune_go(c), shorthands))
        self.set_flag(f, value)
        return out_shorts, args

    # -- usage ----------------------------------------------------------------

    def flag_usages(self) -> str:
        """pflag's FlagUsages (cobra's default usage template uses it)."""
        lines = []
        maxlen = 0
        for f in self.sorted():
            if f.shorthand:
                line = "  -%s, --%s" % (f.shorthand, f.name)
            else:
                line = "      --%s" % f.name
            varname = f.value.go_varname
            if varname:
                line += " " + varname
            if f.no_opt_def_val:
                t = f.value.type_name
                if t == "string":
                    line += '[="%s"]' % f.no_opt_def_val
                elif t == "bool":
                    if f.no_opt_def_val != "true":
                        line += "[=%s]" % f.no_opt_def_val
                else:
                    line += "[=%s]" % f.no_opt_def_val
            line += "\x00"
            maxlen = max(maxlen, len(line))
            line += f.usage
            if not f.default_is_zero():
                if f.value.type_name == "string":
                    line += " (default %s)" % goutil.quote(_b(f.def_value))
                else:
                    line += " (default %s)" % f.def_value
            lines.append(line)
        out = []
        for line in lines:
            sidx = line.index("\x00")
            spacing = " " * (maxlen - sidx)
            out.append(line[:sidx] + " " + spacing + " "
                       + line[sidx + 1:].replace("\n", "\n" + " " * (maxlen + 2)) + "\n")
        return "".join(out)


def _b(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


def _quote_rune_go(c: str) -> str:
    """%q of a byte/rune value (Go quotes it as a character literal)."""
    r = ord(c)
    if c == "'":
        return "'\\''"
    q = goutil._quote_rune(r)  # noqa: SLF001 - shared helper
    if q == '\\"':
        q = '"'
    return "'" + q + "'"
