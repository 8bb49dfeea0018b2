"""hybrid: compose, build, train and compare hybrid recurrent/attention language models."""

__version__ = "0.1.0"
