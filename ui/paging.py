"""Server-side paging for list pages: page tokens kept in the session, reset when filters change."""

from __future__ import annotations

import json

import streamlit as st


class Pager:
    """Remembers the tokens of the pages visited, so Previous works with forward-only tokens."""

    def __init__(self, name: str, filters: object) -> None:
        self.key = f"pager_{name}"
        signature = json.dumps(filters, default=str)
        state = st.session_state.get(self.key)
        if state is None or state["sig"] != signature:
            # tokens[i] opens page i; counts[i]: how many items page i showed (pages may be short,
            # so where a page starts is the sum of the ones before it).
            state = {"sig": signature, "tokens": [""], "counts": [], "index": 0}
            st.session_state[self.key] = state
        self.state = state

    @property
    def index(self) -> int:
        return int(self.state["index"])

    @property
    def token(self) -> str:
        return str(self.state["tokens"][self.index])

    def controls(self, next_token: str, shown: int, total: int | None = None) -> None:
        """Previous / Next buttons and where we are: which items this page shows, and of how
        many when the api counted them (`total`). Call it on an empty page too: past the first
        one (emptied meanwhile) it is the way back."""
        tokens: list[str] = self.state["tokens"]
        counts: list[int] = self.state["counts"]
        del tokens[self.index + 1 :]
        del counts[self.index :]
        if next_token:
            tokens.append(next_token)
        first = sum(counts) + 1
        counts.append(shown)
        if not (shown or next_token or self.index):
            return  # nothing to page through: the page says it is empty
        left, mid, right = st.columns([1, 4, 1])
        if left.button("← Previous", key=f"{self.key}_prev", disabled=self.index == 0, width="stretch"):
            self.state["index"] = self.index - 1
            st.rerun()
        where = f"{first:,}-{first + shown - 1:,}" if shown else "none"
        mid.caption(
            f"Page {self.index + 1} · {where}"
            + (f" of {total:,}" if total is not None else "")
            + (" · more follow" if next_token else "")
        )
        if right.button("Next →", key=f"{self.key}_next", disabled=not next_token, width="stretch"):
            self.state["index"] = self.index + 1
            st.rerun()
