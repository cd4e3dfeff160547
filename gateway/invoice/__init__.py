"""Invoices from providers that cannot send X12 → validated 837P encounters + a row report."""
