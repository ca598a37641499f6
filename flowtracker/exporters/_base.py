"""The exporter protocol, re-exported where exporters look for it.

It is defined by the pipeline (:mod:`flowtracker._pipeline.exporter`), which
is what calls it; exporters are plug-ins over it.
"""

from __future__ import annotations

from .._pipeline.exporter import Exporter as Exporter

__all__ = ("Exporter",)
