"""A form's errors by field: the form's own and the api's, shown next to the widget they concern.

Each form names the widget that shows an error about a field path (`task.schedule.cron` ->
`e_cron`); a save refused as a whole (the api unreachable, the resource changed meanwhile, a
field no widget shows) is said above the form, the changed-meanwhile case with the choice to
reload or to save over the other change.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import grpc
import streamlit as st

from ui.client import ApiError
from ui.common import show_unreachable

ITEM = re.compile(r"^\[([0-9]+)\]$")


def _match(widgets: Mapping[str, str], path: str) -> tuple[str, str] | None:
    """(prefix, widget key) of the longest prefix of `path` that `widgets` names."""
    best = None
    for prefix, key in widgets.items():
        if (path == prefix or path.startswith((prefix + ".", prefix + "["))) and (
            best is None or len(prefix) > len(best[0])
        ):
            best = (prefix, key)
    return best


def widget_for(widgets: Mapping[str, str], path: str) -> str | None:
    """The widget that shows an error about `path`: the longest prefix of it `widgets` names
    (None: shown above the form)."""
    found = _match(widgets, path)
    return found[1] if found else None


def _located(widgets: Mapping[str, str], path: str, message: str) -> str:
    """`message`, saying which item it is about when the widget holds a list (an address a line,
    channels picked) and the path names one of them: `channel.email.to[2]` -> "item 3: ..."."""
    found = _match(widgets, path)
    index = ITEM.match(path[len(found[0]) :]) if found else None
    return f"item {int(index[1]) + 1}: {message}" if index else message


class FormErrors:
    """The errors of the last save of one form, kept in the session under `<prefix>_errors`
    (widget key -> message) and `<prefix>_general` (the refusal said above the form)."""

    def __init__(self, prefix: str, widgets: Mapping[str, str]) -> None:
        self.prefix = prefix
        self.key = f"{prefix}_errors"
        self.general_key = f"{prefix}_general"
        self.widgets = widgets

    def start(self, found: dict[str, str]) -> None:
        """A save begins: what the form found itself, and nothing from an earlier refusal."""
        st.session_state[self.key] = dict(found)
        st.session_state.pop(self.general_key, None)

    def clear(self) -> None:
        self.start({})

    def refused(self, err: ApiError, found: Mapping[str, str]) -> None:
        """The api refused the save: each violation by its widget, beside what the form found
        (a field the form found wrong was sent empty: the api's word on it is not about what was
        typed); the rest, or a refusal without violations, above the form."""
        placed = dict(found)
        general: list[str] = []
        for path, message in err.fields.items():
            key = widget_for(self.widgets, path)
            if key is None:
                general.append(f"{path}: {message}")
            elif key not in found:
                said = _located(self.widgets, path, message)
                placed[key] = f"{placed[key]}; {said}" if key in placed else said
        st.session_state[self.key] = placed
        if general or not placed:
            st.session_state[self.general_key] = (err, general)

    def any(self, *keys: str) -> bool:
        errors: dict[str, str] = st.session_state.get(self.key, {})
        return any(errors.get(k) for k in keys)

    def show(self, key: str) -> None:
        """The error of widget `key`, where the caller is (its column)."""
        message = st.session_state.get(self.key, {}).get(key)
        if message:
            st.error(message, icon=":material/warning:")

    def general_refusal(self) -> bool:
        """The last save was refused as a whole (not field by field)."""
        return st.session_state.get(self.general_key) is not None

    def show_general(
        self,
        noun: str,
        editing: bool,
        reload: Callable[[], None],
        overwrite: Callable[..., None],
        args: tuple[Any, ...],
    ) -> None:
        """The refusal above the form. ABORTED while editing (`noun`, "task", was changed by
        someone else since the form read it): the edits stay in the form, and two buttons offer
        to reload it (`reload`, which discards them) or to save them over the other change
        (`overwrite(*args)`, a save against the current version)."""
        general = st.session_state.get(self.general_key)
        if not general:
            return
        refusal, items = general
        if refusal.unreachable:
            show_unreachable(refusal)
        elif refusal.code == grpc.StatusCode.ABORTED and editing:
            st.error(
                f"Not saved: this {noun} was changed by someone else since you opened it "
                f"({refusal.message}). Your edits are still in the form. Reload the {noun} to see "
                "the current version (your edits are discarded), or save your edits over it.",
                icon=":material/sync_problem:",
            )
            r1, r2, _ = st.columns([1, 1, 3])
            if r1.button(f"Reload the {noun}", key=f"{self.prefix}_reload", width="stretch"):
                reload()
                st.session_state.pop(self.general_key, None)
                st.rerun()
            r2.button(
                "Overwrite with my edits",
                key=f"{self.prefix}_overwrite",
                width="stretch",
                on_click=overwrite,
                args=args,
            )
        else:
            st.error(
                f"Not saved: {refusal.message}" + "".join(f"\n- {i}" for i in items),
                icon=":material/warning:",
            )
