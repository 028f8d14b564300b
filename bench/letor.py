"""Real learning-to-rank data: svmlight/LibSVM files with ``qid:`` (MSLR-WEB10K/30K, Yahoo LTR, Istella).

Layouts (``--data-path``):
- a directory holding ``train.txt``, ``vali.txt`` (or ``valid.txt``) and ``test.txt``
  (one ``Fold*`` directory of MSLR/Istella; a directory of folds asks to pick one);
- three files, comma-separated: ``TRAIN,VALID,TEST`` (e.g. Yahoo's ``set1.*.txt``).

Mapping onto the benchmark (docs/workloads.md):
- a query is a user; its features are the mean of its documents' standardised features;
- its documents are the candidates: the top ``candidates`` (S) by the initial ranker,
  padded and masked when a query has fewer; the displayed slate is the top
  ``slate_length`` (T) of them (shorter, masked, when the query has fewer documents);
- the initial ranker is a linear model (ridge regression of the label on the scaled
  features, fitted on the train split) or one feature column (``feature:<id>``);
- labels are the graded relevance (or clicks simulated from it, with ``--labels clicks``);
  the relevance also plays the part of the true utility (regret is in grade units).

Feature ids are used as column numbers as they appear in the file (``zero_based=True``), so
``feature:1`` is the file's feature 1; a 1-based file simply has an unused all-zero column 0.
Features are standardised with the train split's per-column mean and standard deviation
and clipped to +-CLIP.

Parsing uses scikit-learn's svmlight reader in chunks (a progress line per chunk for large
files); the parsed arrays are cached in ``.rerank-bench-cache/`` next to each file, keyed
by a hash of the file's content (a cache that cannot be read is parsed again). Bad files raise
``LetorError`` (a ``ConfigError``) naming the file and line; feature ids above MAX_FEATURE_ID and
qids outside 64-bit integers are refused.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from bench.config import ConfigError, WorkloadConfig
from bench.data import MAX_GRADE, SlateData, Workload, simulate_clicks
from rerankers import SlateBatch

SPLIT_FILES = {"train": ("train.txt",), "valid": ("vali.txt", "valid.txt"), "test": ("test.txt",)}
CACHE_DIR = ".rerank-bench-cache"
CACHE_VERSION = 2  # 2: keyed on a hash of the content instead of size and modification time
MAX_FEATURE_ID = 1_000_000  # MSLR has 136 features, Istella 220, Yahoo 700: a larger id is a broken file
INT64_MAX = 2**63 - 1
CHUNK_BYTES = 32 * 1024 * 1024
CLIP = 10.0
RIDGE_ALPHA = 1.0

Progress = Callable[[str], None]


class LetorError(ConfigError):
    """A LETOR file or layout the loader cannot use; the message names the file (and line)."""


@dataclass(frozen=True)
class ParsedFile:
    features: sp.csr_matrix  # [documents, features] float32
    labels: np.ndarray  # [documents] float32
    qid: np.ndarray  # [documents] int64
    path: Path


# --- layout ---------------------------------------------------------------------------


def resolve_files(data_path: str) -> dict[str, Path]:
    """train/valid/test file paths from a directory or from TRAIN,VALID,TEST."""
    if "," in data_path:
        parts = [Path(p.strip()) for p in data_path.split(",")]
        if len(parts) != 3:
            raise LetorError(f"--data-path with files needs exactly TRAIN,VALID,TEST, got {len(parts)} paths")
        for part in parts:
            if not part.is_file():
                raise LetorError(f"--data-path: {part}: no such file")
        return dict(zip(("train", "valid", "test"), parts, strict=True))
    root = Path(data_path)
    if not root.exists():
        raise LetorError(f"--data-path {root}: no such directory")
    if root.is_file():
        raise LetorError(f"--data-path {root} is a file; pass its directory, or TRAIN,VALID,TEST files")
    files = {}
    for split, names in SPLIT_FILES.items():
        found = [root / name for name in names if (root / name).is_file()]
        if found:
            files[split] = found[0]
    if len(files) == 3:
        return files
    folds = sorted(p.name for p in root.glob("Fold*") if p.is_dir())
    if folds and not files:
        raise LetorError(f"{root} holds folds ({', '.join(folds)}); pass one of them, e.g. {root / folds[0]}")
    missing = [" or ".join(SPLIT_FILES[s]) for s in SPLIT_FILES if s not in files]
    raise LetorError(f"{root} has no {', '.join(missing)}")


# --- parsing, with line-level errors ----------------------------------------------------


def _line_problem(raw: bytes) -> str | None:
    """Why one line is not ``label qid:<int> id:value ...`` (None when it is fine)."""
    text = raw.split(b"#", 1)[0].strip()
    if not text:
        return None
    tokens = text.split()
    try:
        float(tokens[0])
    except ValueError:
        return f"the label {tokens[0].decode(errors='replace')!r} is not a number"
    if len(tokens) < 2 or not tokens[1].startswith(b"qid:"):
        return "missing qid (expected 'label qid:<id> feature:value ...')"
    try:
        qid = int(tokens[1][4:])
    except ValueError:
        return f"qid {tokens[1][4:].decode(errors='replace')!r} is not an integer"
    if not -INT64_MAX - 1 <= qid <= INT64_MAX:
        return f"qid {qid} is out of range (a 64-bit integer)"
    previous = -1
    for token in tokens[2:]:
        index, sep, value = token.partition(b":")
        shown = token.decode(errors="replace")
        try:
            number = int(index)
            float(value)
        except ValueError:
            return f"malformed feature {shown!r} (expected id:value)"
        if not sep or number < 0:
            return f"malformed feature {shown!r} (expected id:value)"
        if number > MAX_FEATURE_ID:
            return f"feature id {number} is beyond {MAX_FEATURE_ID:,} (a broken file?)"
        if number <= previous:
            return f"feature ids must increase along a line ({shown!r} after id {previous})"
        previous = number
    return None


def _locate(path: Path, chunk: bytes, first_line: int, fallback: str) -> LetorError:
    for offset, raw in enumerate(chunk.split(b"\n")):
        problem = _line_problem(raw)
        if problem:
            return LetorError(f"{path}, line {first_line + offset}: {problem}")
    return LetorError(f"{path}: cannot parse ({fallback})")


def _parse(path: Path, progress: Progress | None) -> ParsedFile:
    from sklearn.datasets import load_svmlight_file

    total = path.stat().st_size
    matrices, labels, qids = [], [], []
    first_line, done = 1, 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            if not chunk.endswith(b"\n"):
                chunk += handle.readline()
            try:
                X, y, q = load_svmlight_file(io.BytesIO(chunk), dtype=np.float32, zero_based=True, query_id=True)
            except (ValueError, OverflowError) as error:
                raise _locate(path, chunk, first_line, str(error)) from None
            if len(q) != len(y):  # the reader silently drops a missing qid
                raise _locate(path, chunk, first_line, "a line has no qid")
            matrices.append(X)
            labels.append(y.astype(np.float32))
            qids.append(q.astype(np.int64))
            first_line += chunk.count(b"\n")
            done += len(chunk)
            if progress is not None and total > CHUNK_BYTES:
                progress(f"parsing {path.name}: {done / 2**20:,.0f} / {total / 2**20:,.0f} MiB")
    y = np.concatenate(labels) if labels else np.zeros(0, np.float32)
    if len(y) == 0:
        raise LetorError(f"{path}: no documents (empty split)")
    width = max(m.shape[1] for m in matrices)
    for m in matrices:
        m.resize((m.shape[0], width))
    if width > MAX_FEATURE_ID + 1:
        line = _first_line_where(path, lambda raw: _feature_ids(raw, MAX_FEATURE_ID + 1))
        raise LetorError(
            f"{path}{_at(line)}: feature id {width - 1:,} is beyond {MAX_FEATURE_ID:,} "
            "(each cell would hold that many feature columns; a broken file?)"
        )
    features = sp.vstack(matrices, format="csr")
    if not np.isfinite(features.data).all() or not np.isfinite(y).all():
        line = _first_line_where(path, _has_non_finite)
        raise LetorError(f"{path}{_at(line)}: contains a non-finite value (nan or inf)")
    return ParsedFile(features, y, np.concatenate(qids), path)


def _at(line: int | None) -> str:
    return f", line {line}" if line else ""


def _first_line_where(path: Path, test: Callable[[bytes], bool]) -> int | None:
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if test(raw):
                return number
    return None


def _feature_ids(raw: bytes, at_least: int) -> bool:
    tokens = raw.split(b"#", 1)[0].split()
    return any(int(t.partition(b":")[0]) >= at_least for t in tokens[2:] if t.partition(b":")[0].isdigit())


def _has_non_finite(raw: bytes) -> bool:
    tokens = raw.split(b"#", 1)[0].split()
    values = tokens[:1] + [t.partition(b":")[2] for t in tokens[2:]]
    try:
        return not all(np.isfinite(float(v)) for v in values)
    except ValueError:
        return False


def content_hash(path: Path) -> str:
    """A hash of the file's bytes: the cache's key (size and modification time can stay while content changes)."""
    import hashlib

    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def _cache_path(path: Path) -> Path:
    return path.parent / CACHE_DIR / f"{path.name}.{content_hash(path)}.v{CACHE_VERSION}.npz"


def _read_cache(cache: Path, path: Path) -> ParsedFile:
    with np.load(cache) as z:
        features = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
        labels, qid = z["labels"], z["qid"]
    if not (len(labels) == len(qid) == features.shape[0]):
        raise ValueError("arrays of different lengths")
    return ParsedFile(features, labels, qid, path)


def read_file(path: Path, progress: Progress | None = None) -> ParsedFile:
    """Parsed arrays of one file, from the cache next to it when the file's content has not changed."""
    try:
        cache = _cache_path(path)
    except OSError as error:
        raise LetorError(f"{path}: cannot read: {error.strerror or error}") from None
    if cache.is_file():
        try:
            return _read_cache(cache, path)
        except Exception as error:  # noqa: BLE001 - a truncated or foreign cache file: parse the data again
            if progress is not None:
                progress(f"ignoring the unreadable cache {cache} ({type(error).__name__}); parsing {path.name}")
    parsed = _parse(path, progress)
    try:
        cache.parent.mkdir(exist_ok=True)
        for stale in cache.parent.glob(f"{path.name}.*.npz"):
            stale.unlink()
        partial = cache.with_suffix(f".{os.getpid()}.tmp")
        with open(partial, "wb") as handle:
            X = parsed.features
            np.savez(
                handle,
                data=X.data,
                indices=X.indices,
                indptr=X.indptr,
                shape=np.array(X.shape),
                labels=parsed.labels,
                qid=parsed.qid,
            )
        os.replace(partial, cache)
    except OSError as error:  # a read-only data directory: parse every time
        if progress is not None:
            progress(f"cannot cache {path.name} in {cache.parent}: {error}")
    return parsed


