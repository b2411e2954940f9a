"""What keeps a command target away from the executor's secrets (docs/security.md, "Safe targets").

- EXECUTOR_COMMAND_USER: programs run as that user (its uid, its primary group, no supplementary
  groups), with umask 077, in a directory it may enter (services/executor/launch.py). An
  executor running as root with command targets on and no such user refuses to start: its
  programs would run as root.
- The executor makes itself non-dumpable at start (Linux prctl), so the kernel refuses ptrace
  access to it even from processes of its own uid: /proc/<executor>/environ, mem, fd, maps and
  the like are unreadable to the programs it starts. This also means no core dumps, and tools
  that attach to it (py-spy, gdb) need root (CAP_SYS_PTRACE).
- Secret files the executor was given (its TLS key) must not be readable by the command user:
  the executor refuses to start, naming the file, when their owner or mode let that user read them.

Every check runs before the server binds anything and fails with a SettingsError naming the
variable, so the process stops with exit status 2 (schedcore.server.run_main).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import pwd
import re
import stat
import sys
from dataclasses import dataclass

from schedcore.settings import Settings, SettingsError

log = logging.getLogger("executor")

VARIABLE = "EXECUTOR_COMMAND_USER"
# Files the executor reads that a program must not: variable -> the setting holding its path.
SECRET_FILE_VARIABLES = ("TLS_KEY_FILE",)
# The PATH a program gets when it runs as another user and its task sets none: the executor's
# own may name directories of the executor's (a virtualenv, a home directory).
COMMAND_PATH = "/usr/local/bin:/usr/bin:/bin"
COMMAND_LANG = "C.UTF-8"
COMMAND_UMASK = 0o077
PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3
# Capabilities (linux/capability.h) that switching to another uid and gid needs.
CAP_SETGID, CAP_SETUID = 6, 7
MAX_ID = 2**32 - 2  # (uid_t)-1 means "unchanged"
_NUMERIC = re.compile(r"^(\d+)(?::(\d+))?$")


@dataclass(frozen=True)
class CommandUser:
    """Who command targets run as."""

    uid: int
    gid: int
    home: str  # HOME of the program, and its working directory when the task names none

    def environment(self) -> dict[str, str]:
        """Defaults under the task's own variables."""
        return {"PATH": COMMAND_PATH, "HOME": self.home, "LANG": COMMAND_LANG}


def resolve_user(spec: str) -> CommandUser:
    """A user name (from the password database) or uid[:gid]; uid 0 is refused."""
    numeric = _NUMERIC.match(spec)
    if numeric and not all(int(n) <= MAX_ID for n in numeric.groups() if n is not None):
        raise SettingsError(f"{VARIABLE}: {spec!r} is not a user name or uid[:gid] (ids up to {MAX_ID})")
    entry: pwd.struct_passwd | None = None
    try:
        entry = pwd.getpwuid(int(numeric[1])) if numeric else pwd.getpwnam(spec)
    except KeyError:
        if not numeric:  # a uid without an entry is fine: it needs no name
            raise SettingsError(f"{VARIABLE}: no user named {spec!r} on this machine") from None
    if numeric:
        uid = int(numeric[1])
        gid = int(numeric[2]) if numeric[2] is not None else (entry.pw_gid if entry else uid)
    else:
        assert entry is not None
        uid, gid = entry.pw_uid, entry.pw_gid
    if uid == 0 or gid == 0:
        raise SettingsError(f"{VARIABLE}: {spec!r} is root (uid or gid 0); name an unprivileged user")
    home = entry.pw_dir if entry is not None and os.path.isdir(entry.pw_dir) else "/"
    return CommandUser(uid, gid, home)


def _can_switch_users() -> bool:
    if os.geteuid() == 0:
        return True
    try:
        with open("/proc/self/status") as f:
            caps = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    except (OSError, StopIteration, ValueError):
        return False
    return all(caps >> cap & 1 for cap in (CAP_SETUID, CAP_SETGID))


def readable_by(path: str, user: CommandUser) -> bool:
    """Whether the file's owner and mode let `user` (its uid and primary group only: programs
    get no supplementary groups) read it."""
    info = os.stat(path)
    if info.st_uid == user.uid:
        return bool(info.st_mode & stat.S_IRUSR)
    if info.st_gid == user.gid:
        return bool(info.st_mode & stat.S_IRGRP)
    return bool(info.st_mode & stat.S_IROTH)


def check_secret_files(settings: Settings, user: CommandUser) -> None:
    files = {"TLS_KEY_FILE": settings.tls_key_file}
    for variable in SECRET_FILE_VARIABLES:
        path = files[variable]
        if not path:
            continue
        try:
            exposed = readable_by(path, user)
        except OSError as exc:
            raise SettingsError(f"{variable}: cannot stat {path!r}: {exc.strerror or exc}") from None
        if exposed:
            raise SettingsError(
                f"{variable}: {path!r} is readable by {VARIABLE} (uid {user.uid}, gid {user.gid}), "
                "so any command target could read it: make it owned by the executor's user with "
                "mode 0600 (or 0640 with a group the command user is not in)"
            )


def command_user(settings: Settings) -> CommandUser | None:
    """The user command targets run as, after every start-up check; None: the executor's own."""
    if not settings.executor_command_targets:
        return None
    if not settings.executor_command_user:
        if os.geteuid() == 0:
            raise SettingsError(
                f"{VARIABLE} is not set and the executor runs as root with "
                "EXECUTOR_COMMAND_TARGETS=true: programs would run as root and could read every "
                f"secret of the executor; set {VARIABLE} to an unprivileged user (e.g. nobody)"
            )
        if settings.tls_key_file:
            log.warning(
                "command targets run as the executor's own user (%s unset): they can read "
                "TLS_KEY_FILE; docs/security.md, 'Safe targets'",
                VARIABLE,
            )
        return None
    user = resolve_user(settings.executor_command_user)
    if not _can_switch_users():
        raise SettingsError(
            f"{VARIABLE}: running programs as another user needs root (or CAP_SETUID and "
            f"CAP_SETGID); this executor runs as uid {os.geteuid()} without them"
        )
    check_secret_files(settings, user)
    return user


def make_non_dumpable() -> bool:
    """prctl(PR_SET_DUMPABLE, 0) on Linux; whether the process is now non-dumpable."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        return False
    return bool(libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 0)
