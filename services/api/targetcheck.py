"""Validation of a task's target (log, http, command): each problem a FieldViolation under
`task.target`, and the normalized target returned (an http method filled in, the URL stripped).

Messages name headers and variables, never their values: a value may be a secret.
"""

from __future__ import annotations

import re

from schedcore import pb, signing
from schedcore.errors import Violations, quote
from schedcore.netpolicy import AddressPolicy
from schedcore.sealing import is_sealed
from services.api.urlcheck import CONTROL, url_problem

MAX_HEADERS = 64
# Bound of an http target's secret headers, names and values together (UTF-8 bytes).
MAX_SECRET_HEADER_BYTES = 16 * 1024
MAX_PROGRAM = 4096
MAX_ARGS = 256
MAX_ARG_BYTES = 32 * 1024
MAX_ENV = 64
MAX_ENV_VALUE_BYTES = 32 * 1024

HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def target(
    v: Violations, target: pb.Target, max_bytes: int, addresses: AddressPolicy | None = None
) -> pb.Target:
    """The normalized target; `max_bytes` bounds an http body."""
    out = pb.Target()
    kind = target.WhichOneof("kind")
    if kind is None:
        v.add("task.target", "required: set log, http or command")
    elif kind == "log":
        out.log.SetInParent()
    elif kind == "command":
        out.command.CopyFrom(_command(v, target.command))
    else:
        out.http.CopyFrom(_http(v, target.http, max_bytes, addresses))
    return out


def _http(
    v: Violations, http: pb.HttpTarget, max_bytes: int, addresses: AddressPolicy | None
) -> pb.HttpTarget:
    path = "task.target.http"
    url = http.url.strip()
    if not url:
        v.add(f"{path}.url", "required")
    elif (problem := url_problem(url, addresses)) is not None:
        v.add(f"{path}.url", problem)
    if http.method not in pb.HttpMethod.values():
        v.add(f"{path}.method", f"unknown method {http.method}")
    _headers(v, http)
    _secret_headers(v, http)
    _signing_secrets(v, http)
    if len(http.body) > max_bytes:
        v.add(f"{path}.body", f"larger than {max_bytes} bytes")
    if http.expected_status and not 100 <= http.expected_status <= 599:
        v.add(f"{path}.expected_status", "must be 0 (any 2xx) or an HTTP status 100-599")
    out = pb.HttpTarget()
    out.CopyFrom(http)
    out.url = url
    if out.method == pb.HttpMethod.HTTP_METHOD_UNSPECIFIED:
        out.method = pb.HttpMethod.HTTP_METHOD_POST
    return out


def _headers(v: Violations, http: pb.HttpTarget) -> None:
    path = "task.target.http.headers"
    if len(http.headers) > MAX_HEADERS:
        v.add(path, f"at most {MAX_HEADERS} headers")
    for name, value in http.headers.items():
        if not HEADER_NAME.match(name):
            v.add(path, f"{quote(name)} is not a valid header name")
        elif CONTROL.search(value.replace("\t", "")):
            v.add(f"{path}[{name}]", "value must not contain control characters (CR, LF)")


def _secret_headers(v: Violations, http: pb.HttpTarget) -> None:
    """Like headers, and no name twice across both maps (case-insensitive)."""
    path = "task.target.http.secret_headers"
    if len(http.secret_headers) > MAX_HEADERS:
        v.add(path, f"at most {MAX_HEADERS} secret headers")
    plain = {name.lower() for name in http.headers}
    seen: set[str] = set()
    size = 0
    for name, value in http.secret_headers.items():
        # A value sealed at rest (an update that leaves the target as it is) was counted in the
        # clear when it was sealed.
        size += len(name.encode()) + (0 if is_sealed(value) else len(value.encode()))
        if not HEADER_NAME.match(name):
            v.add(path, f"{quote(name)} is not a valid header name")
        elif CONTROL.search(value.replace("\t", "")):
            v.add(f"{path}[{name}]", "value must not contain control characters (CR, LF)")
        elif name.lower() in plain:
            v.add(f"{path}[{name}]", "also named in headers: a header is either secret or not")
        elif name.lower() in seen:
            v.add(f"{path}[{name}]", "named twice (header names are case-insensitive)")
        seen.add(name.lower())
    if size > MAX_SECRET_HEADER_BYTES:
        v.add(path, f"names and values larger than {MAX_SECRET_HEADER_BYTES} bytes")


def _signing_secrets(v: Violations, http: pb.HttpTarget) -> None:
    """At most two, each whsec_ + base64 of 24-64 bytes (schedcore/signing.py)."""
    path = "task.target.http.signing_secrets"
    if len(http.signing_secrets) > signing.MAX_SECRETS:
        v.add(path, f"at most {signing.MAX_SECRETS} secrets (two while a target rotates)")
        return
    for i, secret in enumerate(http.signing_secrets):
        # A secret sealed at rest (an update that leaves the target as it is) was checked in the
        # clear when it was sealed.
        if is_sealed(secret):
            continue
        try:
            signing.secret_key(secret)
        except ValueError as exc:
            v.add(f"{path}[{i}]", str(exc))


def _command(v: Violations, command: pb.CommandTarget) -> pb.CommandTarget:
    path = "task.target.command"
    if not command.program:
        v.add(f"{path}.program", "required")
    elif len(command.program) > MAX_PROGRAM or CONTROL.search(command.program):
        v.add(f"{path}.program", f"must be at most {MAX_PROGRAM} characters without control characters")
    if len(command.args) > MAX_ARGS:
        v.add(f"{path}.args", f"at most {MAX_ARGS} arguments")
    for i, arg in enumerate(command.args):
        if len(arg.encode()) > MAX_ARG_BYTES:
            v.add(f"{path}.args[{i}]", f"larger than {MAX_ARG_BYTES} bytes")
        elif "\x00" in arg:
            v.add(f"{path}.args[{i}]", "must not contain NUL")
    _environment(v, command)
    if command.working_dir and (not command.working_dir.startswith("/") or "\x00" in command.working_dir):
        v.add(f"{path}.working_dir", "must be an absolute path")
    elif len(command.working_dir) > MAX_PROGRAM:
        v.add(f"{path}.working_dir", f"must be at most {MAX_PROGRAM} characters")
    out = pb.CommandTarget()
    out.CopyFrom(command)
    return out


def _environment(v: Violations, command: pb.CommandTarget) -> None:
    path = "task.target.command"
    if len(command.env) + len(command.secret_env) > MAX_ENV:
        v.add(f"{path}.env", f"at most {MAX_ENV} variables (env and secret_env together)")
    for field_name, variables in (("env", command.env), ("secret_env", command.secret_env)):
        for name, value in variables.items():
            # A value sealed at rest (an update that leaves the target as it is) was checked in
            # the clear when it was sealed.
            if not ENV_NAME.match(name):
                v.add(
                    f"{path}.{field_name}", f"{quote(name)} is not a variable name ([A-Za-z_][A-Za-z0-9_]*)"
                )
            elif field_name == "secret_env" and name in command.env:
                v.add(f"{path}.secret_env[{name}]", "also named in env: a variable is either secret or not")
            elif field_name == "secret_env" and is_sealed(value):
                continue
            elif len(value.encode()) > MAX_ENV_VALUE_BYTES or "\x00" in value:
                v.add(
                    f"{path}.{field_name}[{name}]", f"must be at most {MAX_ENV_VALUE_BYTES} bytes without NUL"
                )
