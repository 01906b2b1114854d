"""What every client resource shares: build on first use in a run, close at its end."""

from __future__ import annotations

from typing import Any

import dagster as dg
from pydantic import PrivateAttr


class ClientResource(dg.ConfigurableResource):
    """A resource whose `get()` returns a plain-Python client (a core Protocol), built lazily so
    a step that never asks for it pays nothing, and closed when the step (or sensor tick) ends."""

    _client: Any = PrivateAttr(default=None)

    def _build(self) -> Any:
        raise NotImplementedError

    def _get(self) -> Any:
        if self._client is None:
            self._client = self._build()
        return self._client

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        close = getattr(self._client, "close", None)
        if close is not None:
            close()
        self._client = None
