"""Go standard-library formatting and parsing, as etcdctl (a Go program) does it.

Everything here works on ``bytes`` where Go works on ``string`` (Go strings are
byte strings), so arbitrary binary keys and values survive unchanged.
"""

from __future__ import annotations

import base64
import re
import unicodedata

# --------------------------------------------------------------------------
# strconv


class GoError(Exception):
    """An error value whose text is what Go's err.Error() would return."""


def _utf8_runes(data: bytes):
    """Yield (rune, width) as Go's utf8.DecodeRune walks a byte string.

    Invalid encodings yield (0xFFFD, 1), as in Go.
    """
    i, n = 0, len(data)
    while i < n:
        b0 = data[i]
        if b0 < 0x80:
            yield b0, 1
            i += 1
            continue
        if 0xC2 <= b0 <= 0xDF:
            need, lo, hi = 1, 0x80, 0xBF
        elif b0 == 0xE0:
            need, lo, hi = 2, 0xA0, 0xBF
        elif 0xE1 <= b0 <= 0xEC or 0xEE <= b0 <= 0xEF:
            need, lo, hi = 2, 0x80, 0xBF
        elif b0 == 0xED:
            need, lo, hi = 2, 0x80, 0x9F
        elif b0 == 0xF0:
            need, lo, hi = 3, 0x90, 0xBF
        elif 0xF1 <= b0 <= 0xF3:
            need, lo, hi = 3, 0x80, 0xBF
        elif b0 == 0xF4:
            need, lo, hi = 3, 0x80, 0x8F
        else:
            yield 0xFFFD, 1
            i += 1
            continue
        ok = i + need < n and lo <= data[i + 1] <= hi
        if ok:
            for k in range(2, need + 1):
                if not 0x80 <= data[i + k] <= 0xBF:
                    ok = False
                    break
        if not ok:
            yield 0xFFFD, 1
            i += 1
            continue
        yield ord(data[i:i + need + 1].decode("utf-8")), need + 1
        i += need + 1


def is_print(r: int) -> bool:
    """Go's unicode.IsPrint: letters, marks, numbers, punctuation, symbols and ASCII space."""
    if r == 0x20:
        return True
    if r < 0x20 or r == 0x7F:
        return False
    cat = unicodedata.category(chr(r))
    return cat[0] in "LMNPS"


def quote(data: bytes) -> str:
    """strconv.Quote / fmt's %q applied to a Go string holding ``data``."""
    out = ['"']
    i = 0
    for r, width in _utf8_runes(data):
        if width == 1 and r == 0xFFFD:
            out.append("\\x%02x" % data[i])
        else:
            out.append(_quote_rune(r))
        i += width
    out.append('"')
    return "".join(out)


def _quote_rune(r: int) -> str:
    if r == ord('"') or r == ord("\\"):
        return "\\" + chr(r)
    if is_print(r):
        return chr(r)
    esc = {7: "\\a", 8: "\\b", 12: "\\f", 10: "\\n", 13: "\\r", 9: "\\t", 11: "\\v"}
    if r in esc:
        return esc[r]
    if r < 0x20 or r == 0x7F:
        return "\\x%02x" % r
    if r < 0x10000:
        return "\\u%04x" % r
    return "\\U%08x" % r


def unquote(s: bytes) -> bytes:
    """strconv.Unquote for a double-quoted or back-quoted Go literal."""
    if len(s) < 2 or s[0] != s[-1] or s[0] not in b'"`':
        raise GoError("invalid syntax")
    q = s[0]
    body = s[1:-1]
    if q == ord("`"):
        if b"`" in body:
            raise GoError("invalid syntax")
        return body.replace(b"\r", b"")
    if b"\n" in body:
        raise GoError("invalid syntax")
    out = bytearray()
    i, n = 0, len(body)
    simple = {ord("a"): 7, ord("b"): 8, ord("f"): 12, ord("n"): 10, ord("r"): 13,
              ord("t"): 9, ord("v"): 11, ord("\\"): 92, ord('"'): 34}
    while i < n:
        c = body[i]
        if c == q:
            raise GoError("invalid syntax")
        if c != ord("\\"):
            out.append(c)
            i += 1
            continue
        i += 1
        if i >= n:
            raise GoError("invalid syntax")
        c = body[i]
        i += 1
        if c in simple:
            out.append(simple[c])
        elif c in b"xuU":
            size = {ord("x"): 2, ord("u"): 4, ord("U"): 8}[c]
            digits = body[i:i + size]
            if len(digits) < size or not all(chr(d) in "0123456789abcdefABCDEF" for d in digits):
                raise GoError("invalid syntax")
            v = int(digits, 16)
            i += size
            if c == ord("x"):
                out.append(v)
            else:
                if v > 0x10FFFF or 0xD800 <= v <= 0xDFFF:
                    raise GoError("invalid syntax")
                out += chr(v).encode("utf-8")
        elif ord("0") <= c <= ord("7"):
            digits = body[i - 1:i + 2]
            if len(digits) < 3 or not all(ord("0") <= d <= ord("7") for d in digits):
                raise GoError("invalid syntax")
            v = int(digits, 8)
            if v > 255:
                raise GoError("invalid syntax")
            out.append(v)
            i += 2
        else:
            raise GoError("invalid syntax")
    return bytes(out)


