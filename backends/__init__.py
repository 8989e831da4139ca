"""pmemsim's backends, installed as ``pmemsim_backends`` (never as a bare ``backends``)."""