def _first_line_with_feature_beyond(path: Path, width: int) -> int | None:
    return _first_line_where(path, lambda raw: _feature_ids(raw, width))


def _negative_label(raw: bytes) -> bool:
    tokens = raw.split(b"#", 1)[0].split()
    try:
        return bool(tokens) and float(tokens[0]) < 0
    except ValueError:
        return False


def _check_labels(parsed: ParsedFile) -> None:
    """Relevance grades are 0 or more: a negative label (some files mark unjudged documents -1) is refused, naming
    its line, before it can turn the training loss into NaN."""
    negative = parsed.labels < 0
    if negative.any():
        line = _first_line_where(parsed.path, _negative_label)
        raise LetorError(
            f"{parsed.path}{_at(line)}: the label {parsed.labels[negative][0]:g} is negative "
            "(relevance grades are 0 or more)"
        )


@dataclass(frozen=True)
class QueryUse:
    """Which queries of a split can rank: two documents or more, and a relevant one (label > 0)."""

    usable_rows: np.ndarray  # [documents] bool: the document's query can rank
    queries: int
    one_document: int  # queries with fewer than two documents: every order is right
    no_relevant: int  # queries of two documents or more, none relevant: no order is better

    @classmethod
    def of(cls, parsed: ParsedFile) -> QueryUse:
        _, group, counts = np.unique(parsed.qid, return_inverse=True, return_counts=True)
        best = np.zeros(len(counts), np.float32)
        np.maximum.at(best, group, parsed.labels)
        single, unjudged = counts < 2, (counts >= 2) & (best <= 0)
        usable = ~single & ~unjudged
        return cls(usable[group], len(counts), int(single.sum()), int(unjudged.sum()))

    @property
    def left_out(self) -> int:
        return self.one_document + self.no_relevant

    def describe(self) -> str:
        return f"{self.one_document} with one document, {self.no_relevant} without a relevant document"


