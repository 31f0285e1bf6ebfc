"""ETSI TS 102 640-2 v2 evidence as used between KEP gateways (INTEROP-PROFILE.md §5)."""
