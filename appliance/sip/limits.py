"""Named limits on what a peer may send. Breaking one fails closed: the
message is answered (513 or 400) where a response can be built, and a stream
is closed, because a peer that sends too much cannot be trusted to re-frame.
"""

#: Largest UDP datagram we accept (the IPv4 UDP maximum payload).
MAX_DATAGRAM_BYTES = 65_507
#: Start line plus headers plus the blank line.
MAX_HEADER_SECTION_BYTES = 16 * 1024
#: One header line after unfolding; long enough for RFC 4475's longreq (594 bytes).
MAX_LINE_BYTES = 4 * 1024
#: Header fields in one message.
MAX_HEADERS = 100
#: Message body (SDP offers are a few KiB; multipart with an identity token more).
MAX_BODY_BYTES = 64 * 1024
#: Largest CSeq sequence number (RFC 3261 §8.1.1.5: less than 2**31).
MAX_CSEQ = 2**31 - 1
#: Largest Max-Forwards value we accept.
MAX_MAX_FORWARDS = 255
#: Server transactions kept for absorbing UDP retransmissions (each lives for
#: Timer J, 32 s). At the cap the oldest is forgotten: a retransmission of its
#: request is then processed again instead of being absorbed.
MAX_SERVER_TRANSACTIONS = 100_000
