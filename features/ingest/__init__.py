"""The ingest stage: raw behaviour logs and dimension exports -> the Bronze tables.

event_contract (the event schema), raw_reader (files -> records), column_mapping (a platform's
fields -> the contract), validation (typed fields and problems), pseudonymise (user ids ->
user_key), batch (one events batch: prepare, gate, commit), dimensions (users and items).
"""
