from .frozen import FrozenTeacher, run_teachers
from .precomputed import PrecomputedTeacher

__all__ = ["FrozenTeacher", "PrecomputedTeacher", "run_teachers"]