EVALUATED = ("valid", "test")  # the splits whose queries that cannot rank are left out (train keeps every query)


def check_use(parsed: dict[str, ParsedFile]) -> dict[str, QueryUse]:
    """Each split's ``QueryUse``; a LetorError when the train split has no query to learn from, or valid or test
    none to judge."""
    uses = {split: QueryUse.of(p) for split, p in parsed.items()}
    for split, use in uses.items():
        if use.left_out == use.queries:
            purpose = "learn from" if split == "train" else "judge"
            raise LetorError(
                f"{parsed[split].path}: no query has two documents and a relevant one (label > 0), nothing to "
                f"{purpose} (of {use.queries} queries: {use.describe()})"
            )
    return uses


def _usable(parsed: ParsedFile, use: QueryUse) -> ParsedFile:
    rows = use.usable_rows
    return ParsedFile(parsed.features[rows], parsed.labels[rows], parsed.qid[rows], parsed.path)


def read_splits(data_path: str, progress: Progress | None = None) -> dict[str, ParsedFile]:
    """Every split, parsed (or from the cache) and checked: labels, and features against the train split's."""
    files = resolve_files(data_path)
    parsed = {split: read_file(path, progress) for split, path in files.items()}
    for p in parsed.values():
        _check_labels(p)
    width = parsed["train"].features.shape[1]
    for split in ("valid", "test"):
        p = parsed[split]
        if p.features.shape[1] > width:
            line = _first_line_with_feature_beyond(p.path, width)
            where = f", line {line}" if line else ""
            raise LetorError(
                f"{p.path}{where}: feature id {p.features.shape[1] - 1} is beyond the train split's features "
                f"(ids up to {width - 1} in {parsed['train'].path})"
            )
        if p.features.shape[1] < width:
            p.features.resize((p.features.shape[0], width))
    return parsed


