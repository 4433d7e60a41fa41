"""Telemancer: an on-premises SIP proxy appliance on one Twisted reactor."""

__version__ = "0.1.0"