def _num_error(fn: str, s: str, msg: str) -> GoError:
    return GoError("strconv.%s: parsing %s: %s" % (fn, quote(s.encode("utf-8", "surrogateescape")), msg))


def parse_int(s: str, base: int = 10, bits: int = 64, fn: str = "ParseInt") -> int:
    """strconv.ParseInt (base 0 handles 0x/0o/0b prefixes, leading-0 octal and underscores)."""
    orig = s
    if s == "":
        raise _num_error(fn, orig, "invalid syntax")
    neg = False
    if s[0] in "+-":
        neg = s[0] == "-"
        s = s[1:]
    if s == "":
        raise _num_error(fn, orig, "invalid syntax")
    allow_us = False
    if base == 0:
        base = 10
        if s[0] == "0":
            if len(s) >= 3 and s[1] in "xX":
                base, s = 16, s[2:]
            elif len(s) >= 3 and s[1] in "oO":
                base, s = 8, s[2:]
            elif len(s) >= 3 and s[1] in "bB":
                base, s = 2, s[2:]
            else:
                base, s = 8, s[1:] or "0"
            allow_us = True
        else:
            allow_us = True
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"[:base]
    if allow_us and "_" in s:
        if not _underscore_ok(orig.lstrip("+-")):
            raise _num_error(fn, orig, "invalid syntax")
        s = s.replace("_", "")
    if s == "" or any(ch.lower() not in digits for ch in s):
        raise _num_error(fn, orig, "invalid syntax")
    v = int(s, base)
    cutoff = 1 << (bits - 1)
    if (not neg and v >= cutoff) or (neg and v > cutoff):
        raise _num_error(fn, orig, "value out of range")
    return -v if neg else v


def parse_uint(s: str, base: int = 10, bits: int = 64) -> int:
    """strconv.ParseUint (no sign accepted)."""
    fn = "ParseUint"
    if s == "" or s[0] in "+-":
        raise _num_error(fn, s, "invalid syntax")
    if base == 0:
        v = parse_int(s, 0, bits + 1, fn)  # same prefix rules; range checked below
    else:
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[:base]
        if any(ch.lower() not in digits for ch in s):
            raise _num_error(fn, s, "invalid syntax")
        v = int(s, base)
    if v >= 1 << bits:
        raise _num_error(fn, s, "value out of range")
    return v


def _underscore_ok(s: str) -> bool:
    saw = "^"
    i = 0
    hexa = False
    if len(s) >= 2 and s[0] == "0" and s[1].lower() in "bxo":
        i = 2
        saw = "0"
        hexa = s[1].lower() == "x"
    while i < len(s):
        ch = s[i]
        if ch.isdigit() or (hexa and ch.lower() in "abcdef"):
            saw = "0"
        elif ch == "_":
            if saw != "0":
                return False
            saw = "_"
        else:
            if saw == "_":
                return False
            saw = "!"
        i += 1
    return saw != "_"


def parse_bool(s: str) -> bool:
    if s in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if s in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise _num_error("ParseBool", s, "invalid syntax")


# --------------------------------------------------------------------------
# time.Duration

NANOSECOND = 1
MICROSECOND = 1000
MILLISECOND = 1000 * MICROSECOND
SECOND = 1000 * MILLISECOND
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE

_UNITS = {"ns": NANOSECOND, "us": MICROSECOND, "µs": MICROSECOND, "μs": MICROSECOND,
          "ms": MILLISECOND, "s": SECOND, "m": MINUTE, "h": HOUR}


