"""sohoa: scan, recognize, sign and archive paper administrative records."""

__version__ = "0.1.0"
