"""The config error, apart from config.py so that the modality definitions (which config.py reads)
can raise it without importing config.py."""


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key."""
