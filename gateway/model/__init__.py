"""Canonical models shared by every format."""
