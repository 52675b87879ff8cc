"""demandcast: the shared core every stage imports (config, session, tables, logging)."""
