"""The data plane: sessions, ports, routes and drivers, latching, RTP, recording, playback.

It knows nothing of the control protocol's text: it raises its own errors (errors.py),
which the command layer maps to E<code> replies.
"""
