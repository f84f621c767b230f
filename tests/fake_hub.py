"""A small Hugging Face Hub stand-in for tests: a threading HTTP server on localhost that answers the
requests huggingface_hub 2.4 makes to download a model, so ``HF_ENDPOINT`` can point at it and no test
touches the internet.

* ``GET /api/models/{repo}/revision/{rev}[?blobs=true]``: the repository's commit (``sha``) and files
  (``siblings`` with ``size``, ``blobId`` and, for large files, ``lfs.sha256``/``lfs.size``).
* ``HEAD``/``GET /{repo}/resolve/{rev}/{file}``: the file, with ``X-Repo-Commit``, ``ETag`` (git's blob
  sha1), and for large files (``.safetensors``, ``.gguf``) ``X-Linked-Etag`` (sha256) and ``X-Linked-Size``;
  ``Range: bytes=N-`` answered with 206 and ``Content-Range``.
* Errors as the hub sends them: 401 + ``X-Error-Code: RepoNotFound`` for an unknown (or private, without
  its token) repository, 401 + ``X-Error-Message: Invalid credentials in Authorization header`` for a wrong
  token, 401/403 + ``X-Error-Code: GatedRepo`` for a gated file, 404 + ``EntryNotFound`` for a missing file.

Faults for the tests: ``cut_once`` (files whose first GET stops halfway, the connection closed),
``die_in`` (files whose GET stops halfway and shuts the whole server down), ``corrupt`` (files served with
one byte changed, under the checksum of the true content). Every request is logged as (method, path, range).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LFS_SUFFIXES = (".safetensors", ".gguf", ".bin")


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    files: dict[str, bytes]
    commit: str = "a" * 40
    gated: bool = False
    token: str | None = None  # a private repository: only this token may read it


@dataclass
class FakeHub:
    repos: dict[str, Repo] = field(default_factory=dict)
    cut_once: set[str] = field(default_factory=set)
    die_in: set[str] = field(default_factory=set)
    corrupt: set[str] = field(default_factory=set)
    log: list[tuple[str, str, str | None]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> "FakeHub":
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                hub._answer(self, head=True)

            def do_GET(self) -> None:
                hub._answer(self, head=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def gets(self, name: str) -> list[str | None]:
        """The Range headers of the GET requests for the file ``name`` (None: the whole file)."""
        return [r for m, p, r in self.log if m == "GET" and p.endswith("/" + name)]

    # ------------------------------------------------------------------------------------------ serving
    def _auth(self, h: BaseHTTPRequestHandler, repo: Repo) -> str | None:
        """None when the request may read ``repo``, else the refusal: 'missing' or 'invalid'."""
        given = (h.headers.get("Authorization") or "").removeprefix("Bearer ").strip()
        if repo.token is None and not repo.gated:
            return None
        if given and given == (repo.token or "gated-ok"):
            return None
        return "invalid" if given else "missing"

    def _error(self, h: BaseHTTPRequestHandler, status: int, headers: dict[str, str]) -> None:
        body = json.dumps({"error": headers.get("X-Error-Message", "error")}).encode()
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)

    def _answer(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        path = h.path.split("?", 1)[0]
        self.log.append((h.command, path, h.headers.get("Range")))
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/revision/([^/]+)", path)
        if m:
            return self._info(h, m.group(1))
        m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if m:
            return self._file(h, m.group(1), m.group(3), head)
        self._error(h, 404, {})

    def _info(self, h: BaseHTTPRequestHandler, repo_id: str) -> None:
        repo = self.repos.get(repo_id)
        refusal = None if repo is None else self._auth(h, repo)
        if repo is None or (refusal and not repo.gated):
            if refusal == "invalid":
                return self._error(h, 401, {"X-Error-Message": "Invalid credentials in Authorization header"})
            return self._error(h, 401, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"})
        siblings = []
        for name, data in sorted(repo.files.items()):
            s = {"rfilename": name, "size": len(data), "blobId": git_sha1(data)}
            if name.endswith(LFS_SUFFIXES):
                s["lfs"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "pointerSize": 134}
            siblings.append(s)
        body = json.dumps({"id": repo_id, "modelId": repo_id, "sha": repo.commit, "private": repo.token is not None,
                           "gated": "manual" if repo.gated else False, "siblings": siblings}).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def _file(self, h: BaseHTTPRequestHandler, repo_id: str, name: str, head: bool) -> None:
        repo = self.repos.get(repo_id)
        refusal = None if repo is None else self._auth(h, repo)
        if repo is None or refusal:
            if repo is not None and repo.gated and refusal == "missing":
                return self._error(h, 401, {"X-Error-Code": "GatedRepo", "X-Repo-Commit": repo.commit,
                                            "X-Error-Message": "Access to model is restricted."})
            if refusal == "invalid":
                return self._error(h, 401, {"X-Error-Message": "Invalid credentials in Authorization header"})
            return self._error(h, 401, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"})
        if name not in repo.files:
            return self._error(h, 404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": repo.commit})
        data = repo.files[name]
        headers = {"X-Repo-Commit": repo.commit, "ETag": f'"{git_sha1(data)}"', "Accept-Ranges": "bytes"}
        if name.endswith(LFS_SUFFIXES):
            headers["X-Linked-Etag"] = f'"{hashlib.sha256(data).hexdigest()}"'
            headers["X-Linked-Size"] = str(len(data))
        if name in self.corrupt:
            data = bytes([data[0] ^ 1]) + data[1:]
        start = 0
        rng = h.headers.get("Range")
        if rng and not head:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
        h.send_response(206 if start else 200)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(data) - start))
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.send_header("Connection", "close")
        h.end_headers()
        if head:
            return
        body = data[start:]
        if name in self.cut_once or name in self.die_in:
            h.wfile.write(body[: len(body) // 2])
            h.wfile.flush()
            h.close_connection = True
            self.cut_once.discard(name)
            if name in self.die_in:
                threading.Thread(target=self.stop, daemon=True).start()
            return
        h.wfile.write(body)
