from .frozen import FrozenTeacher

__all__ = ["FrozenTeacher"]
