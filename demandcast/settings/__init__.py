"""Typed settings, one module per stage section of conf/*.yaml. Every model forbids unknown keys."""
