"""Texts shared by the commands that make development PKIs."""

DEV_WARNING = (
    "This PKI is for development and tests only: its private keys sit unencrypted on disk "
    "and its CAs are trusted by nobody else."
)
