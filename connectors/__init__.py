"""Built-in store connectors; each registered under the ``vecaudit.connectors`` entry point group."""
