"""Prompt playback and the re-packetizer."""