def prepare(config: WorkloadConfig, progress: Progress | None = None) -> dict[str, int]:
    """Parse and cache every split up front (the CLI does this before any cell), check them (``check_use``) and
    say how many queries evaluation leaves out; queries per split."""
    parsed = read_splits(config.data_path or "", progress)
    _check_ranker(config, parsed["train"].features.shape[1])
    uses = check_use(parsed)
    for split in EVALUATED:
        use = uses[split]
        if use.left_out and progress is not None:
            progress(f"{split}: {use.left_out:,} of {use.queries:,} queries left out of evaluation ({use.describe()})")
    return {split: use.queries for split, use in uses.items()}


def _check_ranker(config: WorkloadConfig, width: int) -> None:
    if config.initial_ranker.startswith("feature:") and int(config.initial_ranker[8:]) >= width:
        raise LetorError(f"initial ranker {config.initial_ranker}: the data has feature ids up to {width - 1}")


# --- building slates --------------------------------------------------------------------


@dataclass(frozen=True)
class _Scaling:
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, X: sp.csr_matrix) -> _Scaling:
        mean = np.asarray(X.mean(axis=0)).ravel().astype(np.float64)
        square = np.asarray(X.multiply(X).mean(axis=0)).ravel()
        std = np.sqrt(np.maximum(square - mean**2, 0.0))
        return cls(mean, np.where(std > 0, std, 1.0))

    def apply(self, dense: np.ndarray) -> np.ndarray:
        return np.clip((dense - self.mean) / self.std, -CLIP, CLIP).astype(np.float32)


def _initial_scorer(
    config: WorkloadConfig, train: ParsedFile, scaling: _Scaling
) -> Callable[[sp.csr_matrix], np.ndarray]:
    _check_ranker(config, train.features.shape[1])
    if config.initial_ranker.startswith("feature:"):
        column = int(config.initial_ranker[8:])
        return lambda X: np.asarray(X[:, column].todense()).ravel()
    from sklearn.linear_model import Ridge

    scale = sp.diags(1.0 / scaling.std)
    ridge = Ridge(alpha=RIDGE_ALPHA).fit(train.features @ scale, train.labels)
    return lambda X: ridge.predict(X @ scale)


