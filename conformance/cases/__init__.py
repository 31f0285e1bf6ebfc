"""The catalogue's cases, one module per area; importing this package registers them all.

``transport``: identity and SMTP (§1, §2); ``flows``: what the target does with a Dispatch
(§4); ``evidence``: the evidence and the Evidence envelope it returns (§3, §5, §6);
``hostile``: malformed and hostile input (§2, §3, §5); ``receive``: a target that sends (§3,
§4 S-GW); ``relay_failure``: a target that sends, when the relay fails or the evidence it gets
back is bad (§4 Relay, §4 S-GW on an Evidence). docs/conformance.md lists them and says how
to add one.
"""

from conformance.cases import evidence, flows, hostile, receive, relay_failure, transport

__all__ = ["evidence", "flows", "hostile", "receive", "relay_failure", "transport"]
