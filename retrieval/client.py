"""A client of a running ``unicorpus serve`` with ``QueryEngine``'s query methods (``search``, ``related``),
so ``unicorpus query --server URL`` and its interactive mode answer from a loaded service instead of
loading torch, the model and the indexes themselves (seconds) for a search that takes milliseconds.
Standard library only: a quick command stays quick."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from urllib.parse import urlencode, urlsplit

from retrieval.query import Hit, QueryError


class RemoteEngine:
    """The service at ``url`` (``http://HOST:PORT``); its 4xx answers raise ``QueryError`` with the service's
    message and status, an unreachable service raises ``ConnectionError``."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 60):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise QueryError(f"--server: expected http://HOST:PORT, got {url!r}")
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout

    def _get(self, path: str, params: dict) -> dict:
        query = urlencode({name: value for name, value in params.items() if value is not None})
        request = urllib.request.Request(f"{self.url}{path}?{query}", headers={"Accept": "application/json"})
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            body = e.read()
            try:
                message = json.loads(body)["error"]
            except (ValueError, KeyError, TypeError):
                message = f"HTTP {e.code} from {self.url}"
            error = QueryError(message)
            error.status = e.code
            if e.code >= 500:
                raise ConnectionError(f"{self.url}: {message}") from None
            raise error from None
        except (urllib.error.URLError, OSError) as e:
            raise ConnectionError(f"cannot reach {self.url}: {getattr(e, 'reason', e)}") from None

    @property
    def max_k(self) -> int:
        """The service's largest k (asked once): the CLI checks a request as the service would."""
        if not hasattr(self, "_max_k"):
            self._max_k = int(self._get("/api/indexes", {})["max_k"])
        return self._max_k

    @staticmethod
    def _hits(body: dict) -> list[Hit]:
        return [Hit(r["rank"], r["score"], r["key"], r["source"], r["text_index"], r["text"]) for r in body["results"]]

    def search(self, text=None, tags=None, key=None, k=5, index: str = "text") -> list[Hit]:
        return self._hits(self._get("/api/search", {"q": text, "tags": tags, "key": key, "k": k, "index": index}))

    def related(self, key: str, kind: str = "images", k=10, text_index=None) -> list[Hit]:
        return self._hits(self._get("/api/related", {"key": key, "kind": kind, "k": k, "text_index": text_index}))
