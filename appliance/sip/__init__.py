"""The SIP core: sans-I/O (bytes and ``now`` in; bytes, events and actions out).

Only ``transport.py`` touches Twisted; ``tests/test_layering.py`` keeps it so.
"""
