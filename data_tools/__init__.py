"""Dataset tools: OpenVid subset selection, zip-part access, synthetic clips, probing."""
