"""rtpproxy: an RTP media relay driven by the classic rtpproxy control protocol."""

__version__ = "3.2.0"
PROTOCOL_VERSION = "20040107"
