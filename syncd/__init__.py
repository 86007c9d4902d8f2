"""syncd: keeps survey and messaging vendors in step with a CRM export."""

__version__ = "0.1.0"
