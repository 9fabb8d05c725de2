"""The ftemu command line (installed as the ``ftemu`` command)."""
