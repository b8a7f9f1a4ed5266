"""Teacher-output cache: outputs of frozen teachers on the transfer set, stored once on disk,
memory-mapped, keyed by fingerprints of the data, the teacher and the preprocessing."""
from .build import BuildReport, CacheOptions, build_cache, open_cached_teachers
from .store import CacheError, Entry, data_fingerprint, open_entry, teacher_fingerprint
from .topk import compress_topk, expand_topk, topk_error

__all__ = ["BuildReport", "CacheError", "CacheOptions", "Entry", "build_cache", "compress_topk",
           "data_fingerprint", "expand_topk", "open_cached_teachers", "open_entry", "teacher_fingerprint",
           "topk_error"]
