"""Plain-text and code files as a language-model corpus (``data.name: text``).

    data:
      name: text
      tokenizer: tok/                       # a local Hugging Face tokenizer directory
      seq_len: 256
      domains:
        code:  {paths: ["corpus/code/**/*.py"]}
        prose: {paths: ["corpus/prose/**/*.txt"]}

Each file is one document of its domain. Documents are split into train / validation / test
per domain (a permutation of the domain's files seeded by ``split_seed``, default the run's seed,
so a document is in exactly one split),
tokenized one at a time, followed by the tokenizer's EOS token, and packed back to back into
rows of ``seq_len`` tokens; a domain's last row is filled with the pad token. Rows never mix
domains, so every row has one domain. The rows are written once to ``.npy`` files and opened
memory-mapped: the corpus need not fit in memory (one file at a time must).

Targets that cross a document boundary are left out of every loss and of perplexity by
:func:`loss_mask`: token t is a target when t > 0, the token before it is not EOS (the
previous document ended there) and it is not padding.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..errors import MtkdError
from ..io import BEFORE_WRITE, _atomic, write_json
from .base import DataSplits

TOKENS_FORMAT = "mtkd.tokens/1"
SPLITS = ("train", "val", "test")


class DomainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    paths: list[str] = Field(min_length=1, description="glob patterns of the domain's files (** recurses)")


class TextConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    name: Literal["text"] = "text"
    tokenizer: Path = Field(description="local Hugging Face tokenizer directory (save_pretrained)")
    seq_len: int = Field(256, ge=2, le=1 << 20, description="tokens per training row")
    domains: dict[str, DomainConfig] = Field(min_length=1, description="domain name -> {paths: [glob, ...]}")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="documents of each domain held out for validation")
    test_fraction: float = Field(0.1, gt=0, lt=1, description="documents of each domain held out for the test")
    cache_dir: Path | None = Field(None, description="where the token arrays are written (default: <run dir>/tokens)")
    split_seed: int | None = Field(None, description="seed of the document split (default: the run's seed); fix it "
                                   "to keep one split while the training seed varies")

    @field_validator("domains")
    @classmethod
    def _names(cls, v):
        for name in v:
            if not name or "/" in name or name.startswith("."):
                raise ValueError(f"domain name {name!r}: a non-empty name without '/' that does not start with '.'")
        return v


@dataclass
class TokenizerInfo:
    path: str
    vocab: int  # len(tokenizer): ids 0 .. vocab - 1
    eos_id: int
    pad_id: int  # the pad token, or EOS when the tokenizer has none
    special: dict[str, int] = field(default_factory=dict)  # name -> id of every special token it declares


def tokenizer_info(tokenizer, path) -> TokenizerInfo:
    eos = tokenizer.eos_token_id
    if eos is None:
        raise MtkdError(f"data.tokenizer: {path} declares no EOS token; documents are separated by it (set "
                        "tokenizer.eos_token and save_pretrained again)")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    special = {name.removesuffix("_token"): getattr(tokenizer, f"{name}_id")
               for name in ("eos_token", "bos_token", "pad_token", "unk_token")
               if getattr(tokenizer, f"{name}_id", None) is not None}
    return TokenizerInfo(str(path), len(tokenizer), int(eos), int(pad), special)


def open_tokenizer(cfg: TextConfig):
    """(tokenizer, info) of ``data.tokenizer``; one line when it is missing or damaged."""
    from .tokens import load_tokenizer

    if not cfg.tokenizer.is_dir():
        raise MtkdError(f"data.tokenizer: {cfg.tokenizer} is not a directory; give a tokenizer saved with "
                        "save_pretrained")
    tokenizer = load_tokenizer(cfg.tokenizer, "data.tokenizer")
    return tokenizer, tokenizer_info(tokenizer, cfg.tokenizer)


def domain_files(cfg: TextConfig) -> dict[str, list[Path]]:
    """domain -> its files (sorted, deduplicated); an empty domain is one line."""
    found = {}
    for name, spec in cfg.domains.items():
        files = sorted({Path(p) for pattern in spec.paths for p in glob.glob(pattern, recursive=True)
                        if Path(p).is_file()})
        if not files:
            raise MtkdError(f"data.domains.{name}.paths: {spec.paths} match no file; check the patterns "
                            "(relative to the config file's folder; ** matches folders recursively)")
        if sum(f.stat().st_size for f in files) == 0:
            raise MtkdError(f"data.domains.{name}: its {len(files)} file(s) are all empty")
        needed = 2 + (cfg.val_fraction > 0)
        if len(files) < needed:
            raise MtkdError(f"data.domains.{name}: {len(files)} file(s); a domain is split by document and needs "
                            f"at least {needed} (train, test{', validation' if needed == 3 else ''}); add files"
                            f"{' or set data.val_fraction: 0' if needed == 3 else ''}")
        found[name] = files
    return found


def split_seed(cfg: TextConfig, seed: int) -> int:
    """The seed of the document split: data.split_seed, else the run's seed."""
    return seed if cfg.split_seed is None else cfg.split_seed


