"""moshi-data: Helium-style text curation, Moshi-style two-stream audio shards and a small trainer."""
from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("moshi-data")
except _metadata.PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0.0.0+unknown"
