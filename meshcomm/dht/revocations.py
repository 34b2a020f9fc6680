"""What the DHT bridge asks of the node's trust records (issue 12 point 4).

The bridge is sans-IO and knows nothing of trust records: it is given a
:class:`Revocations` (the node core gives it the island overlay's
:class:`~meshcomm.overlay.trustsync.TrustSync`, which reads the node's trust store, the
one a relay's uplink mesh shares). With it the bridge

* drops a value whose binding is refused by the records (its key revoked, its credential
  revoked, or under the ``agency`` policy its agency revoked) or whose attachment was
  signed by a revoked relay: counted and journaled like other dropped DHT input
  (``dht_drop_revoked``, ``dht_drop_credential_revoked``, ``dht_drop_relay_revoked``), so
  a resolution never returns a revoked device;
* when the records change (:meth:`~meshcomm.dht.bridge.DhtBridge.trust_changed`), drops
  what its remote view already holds of them: refused claims leave it (journaled
  ``dht.remote`` with state ``revoked``, and watchers hear a
  :class:`~meshcomm.dht.api.RemoteChanged`), attachments of revoked relays are removed.
"""

from __future__ import annotations

from typing import Final, Protocol

from meshcomm.dht.records import RecordReject
from meshcomm.location.binding import Binding


class Revocations(Protocol):
    """The node's verdicts on keys and bindings ('' or False: nothing refuses them)."""

    def binding_refusal(self, binding: Binding) -> str: ...

    def key_revoked(self, key: bytes) -> bool: ...


class NoRevocations:
    """A bridge alone (tests, tools): nothing is revoked."""

    def binding_refusal(self, binding: Binding) -> str:
        return ""

    def key_revoked(self, key: bytes) -> bool:
        return False


NO_REVOCATIONS: Final = NoRevocations()

#: The drop reason of a binding the records refuse, by the trust store's reason.
REFUSAL_REJECTS: Final[dict[str, RecordReject]] = {
    "credential_revoked": RecordReject.CREDENTIAL_REVOKED,
}


def revocation_reject(revocations: Revocations, binding: Binding,
                      relay_key: bytes) -> RecordReject | None:
    """Why a value carrying ``binding`` attached by ``relay_key`` is dropped (None: the
    records refuse neither). Cheap: set lookups, a credential hash only while some
    credential is revoked."""
    refusal = revocations.binding_refusal(binding)
    if refusal:
        return REFUSAL_REJECTS.get(refusal, RecordReject.REVOKED)
    if revocations.key_revoked(relay_key):
        return RecordReject.RELAY_REVOKED
    return None