def split_documents(files: list[Path], cfg: TextConfig, seed: int, domain: str) -> dict[str, list[Path]]:
    """A domain's files -> {train, val, test}: a permutation seeded by (seed, domain name)."""
    n = len(files)
    n_test = max(1, round(n * cfg.test_fraction))
    n_val = max(1, round(n * cfg.val_fraction)) if cfg.val_fraction > 0 else 0
    n_test, n_val = min(n_test, n - 1 - (n_val > 0)), min(n_val, n - 2) if n_val else 0
    salt = int.from_bytes(hashlib.sha256(domain.encode()).digest()[:4], "little")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + salt)).tolist()
    test, val, train = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
    return {"train": [files[i] for i in sorted(train)], "val": [files[i] for i in sorted(val)],
            "test": [files[i] for i in sorted(test)]}


def loss_mask(ids: torch.Tensor, eos_id: int, pad_id: int) -> torch.Tensor:
    """[B, T] token ids -> [B, T] bool: token t is a target (predicted from the tokens before it).

    False at t = 0 (nothing before it in the row), after an EOS (the first token of a new
    document is not predictable from the previous one) and on padding."""
    mask = torch.zeros_like(ids, dtype=torch.bool)
    mask[:, 1:] = ids[:, :-1] != eos_id
    if pad_id != eos_id:  # with pad == eos, padding always follows an EOS and is out already
        mask &= ids != pad_id
    return mask


class TokenDataset(torch.utils.data.Dataset):
    """Packed rows of token ids, memory-mapped: ``x`` [S, T] int32, ``y`` [S] the row's domain id,
    ``index`` [S]; the same ``x, y, index`` attributes as :class:`~mtkd.data.base.IndexedTensorDataset`,
    so :class:`~mtkd.data.base.BatchLoader` batches it."""

    def __init__(self, tokens: torch.Tensor, domains: torch.Tensor, eos_id: int, pad_id: int,
                 index: torch.Tensor | None = None, domain_names: tuple[str, ...] = ()):
        self.x, self.y = tokens, domains.long()
        self.index = torch.arange(len(tokens)) if index is None else index.long()
        self.eos_id, self.pad_id = eos_id, pad_id
        self.domain_names = tuple(domain_names)  # y indexes this tuple

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i], self.index[i]

    def subset(self, rows: torch.Tensor) -> "TokenDataset":
        return TokenDataset(self.x[rows], self.y[rows], self.eos_id, self.pad_id, self.index[rows], self.domain_names)

    def targets(self) -> int:
        """Number of masked-in targets (tokens perplexity averages over)."""
        return sum(int(loss_mask(self.x[i:i + 4096].long(), self.eos_id, self.pad_id).sum())
                   for i in range(0, len(self), 4096))


@dataclass
class TextSplits(DataSplits):
    domain_names: tuple[str, ...] = ()
    tokenizer: TokenizerInfo | None = None
    stats: dict = field(default_factory=dict)  # split -> domain -> {documents, tokens, rows}


# ---------------------------------------------------------------- building the arrays

def fingerprint(cfg: TextConfig, files: dict[str, list[Path]], seed: int) -> str:
    """What the arrays depend on: the files (names, sizes, modification times), the tokenizer's
    files (contents), seq_len, the split fractions and the seed."""
    h = hashlib.sha256(TOKENS_FORMAT.encode())
    h.update(json.dumps([cfg.seq_len, cfg.val_fraction, cfg.test_fraction, split_seed(cfg, seed)]).encode())
    for name, paths in files.items():
        h.update(name.encode())
        for p in paths:
            st = p.stat()
            h.update(f"{p.resolve()} {st.st_size} {st.st_mtime_ns}".encode())
    for f in sorted(cfg.tokenizer.rglob("*")):
        if f.is_file():
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:24]


def _write_npy_from_raw(path: Path, raw: Path, shape: tuple[int, ...], dtype: str) -> None:
    """``path`` (atomic): a .npy file of ``shape`` whose data are the bytes of ``raw``."""
    def write(handle):
        np.lib.format.write_array_header_1_0(handle, {"descr": np.dtype(dtype).str, "fortran_order": False,
                                                      "shape": shape})
        with open(raw, "rb") as src:
            while block := src.read(1 << 22):
                handle.write(block)

    _atomic(path, write, "wb")


