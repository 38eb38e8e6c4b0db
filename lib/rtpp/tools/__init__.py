"""Helper tools shipped in the same executable (``makeann``, ``extractaudio``)."""
