"""Traces as graphs: the span tree, Sankey links and Mermaid text, as pure functions.

Shared by the Sankey and Mermaid exporters and by :mod:`flowtracker.viz`;
it reads trace dicts (the wire format) and depends on nothing but the
core's clock, so exporters can use it without reaching up into viz.
"""
