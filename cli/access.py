"""Token and audit commands: tokens create|list|revoke, whoami, audit (AuthService and
AuditService)."""

from __future__ import annotations

import argparse
import sys

from cli import output, values
from cli.client import Client
from schedcore import pb

ROLES = {"viewer": pb.Role.ROLE_VIEWER, "editor": pb.Role.ROLE_EDITOR, "admin": pb.Role.ROLE_ADMIN}
TOKEN_HEADERS = ("ID", "NAME", "ROLE", "NAMESPACE", "CREATED", "EXPIRES", "REVOKED", "CREATED BY", "COMMANDS")
AUDIT_HEADERS = ("TIME", "ACTION", "ACTOR", "NAMESPACE", "OBJECT", "DETAIL", "REQUEST ID")


def role_name(role: int) -> str:
    return pb.Role.Name(role).removeprefix("ROLE_").lower()


def action_name(action: int) -> str:
    name = pb.AuditAction.Name(action) if action in pb.AuditAction.values() else str(action)
    return name.removeprefix("AUDIT_ACTION_").lower().replace("_", "-")


def commands_cell(token: pb.Token) -> str:
    """Whether the token may create command targets: admins always, others with the flag."""
    if token.role == pb.Role.ROLE_ADMIN:
        return "admin"
    return "yes" if token.allow_command_targets else "no"


def show_token(token: pb.Token) -> list[tuple[str, str]]:
    return [
        ("id", token.id),
        ("name", token.name),
        ("role", role_name(token.role)),
        ("namespace", token.namespace or "(every namespace)"),
        ("created", output.when(token.create_time, token.HasField("create_time"))),
        ("expires", output.when(token.expire_time, token.HasField("expire_time"))),
        ("revoked", output.when(token.revoke_time, token.HasField("revoke_time"))),
        ("created by", token.created_by or "-"),
        ("command targets", {"admin": "yes (admin)"}.get(commands_cell(token), commands_cell(token))),
    ]


def create(client: Client, args: argparse.Namespace) -> None:
    request = pb.CreateTokenRequest(
        token=pb.Token(
            name=args.name,
            role=ROLES[args.role],
            namespace=args.namespace or "",
            allow_command_targets=args.allow_command_targets,
        )
    )
    if args.ttl:
        request.ttl.CopyFrom(values.duration("--ttl", args.ttl))
    reply = client.call(client.auth.CreateToken, request)
    if args.output == "json":
        output.print_json({"token": output.to_json(reply.token), "secret": reply.secret})
        return
    output.details([*show_token(reply.token), ("secret", reply.secret)])
    print("(the secret is shown only now: keep it, e.g. export SCHEDCTL_TOKEN=...)", file=sys.stderr)


def list_tokens(client: Client, args: argparse.Namespace) -> None:
    request = pb.ListTokensRequest(show_revoked=args.show_revoked, page_token=args.page_token or "")
    found, more = client.pages(client.auth.ListTokens, request, "tokens", None if args.all else args.limit)
    rows = [
        (
            t.id,
            output.short(t.name, 40),
            role_name(t.role),
            t.namespace or "*",
            output.when(t.create_time),
            output.when(t.expire_time, t.HasField("expire_time")),
            output.when(t.revoke_time, t.HasField("revoke_time")),
            output.short(t.created_by, 30) or "-",
            commands_cell(t),
        )
        for t in found
    ]
    output.listing(args.output, "tokens", found, more, TOKEN_HEADERS, rows)


def revoke(client: Client, args: argparse.Namespace) -> None:
    token = client.call(client.auth.RevokeToken, pb.RevokeTokenRequest(id=args.id)).token
    if args.output == "json":
        output.print_json(output.to_json(token))
    else:
        print(f"revoked {token.id} ({token.name})")


