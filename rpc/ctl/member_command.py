"""``member add|remove|update|list|promote`` (ctlv3/command/member_command.go, etcdctl 3.4.23)."""

from __future__ import annotations

from . import errors, goutil, pflag
from .cobra import Command


def new_member_command(run_for) -> Command:
    """``run_for(name)`` gives the run function of subcommand ``name``."""
    mc = Command("member <subcommand>", "Membership related commands")
    mc.add(
        Command("add <memberName> [options]", "Adds a member into the cluster", run=run_for("add"),
                flags=[pflag.string_flag("peer-urls", "", "comma separated peer URLs for the new member."),
                       pflag.bool_flag("learner", False, "indicates if the new member is raft learner")]),
        Command("remove <memberID>", "Removes a member from the cluster", run=run_for("remove")),
        Command("update <memberID> [options]", "Updates a member in the cluster", run=run_for("update"),
                flags=[pflag.string_flag("peer-urls", "",
                                         "comma separated peer URLs for the updated member.")]),
        Command("list", "Lists all members in the cluster",
                "When --write-out is set to simple, this command prints out comma-separated member "
                "lists for each endpoint.\nThe items in the lists are ID, Status, Name, Peer Addrs, "
                "Client Addrs, Is Learner.\n", run=run_for("list")),
        Command("promote <memberID>", "Promotes a non-voting member in the cluster",
                "Promotes a non-voting learner member to a voting one in the cluster.\n",
                run=run_for("promote")),
    )
    return mc


# ------------------------------------------------------------------ URL checks

def _url_parse_error(u: str) -> str | None:
    """The subset of Go's url.Parse errors a peer URL can run into."""
    q = goutil.quote(u.encode("utf-8", "surrogateescape"))
    rest = u
    i = rest.find(":")
    scheme_ok = True
    if i == 0:
        return "parse %s: missing protocol scheme" % q
    if i > 0:
        scheme = rest[:i]
        if not (scheme[0].isalpha() and all(c.isalnum() or c in "+-." for c in scheme)):
            scheme_ok = False
    if "#" in rest:
        rest = rest[:rest.index("#")]
    if "?" in rest:
        rest = rest[:rest.index("?")]
    if i > 0 and scheme_ok:
        rest = rest[i + 1:]
        if rest.startswith("//"):
            auth = rest[2:]
            j = auth.find("/")
            host = auth if j < 0 else auth[:j]
            if "@" in host:
                host = host[host.rindex("@") + 1:]
            if host.startswith("["):
                k = host.find("]")
                if k < 0:
                    return "parse %s: missing ']' in host" % q
                port = host[k + 1:]
                if port and (port[0] != ":" or not port[1:].isdigit() and port[1:] != ""):
                    return "parse %s: invalid port %s after host" % (q, goutil.quote(port.encode()))
                return None
            full_host = host
            k = host.rfind(":")
            if k >= 0:
                port = host[k:]
                if not all(c.isdigit() for c in port[1:]):
                    return "parse %s: invalid port %s after host" % (q, goutil.quote(port.encode()))
                host = host[:k]
            for c in host:
                if not (c.isalnum() or c in "-._~!$&'()*+,;=%"):
                    return "parse %s: invalid character %s in host name" % (
                        q, goutil.quote(c.encode("utf-8", "surrogateescape")))
            err = _bad_escape(full_host, True) or (_bad_escape(auth[j:], False) if j >= 0 else None)
            if err:
                return "parse %s: invalid URL escape %s" % (q, goutil.quote(err.encode()))
    elif ":" in rest.split("/", 1)[0]:
        return "parse %s: first path segment in URL cannot contain colon" % q
    return None


def _bad_escape(s: str, host: bool) -> str | None:
    """Go's url unescape: the bad escape sequence, if any."""
    hexd = "0123456789abcdefABCDEF"
    i = 0
    while i < len(s):
        if s[i] == "%":
            if i + 2 >= len(s) or s[i + 1] not in hexd or s[i + 2] not in hexd:
                return s[i:i + 3]
            if host and int(s[i + 1], 16) < 8 and s[i:i + 3] != "%25":
                return s[i:i + 3]
            i += 3
            continue
        i += 1
    return None


def check_urls(urls: list[str]) -> str | None:
    """pkg/types.NewURLs, as clientv3 checks peer URLs before sending them."""
    import urllib.parse

    if not urls:
        return "no valid URLs given"
    for raw in urls:
        u = raw.strip()
        err = _url_parse_error(u)
        if err:
            return err
        parts = urllib.parse.urlsplit(u) if "://" in u or ":" in u else None
        scheme = parts.scheme if parts else ""
        if scheme not in ("http", "https", "unix", "unixs"):
            return "URL scheme must be http, https, unix, or unixs: %s" % u
        netloc = parts.netloc
        if "@" in netloc:
            netloc = netloc[netloc.rindex("@") + 1:]
        if not _split_host_port_ok(netloc):
            return 'URL address does not have the form "host:port": %s' % u
        if parts.path != "":
            return "URL must not contain a path: %s" % u
    return None


def _split_host_port_ok(hostport: str) -> bool:
    """net.SplitHostPort succeeds."""
    if hostport.startswith("["):
        end = hostport.find("]")
        return end >= 0 and hostport[end + 1:end + 2] == ":" and ":" not in hostport[end + 2:]
    i = hostport.rfind(":")
    if i < 0:
        return False
    return ":" not in hostport[:i] and "[" not in hostport and "]" not in hostport


