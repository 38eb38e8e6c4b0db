"""Recording: file formats and the writer thread, attaching recorders, remote copies."""
