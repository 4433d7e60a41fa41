"""The media core: SDP, SDES keys, SRTP and the relay table. Sans-I/O like the
SIP core (bytes and ``now`` in, bytes and actions out); only ``udp.py`` touches
Twisted."""
