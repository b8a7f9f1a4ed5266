from .frozen import FrozenTeacher, run_teachers
from .precomputed import PrecomputedTeacher
from .cached import CachedTeacher, TransferSet

__all__ = ["CachedTeacher", "TransferSet", "FrozenTeacher", "PrecomputedTeacher", "run_teachers"]
