"""pytest plugin (registered by entry point, off unless ``--lockwise``): see issue 4."""
