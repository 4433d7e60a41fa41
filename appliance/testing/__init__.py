"""Fakes shared by the tests: each stands in for one real adapter."""
