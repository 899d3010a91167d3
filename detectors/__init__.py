"""Built-in detectors; each registered under the ``vecaudit.detectors`` entry point group."""
