"""The KEP-REM conformance suite: point it at any gateway and get a report.

``run`` plays the sending provider (and a second one where a case needs it) against a target
gateway that receives; ``receive`` plays the receiving provider for a target that sends. The
suite talks to the target only over SMTP with mutual TLS, as a peer gateway would: it never
reads the target's files or imports its code (nothing of ``relay`` is used). It builds what
it sends with the project's protocol library (``interop``) and judges what comes back with
that library and with tools nobody here wrote (OpenSSL, xmlsec1, the ETSI XSD, Python's
``email``).

Modules: ``registry`` (the catalogue), ``cases/`` (one module per area), ``session`` (what a
case works with), ``runner`` (time limits, verdicts), ``report`` (terminal, JUnit XML, JSON,
HTML), ``listener`` and ``smtp`` (the two SMTP ends), ``dispatch`` (what is sent),
``identity`` (the PKI folder), ``tools`` (the independent judges), ``main`` (a run).
"""
