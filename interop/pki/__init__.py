"""Key material values: who signs (``Signer``) and the development PKI generator."""
