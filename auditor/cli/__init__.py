"""The ``vecaudit`` command line (click): one module per command group."""
