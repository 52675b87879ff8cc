"""Data-side library: event contract, raw reading, validation, pseudonymisation, simulator, features."""
