"""``GET /healthz``: is the store answering and is the audit chain intact?

The chain is verified incrementally: each call checks only the records added
since the last good verification (and every checkpoint signature), so the
endpoint stays cheap as the log grows. 200 when all is well, 503 otherwise,
with a JSON body saying which part failed.
"""

from __future__ import annotations

import json
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from klein import Klein
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest

from appliance.store.audit import GENESIS_HASH, Verdict, checkpoints, records, verify
from appliance.store.migrations import schema_version
from appliance.store.tenants import Directory
from appliance.store.thread import StoreRunner


class HealthApp:
    """The health endpoint, bound to a store and the audit verification key."""

    app = Klein()
    log = Logger()

    def __init__(self, store: StoreRunner, audit_public_key: Ed25519PublicKey) -> None:
        self._store = store
        self._public_key = audit_public_key
        self._verified: tuple[int, str] = (0, GENESIS_HASH)

    def _check(self, directory: Directory) -> tuple[int, Verdict]:
        verdict = verify(
            records(directory.db, after=self._verified[0]),
            checkpoints(directory.db),
            self._public_key,
            start=self._verified,
        )
        if verdict.ok:
            self._verified = (verdict.records, verdict.head_hash)
        return schema_version(directory.db), verdict

    @app.route("/healthz", methods=["GET"])
    def healthz(self, request: IRequest) -> Any:
        """Report the store's and the audit chain's state."""
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")

        def report(result: tuple[int, Verdict]) -> bytes:
            version, verdict = result
            audit: dict[str, Any] = {
                "ok": verdict.ok,
                "records": verdict.records,
                "last_checkpoint": verdict.last_checkpoint,
            }
            if not verdict.ok:
                audit.update(broken_seq=verdict.broken_seq, reason=verdict.reason)
            body = {
                "status": "ok" if verdict.ok else "failing",
                "store": {"ok": True, "schema_version": version},
                "audit": audit,
            }
            if not verdict.ok:
                request.setResponseCode(503)
            return json.dumps(body).encode()

        def store_failed(failure: Failure) -> bytes:
            self.log.failure("health check could not read the store", failure)
            request.setResponseCode(503)
            body = {"status": "failing", "store": {"ok": False, "error": "unavailable"}}
            return json.dumps(body).encode()

        return self._store.run(self._check).addCallbacks(report, store_failed)