def _ranked_documents(
    parsed: ParsedFile, scores: np.ndarray, limit: int, rng: np.random.Generator, shuffle_queries: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The documents of the first ``limit`` queries (in file order, or shuffled), each query's by initial score
    descending (ties in file order): (document rows, query slot of each, documents per query, rank of each)."""
    _, first, group = np.unique(parsed.qid, return_index=True, return_inverse=True)
    query_order = np.argsort(first, kind="stable")  # queries in file order (by first document)
    if shuffle_queries:
        query_order = rng.permutation(query_order)
    query_order = query_order[:limit]
    slot_of_query = np.full(len(first), -1)
    slot_of_query[query_order] = np.arange(len(query_order))
    row_query = slot_of_query[group]  # -1: query left out
    rows = np.lexsort((np.arange(len(scores)), -scores, row_query))
    rows = rows[row_query[rows] >= 0]
    query_of_row = row_query[rows]
    counts = np.bincount(query_of_row, minlength=len(query_order))
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    return rows, query_of_row, counts, np.arange(len(rows)) - starts[query_of_row]


def _lists(
    parsed: ParsedFile,
    scores: np.ndarray,
    scaling: _Scaling,
    config: WorkloadConfig,
    limit: int,
    rng: np.random.Generator,
    shuffle_queries: bool,
    device: torch.device | str,
) -> SlateData:
    S, T = config.candidates, config.slate_length
    rows, query_of_row, counts, rank = _ranked_documents(parsed, scores, limit, rng, shuffle_queries)
    Q = len(counts)
    # User features: the mean of all the query's documents, standardised.
    membership = sp.csr_matrix((np.ones(len(rows)), (query_of_row, rows)), shape=(Q, parsed.features.shape[0]))
    user = scaling.apply(np.asarray((membership @ parsed.features).todense()) / counts[:, None])
    # Candidates: the top S of each query, in a seeded random slot order (the index carries no signal).
    keep = rank < S
    kept_rows, kept_query, kept_rank = rows[keep], query_of_row[keep], rank[keep]
    real = np.minimum(counts, S)
    keys = rng.random((Q, S))
    keys[np.arange(S)[None, :] >= real[:, None]] = 2.0  # padding takes the last slots
    rank_of_slot = np.argsort(keys, axis=1, kind="stable")  # [Q, S]: rank held by each slot
    slot_of_rank = np.argsort(rank_of_slot, axis=1, kind="stable")
    slot = slot_of_rank[kept_query, kept_rank]
    F = parsed.features.shape[1]
    items = np.zeros((Q, S, F), np.float32)
    items[kept_query, slot] = scaling.apply(parsed.features[kept_rows].toarray())
    relevance = np.zeros((Q, S), np.float32)
    relevance[kept_query, slot] = parsed.labels[kept_rows]
    mask = np.arange(S)[None, :] < real[:, None]
    positions = np.where(mask, rank_of_slot, np.arange(S)[None, :])  # padding keeps ranks >= real
    slate = slot_of_rank[:, :T]
    slate_mask = np.arange(T)[None, :] < np.minimum(counts, T)[:, None]
    inputs = SlateBatch(
        user=torch.from_numpy(user),
        items=torch.from_numpy(items),
        mask=torch.from_numpy(mask),
        positions=torch.from_numpy(positions.astype(np.int64)),
    )
    slate_t = torch.from_numpy(slate.astype(np.int64))
    slate_mask_t = torch.from_numpy(slate_mask)
    utility = torch.from_numpy(relevance)
    slate_relevance = utility.gather(1, slate_t).masked_fill(~slate_mask_t, 0.0)
    if config.labels == "graded":
        labels = slate_relevance
    else:
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        grades = slate_relevance.clamp(0, MAX_GRADE)
        labels = simulate_clicks(config.click_model, slate_relevance, grades, slate_mask_t, config.eta, generator)
    return SlateData(inputs, slate_t, labels, utility, slate_mask_t).to(device)


def rng(seed: int, split_index: int) -> np.random.Generator:
    return np.random.default_rng([seed, split_index])


def load_letor(config: WorkloadConfig, seed: int, device: torch.device | str = "cpu") -> Workload:
    """The three splits as slates, built on the CPU and moved to ``device`` once."""
    parsed = read_splits(config.data_path or "")
    uses = check_use(parsed)
    parsed.update({split: _usable(parsed[split], uses[split]) for split in EVALUATED})
    train = parsed["train"]
    scaling = _Scaling.fit(train.features)
    score = _initial_scorer(config, train, scaling)
    limits = {
        "train": config.batch_size * config.batches,
        "valid": config.valid_slates,
        "test": config.test_slates,
    }
    splits = {
        # One random stream per split: the test lists do not depend on how much training data is used.
        split: _lists(p, score(p.features), scaling, config, limits[split], rng(seed, i), split == "train", device)
        for i, (split, p) in enumerate(parsed.items())
    }
    info = {
        "files": {split: str(p.path) for split, p in parsed.items()},
        "file_bytes": {split: p.path.stat().st_size for split, p in parsed.items()},
        "queries_in_files": {split: use.queries for split, use in uses.items()},
        "queries_left_out": {split: uses[split].left_out for split in EVALUATED},
        "initial_ranker": config.initial_ranker,
    }
    return Workload(source="letor", info=info, **splits)
