"""The Dispatch and Evidence envelopes of INTEROP-PROFILE.md §3, and users' S/MIME messages.

Envelopes are read from seekable binary streams: parts are located by byte offsets, the
original message is hashed where it lies and never loaded.
"""