def whoami(client: Client, args: argparse.Namespace) -> None:
    token = client.call(client.auth.WhoAmI, pb.WhoAmIRequest()).token
    if args.output == "json":
        output.print_json(output.to_json(token))
        return
    if not token.id:
        print("anonymous admin: the api runs without authentication (AUTH_MODE=none)")
        return
    output.details(show_token(token))


def audit(client: Client, args: argparse.Namespace) -> None:
    request = pb.ListAuditEventsRequest(
        task_id=args.task or "",
        namespace=args.namespace or "",
        actor_token_id=args.actor or "",
        page_token=args.page_token or "",
    )
    if args.since:
        request.start_time.CopyFrom(values.since("--since", args.since))
    if args.until:
        request.end_time.CopyFrom(values.instant("--until", args.until))
    found, more = client.pages(
        client.audit.ListAuditEvents, request, "events", None if args.all else args.limit
    )
    names = client.task_names(e.task_id for e in found) if args.output != "json" else {}
    rows = [
        (
            output.when(e.time),
            action_name(e.action),
            output.short(e.actor, 30) or "-",
            e.namespace or "*",
            _acted_on(e, names),
            e.execution_id or ",".join(e.update_mask.paths) or "-",
            e.request_id or "-",
        )
        for e in found
    ]
    output.listing(args.output, "events", found, more, AUDIT_HEADERS, rows)


def _acted_on(event: pb.AuditEvent, task_names: dict[str, str]) -> str:
    """The OBJECT cell: the task (by name), token or channel an event is about."""
    if event.task_id:
        return f"{output.short(task_names.get(event.task_id, '?'), 30)} ({event.task_id})"
    if event.token_id:
        return f"token {event.token_id}"
    return f"channel {event.channel_id}" if event.channel_id else "-"


def paging(p: argparse.ArgumentParser) -> None:
    """The flags of a list command: --limit, --all, --page-token."""
    p.add_argument("--limit", type=values.positive_int, default=50, help="at most this many (default 50)")
    p.add_argument("--all", action="store_true", help="every page")
    p.add_argument("--page-token", help="continue a listing")


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("tokens", parents=[common], help="create, list and revoke API tokens (admin)")
    subs = p.add_subparsers(dest="tokens_command", metavar="{create,list,revoke}", required=True)

    q = subs.add_parser("create", parents=[common], help="create a token; its secret is printed once")
    q.add_argument("--name", required=True, help="who or what holds it (shown in the audit trail)")
    q.add_argument("--role", required=True, choices=list(ROLES))
    q.add_argument("--namespace", help="limit it to this namespace (default: every namespace)")
    q.add_argument("--ttl", metavar="DURATION", help="lifetime such as 90d or 12h (default: no expiry)")
    q.add_argument(
        "--allow-command-targets",
        action="store_true",
        help="an editor token may create command targets (admins always may)",
    )
    q.set_defaults(func=create)

    q = subs.add_parser("list", parents=[common], help="list tokens, newest first (never their secrets)")
    q.add_argument("--show-revoked", action="store_true", help="also revoked and expired ones")
    paging(q)
    q.set_defaults(func=list_tokens)

    q = subs.add_parser("revoke", parents=[common], help="revoke a token: calls with it fail from now on")
    q.add_argument("id")
    q.set_defaults(func=revoke)

    p = sub.add_parser("whoami", parents=[common], help="show the token this client sends")
    p.set_defaults(func=whoami)

    p = sub.add_parser("audit", parents=[common], help="list the audit trail, newest first")
    p.add_argument("--task", metavar="ID", help="only events about this task")
    p.add_argument("--namespace", help="only events in this namespace")
    p.add_argument("--actor", metavar="TOKEN_ID", help="only events done with this token")
    p.add_argument("--since", metavar="TIME", help="at or after: ISO 8601, or a duration back (10m)")
    p.add_argument("--until", metavar="TIME", help="before (ISO 8601)")
    paging(p)
    p.set_defaults(func=audit)
