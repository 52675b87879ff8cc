"""Where training/evaluation.py still imports the user-id hashing from (it is not the ingest
stage's to edit): the code lives in features.ingest.pseudonymise. Remove this module once every
import names that one."""
from features.ingest.pseudonymise import DEVELOPMENT_KEY, HashKey, resolve_hash_key, with_user_key

__all__ = ["DEVELOPMENT_KEY", "HashKey", "resolve_hash_key", "with_user_key"]