# ------------------------------------------------------------------ commands

def _member_id(args: list[str]) -> int:
    if len(args) != 1:
        errors.exit_with_error(errors.EXIT_BAD_ARGS, "member ID is not provided")
    try:
        return goutil.parse_uint(args[0], 16, 64)
    except goutil.GoError as e:
        errors.exit_with_error(errors.EXIT_BAD_ARGS, "bad member ID arg (%s), expecting ID in Hex" % e)


def _peer_urls(cmd: Command) -> tuple[str, list[str]]:
    raw = cmd.local.lookup("peer-urls").v
    if len(raw) == 0:
        errors.exit_with_error(errors.EXIT_BAD_ARGS, "member peer urls not provided")
    return raw, raw.split(",")


def _checked(urls: list[str]) -> None:
    err = check_urls(urls)
    if err:
        errors.exit_with_error(errors.EXIT_ERROR, err)


def member_add_command_func(ctl, cmd: Command, args: list[str]) -> None:
    from petcd.rpc.pb import rpc_pb2

    if len(args) < 1:
        errors.exit_with_error(errors.EXIT_BAD_ARGS, "member name not provided")
    if len(args) > 1:
        ev = "too many arguments"
        for s in args:
            if s.lower().startswith("http"):
                ev += ", did you mean --peer-urls=%s" % s
        errors.exit_with_error(errors.EXIT_BAD_ARGS, ev)
    name = args[0]
    raw, urls = _peer_urls(cmd)
    deadline = ctl.command_ctx()
    client = ctl.must_client_from_cmd(cmd)
    _checked(urls)
    req = rpc_pb2.MemberAddRequest(peerURLs=urls, isLearner=cmd.local.lookup("learner").v)
    resp = ctl.rpc(client, "Cluster", "MemberAdd", req, deadline, repeatable=False)
    new_id = resp.member.ID
    ctl.display.member_add(resp)

    from .printer_simple import SimplePrinter
    if not isinstance(ctl.display, SimplePrinter):
        return
    deadline = ctl.command_ctx()
    list_resp = ctl.rpc(client, "Cluster", "MemberList", rpc_pb2.MemberListRequest(), deadline,
                        repeatable=True)
    member_id = resp.header.member_id
    # the latest member list: after a failover the new member may have an outdated one
    while list_resp.header.member_id != member_id:
        g = ctl.rpc(client, "KV", "Range", rpc_pb2.RangeRequest(key=b"_"), deadline, repeatable=True)
        member_id = g.header.member_id
        list_resp = ctl.rpc(client, "Cluster", "MemberList", rpc_pb2.MemberListRequest(), deadline,
                            repeatable=True)
    conf = []
    for m in list_resp.members:
        for u in m.peerURLs:
            conf.append("%s=%s" % (name if m.ID == new_id else m.name, u))
    errors.out("\n")
    errors.out("ETCD_NAME=%s\n" % goutil.quote(name.encode("utf-8", "surrogateescape")))
    errors.out("ETCD_INITIAL_CLUSTER=%s\n" % goutil.quote(",".join(conf).encode("utf-8", "surrogateescape")))
    errors.out("ETCD_INITIAL_ADVERTISE_PEER_URLS=%s\n" % goutil.quote(raw.encode("utf-8", "surrogateescape")))
    errors.out('ETCD_INITIAL_CLUSTER_STATE="existing"\n')


def member_remove_command_func(ctl, cmd: Command, args: list[str]) -> None:
    from petcd.rpc.pb import rpc_pb2

    mid = _member_id(args)
    deadline = ctl.command_ctx()
    client = ctl.must_client_from_cmd(cmd)
    resp = ctl.rpc(client, "Cluster", "MemberRemove", rpc_pb2.MemberRemoveRequest(ID=mid), deadline,
                   repeatable=False)
    ctl.display.member_remove(mid, resp)


def member_update_command_func(ctl, cmd: Command, args: list[str]) -> None:
    from petcd.rpc.pb import rpc_pb2

    mid = _member_id(args)
    _, urls = _peer_urls(cmd)
    deadline = ctl.command_ctx()
    client = ctl.must_client_from_cmd(cmd)
    _checked(urls)
    resp = ctl.rpc(client, "Cluster", "MemberUpdate", rpc_pb2.MemberUpdateRequest(ID=mid, peerURLs=urls),
                   deadline, repeatable=False)
    ctl.display.member_update(mid, resp)


def member_list_command_func(ctl, cmd: Command, args: list[str]) -> None:
    from petcd.rpc.pb import rpc_pb2

    deadline = ctl.command_ctx()
    client = ctl.must_client_from_cmd(cmd)
    resp = ctl.rpc(client, "Cluster", "MemberList", rpc_pb2.MemberListRequest(), deadline,
                   repeatable=True)
    ctl.display.member_list(resp)


def member_promote_command_func(ctl, cmd: Command, args: list[str]) -> None:
    from petcd.rpc.pb import rpc_pb2

    mid = _member_id(args)
    deadline = ctl.command_ctx()
    client = ctl.must_client_from_cmd(cmd)
    resp = ctl.rpc(client, "Cluster", "MemberPromote", rpc_pb2.MemberPromoteRequest(ID=mid), deadline,
                   repeatable=False)
    ctl.display.member_promote(mid, resp)