def parse_duration(s: str) -> int:
    """time.ParseDuration, returning nanoseconds."""
    orig = s
    qs = quote(orig.encode("utf-8", "surrogateescape"))
    neg = False
    if s and s[0] in "-+":
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if s == "":
        raise GoError("time: invalid duration " + qs)
    total = 0
    while s:
        m = re.match(r"([0-9]*)(\.([0-9]*))?", s)
        intpart, _, frac = m.group(1), m.group(2), m.group(3)
        if intpart == "" and (frac is None or frac == ""):
            raise GoError("time: invalid duration " + qs)
        s = s[m.end():]
        um = re.match(r"[^0-9.]*", s)
        unit = um.group(0)
        if unit == "":
            raise GoError("time: missing unit in duration " + qs)
        if unit not in _UNITS:
            raise GoError("time: unknown unit " + quote(unit.encode("utf-8", "surrogateescape"))
                          + " in duration " + qs)
        s = s[um.end():]
        mult = _UNITS[unit]
        v = int(intpart or "0") * mult
        if frac:
            v += int(int(frac) * mult // (10 ** len(frac)))
        total += v
        if total > (1 << 63) - 1:
            raise GoError("time: invalid duration " + qs)
    return -total if neg else total


def _fmt_frac(v: int, prec: int):
    digits = []
    printed = False
    for _ in range(prec):
        digit = v % 10
        printed = printed or digit != 0
        if printed:
            digits.append(str(digit))
        v //= 10
    frac = ""
    if printed:
        frac = "." + "".join(reversed(digits))
    return frac, v


def duration_string(d: int) -> str:
    """time.Duration.String()."""
    neg = d < 0
    u = -d if neg else d
    if u < SECOND:
        if u == 0:
            return "0s"
        if u < MICROSECOND:
            prec, unit = 0, "ns"
        elif u < MILLISECOND:
            prec, unit = 3, "µs"
        else:
            prec, unit = 6, "ms"
        frac, u = _fmt_frac(u, prec)
        s = str(u) + frac + unit
    else:
        frac, u = _fmt_frac(u, 9)
        s = str(u % 60) + frac + "s"
        u //= 60
        if u > 0:
            s = str(u % 60) + "m" + s
            u //= 60
            if u > 0:
                s = str(u) + "h" + s
    return ("-" if neg else "") + s


# --------------------------------------------------------------------------
# encoding/json and zap string encoders


def json_string(s: str | bytes) -> str:
    """encoding/json's encoding of a Go string (HTML-safe escaping)."""
    if isinstance(s, str):
        s = s.encode("utf-8", "surrogateescape")
    out = ['"']
    i = 0
    for r, width in _utf8_runes(s):
        if width == 1 and r == 0xFFFD and s[i] != 0xEF:
            out.append("\\ufffd")
        elif r < 0x80:
            c = chr(r)
            if c == '"':
                out.append('\\"')
            elif c == "\\":
                out.append("\\\\")
            elif c == "\n":
                out.append("\\n")
            elif c == "\r":
                out.append("\\r")
            elif c == "\t":
                out.append("\\t")
            elif r < 0x20 or c in "<>&":
                out.append("\\u%04x" % r)
            else:
                out.append(c)
        elif r in (0x2028, 0x2029):
            out.append("\\u%04x" % r)
        else:
            out.append(chr(r))
        i += width
    out.append('"')
    return "".join(out)


def zap_string(s: str | bytes) -> str:
    """zap's JSON encoder escaping of a string value."""
    if isinstance(s, str):
        s = s.encode("utf-8", "surrogateescape")
    out = ['"']
    i = 0
    for r, width in _utf8_runes(s):
        if width == 1 and r == 0xFFFD and s[i] != 0xEF:
            out.append("\\ufffd")
        elif r < 0x80:
            c = chr(r)
            if c == '"':
                out.append('\\"')
            elif c == "\\":
                out.append("\\\\")
            elif c == "\n":
                out.append("\\n")
            elif c == "\r":
                out.append("\\r")
            elif c == "\t":
                out.append("\\t")
            elif r < 0x20:
                out.append("\\u%04x" % r)
            else:
                out.append(c)
        else:
            out.append(chr(r))
        i += width
    out.append('"')
    return "".join(out)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def errno_text(e: OSError) -> str:
    """An OS error as Go's syscall.Errno prints it ("no such file or directory")."""
    text = e.strerror or str(e)
    return text[:1].lower() + text[1:]
