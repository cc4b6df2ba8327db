"""pytest root: puts the repository root on sys.path so tests import ``common`` and model packages."""
