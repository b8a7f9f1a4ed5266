"""YAML with limits: ``yaml.safe_load`` semantics (no tags that build objects or run code), and
bounds on what a small config may expand to, checked on the parsed node graph before any Python
object is built:

- the file or text is at most ``MAX_BYTES``;
- the tree, with every alias expanded, has at most ``MAX_NODES`` nodes (an alias bomb -- the
  "billion laughs" -- is a few hundred bytes that expand to billions of nodes);
- nesting is at most ``MAX_DEPTH`` levels;
- a scalar is at most ``MAX_SCALAR`` characters, and an integer at most ``MAX_INT_DIGITS`` digits
  (Python refuses to parse integers over 4,300 digits with a ValueError, and no setting needs one).

Each breach is a :class:`ConfigError` with one line naming the limit.
"""
from __future__ import annotations

from typing import Any

import yaml

from .errors import ConfigError

MAX_BYTES = 4 * 2**20
MAX_NODES = 200_000
MAX_DEPTH = 64
MAX_SCALAR = 65_536
MAX_INT_DIGITS = 40
INT_TAG = "tag:yaml.org,2002:int"


def _check(root: yaml.Node, where: str) -> None:
    """Walk the node graph once (each distinct node once), computing the expanded size and depth."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    on_path: set[int] = set()
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            kids = _children(node)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            depth[key] = 1 + max((depth[id(k)] for k in kids), default=0)
            if size[key] > MAX_NODES:
                raise ConfigError(f"{where}: expands to more than {MAX_NODES:,} values (aliases repeated inside "
                                  "aliases?); a config is a few hundred values, write it out plainly")
            if depth[key] > MAX_DEPTH:
                raise ConfigError(f"{where}: nested more than {MAX_DEPTH} levels deep; flatten it")
            continue
        if key in size:
            continue
        if key in on_path:  # a recursive alias (an anchor used inside itself)
            raise ConfigError(f"{where}: an alias refers to a mapping that contains it (a cycle); remove the cycle")
        if isinstance(node, yaml.ScalarNode):
            text = node.value
            if len(text) > MAX_SCALAR:
                raise ConfigError(f"{where}: a value of {len(text):,} characters (at most {MAX_SCALAR:,}); "
                                  "put large data in a file and name the file")
            if node.tag == INT_TAG and len(text.lstrip("+-").replace("_", "")) > MAX_INT_DIGITS:
                raise ConfigError(f"{where}: the number {text[:20]}... has {len(text)} digits; no setting takes a "
                                  "number that large")
            size[key], depth[key] = 1, 1
            continue
        on_path.add(key)
        stack.append((node, True))
        stack.extend((k, False) for k in _children(node))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


_RAISE = object()


def load_yaml_text(text: str, where: str = "config", invalid: Any = _RAISE) -> Any:
    """Parse ``text`` like ``yaml.safe_load``, within the limits above; ConfigError otherwise.
    ``invalid``: returned instead of raising when ``text`` is not valid YAML (limits still raise)."""
    if len(text) > MAX_BYTES:
        raise ConfigError(f"{where}: {len(text):,} characters, more than a config needs (at most {MAX_BYTES:,})")
    # libyaml's parser when PyYAML has it (fast on long values); the same safe constructors either way
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check(node, str(where))
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        if invalid is not _RAISE:
            return invalid
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where} is not valid YAML{at}: {' '.join(str(problem).split())[:200]}") from None
    except (ValueError, TypeError, RecursionError) as exc:  # e.g. a timestamp or number YAML cannot convert
        raise ConfigError(f"{where}: a value YAML cannot read ({type(exc).__name__}: "
                          f"{' '.join(str(exc).split())[:120]})") from None
    finally:
        loader.dispose()