def build_token_arrays(cfg: TextConfig, files: dict[str, list[Path]], tokenizer, info: TokenizerInfo, seed: int,
                       out: Path, log=print) -> dict:
    """Tokenize and pack every split into ``out`` (``{split}_tokens.npy`` int32 [S, seq_len],
    ``{split}_domains.npy`` int64 [S], ``manifest.json`` last); skipped when ``out`` holds the
    arrays of the same inputs. Returns the manifest."""
    key = fingerprint(cfg, files, seed)
    manifest_path = out / "manifest.json"
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("fingerprint") == key:
            return manifest
        raise MtkdError(f"{out}: holds the token arrays of other inputs (the corpus, the tokenizer, seq_len or the "
                        "seed changed); use --restart to start over, or another --out / data.cache_dir")
    out.mkdir(parents=True, exist_ok=True)
    t = cfg.seq_len
    stats: dict = {}
    splits_of = {name: split_documents(paths, cfg, split_seed(cfg, seed), name) for name, paths in files.items()}
    for split in SPLITS:
        stats[split] = {}
        domain_rows = []
        for hook in BEFORE_WRITE:  # the temporary raw file is mtkd's: listed in the run's marker
            hook(out / f"{split}_tokens.npy")
        fd, raw_name = tempfile.mkstemp(dir=out, prefix=f".{split}.", suffix=".raw.tmp")
        raw = Path(raw_name)
        try:
            with os.fdopen(fd, "wb") as handle:
                for d, name in enumerate(files):
                    docs = splits_of[name][split]
                    count = 0
                    for path in docs:
                        text = path.read_text(encoding="utf-8", errors="replace")
                        ids = tokenizer.encode(text, add_special_tokens=False, verbose=False) if text else []
                        if not ids:
                            continue
                        ids = np.asarray(ids + [info.eos_id], dtype=np.int32)
                        handle.write(ids.tobytes())
                        count += len(ids)
                    rows = -(-count // t)
                    if rows * t > count:  # the domain's last row: filled with padding
                        handle.write(np.full(rows * t - count, info.pad_id, dtype=np.int32).tobytes())
                    domain_rows.append(rows)
                    stats[split][name] = {"documents": len(docs), "tokens": count, "rows": rows}
            total = sum(domain_rows)
            if split != "val" and any(r == 0 for r in domain_rows):
                empty = [n for n, r in zip(files, domain_rows) if r == 0]
                raise MtkdError(f"data.domains: the {split} documents of {empty} hold no tokens; add text to them")
            _write_npy_from_raw(out / f"{split}_tokens.npy", raw, (total, t), "int32")
            domains = np.repeat(np.arange(len(files), dtype=np.int64), domain_rows)
            _atomic(out / f"{split}_domains.npy", lambda h: np.save(h, domains), "wb")
        finally:
            raw.unlink(missing_ok=True)
    manifest = {"format": TOKENS_FORMAT, "fingerprint": key, "seq_len": t, "domains": list(files),
                "tokenizer": {"vocab": info.vocab, "eos_id": info.eos_id, "pad_id": info.pad_id}, "stats": stats}
    write_json(manifest_path, manifest)
    n = {s: sum(v["tokens"] for v in stats[s].values()) for s in SPLITS}
    log(f"tokenized the corpus: {n['train']:,} train, {n['val']:,} validation, {n['test']:,} test tokens "
        f"in rows of {t} ({out})")
    return manifest


def _open(path: Path) -> torch.Tensor:
    array = np.load(path, mmap_mode="r", allow_pickle=False)
    with warnings.catch_warnings():  # the map is read-only; mtkd never writes to it
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


def open_token_splits(out: Path, info: TokenizerInfo) -> TextSplits:
    """The arrays :func:`build_token_arrays` wrote, memory-mapped."""
    manifest = json.loads((out / "manifest.json").read_text())
    parts, names = {}, tuple(manifest["domains"])
    for split in SPLITS:
        tokens, domains = _open(out / f"{split}_tokens.npy"), _open(out / f"{split}_domains.npy")
        parts[split] = TokenDataset(tokens, domains, info.eos_id, info.pad_id, domain_names=names)
    val = parts["val"] if len(parts["val"]) else None
    return TextSplits("text", parts["train"], parts["test"], val, None, num_classes=info.vocab,
                      input_shape=(manifest["seq_len"],), class_names=[], domain_names=names, tokenizer=info,
                      stats=manifest["stats"])


def prepare_text(cfg: TextConfig):
    """Every check of a text data set that reads no token (files, tokenizer): (files, tokenizer, info)."""
    tokenizer, info = open_tokenizer(cfg)
    return domain_files(cfg), tokenizer, info


def load(cfg: TextConfig, seed: int = 0, log=print) -> TextSplits:
    """Check, tokenize into ``data.cache_dir`` (once) and open the corpus (``mtkd.load_dataset("text", ...)``)."""
    if cfg.cache_dir is None:
        raise MtkdError("data.cache_dir: loading a text data set outside `mtkd run` writes its token arrays there; "
                        "give a directory")
    files, tokenizer, info = prepare_text(cfg)
    build_token_arrays(cfg, files, tokenizer, info, seed, cfg.cache_dir, log)
    return open_token_splits(cfg.cache_dir, info)
