from .frozen import FrozenTeacher
from .precomputed import PrecomputedTeacher

__all__ = ["FrozenTeacher", "PrecomputedTeacher"]
