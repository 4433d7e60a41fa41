"""Tests for the SIP core."""
