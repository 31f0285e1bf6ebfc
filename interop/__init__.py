"""kep-relay's sans-I/O KEP-REM protocol library.

Everything here works on values handed in by the caller (bytes, readable streams, ``now``, the
trust list and revocation data) and hands values back. Nothing here opens a socket, a file or
reads the clock: that is what lets the gateway, the conformance suite and the tests share it.
"""

__version__ = "0.1.0"
