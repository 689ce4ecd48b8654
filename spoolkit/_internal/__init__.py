"""Small helpers shared by every layer: logging, optional imports, platform checks, process
hooks, credential masking."""
