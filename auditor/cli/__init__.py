"""The command-line interface: thin click commands over the library (the only place click is used)."""
