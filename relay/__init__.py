"""kep-relay's I/O shell: command line, files, and (later) the gateway stages."""
