"""The gene x gene network container shared by scPRINT, the baselines and the metrics.

A :class:`GeneNetwork` holds one score per ordered gene pair in a square matrix, dense
(:class:`numpy.ndarray`) or sparse (CSR), together with the genes (an index of ids, e.g.
Ensembl, and optional metadata columns such as ``symbol``) and its **orientation**:

``"target_by_regulator"`` (the default)
    row ``i`` is a target and column ``j`` a regulator: ``M[i, j]`` scores the edge
    ``genes[j] -> genes[i]`` (regulator ``j`` acts on target ``i``).
``"regulator_by_target"``
    the transpose: ``M[i, j]`` scores the edge ``genes[i] -> genes[j]``.

Entries equal to zero are not edges (a sparse matrix's implicit zeros and a dense
matrix's zeros alike); every other entry is an edge with that score, higher meaning more
confident. Negative scores (e.g. correlations) are edges ranked below the positive ones.

Underneath is an :class:`anndata.AnnData` with no cells: ``var`` holds the genes,
``varp["network"]`` the matrix and ``uns`` the ``orientation``, the ``method`` and its
``params`` (JSON-compatible). It is written to and read from ``.h5ad``.

Typical use::

    from bengrn import GeneNetwork

    net = GeneNetwork(scores, genes, var=var, method="correlation")
    top = net.edges(top_k=1000)          # regulator, target, score, sorted by score
    net.write("net.h5ad")
    net = GeneNetwork.read("net.h5ad")
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = ["NETWORK_KEY", "ORIENTATIONS", "GeneNetwork", "Orientation"]

logger = logging.getLogger(__name__)

Orientation = Literal["target_by_regulator", "regulator_by_target"]
ORIENTATIONS: tuple[str, ...] = get_args(Orientation)
Matrix = np.ndarray | sp.csr_matrix | sp.csr_array

#: The ``varp`` key of the matrix in the underlying AnnData and in written files.
NETWORK_KEY = "network"
_ORIENTATION_KEY = "orientation"
_METHOD_KEY = "method"
_PARAMS_KEY = "params"
_SYMBOL = "symbol"
# Dense matrices are scanned in blocks of about this many entries (bounded memory).
_BLOCK_ENTRIES = 1 << 22
# How many genes an error message lists.
_SHOW = 5


def _show(items: Sequence[Any]) -> str:
    items = list(items)
    more = f" (and {len(items) - _SHOW} more)" if len(items) > _SHOW else ""
    return ", ".join(repr(x) for x in items[:_SHOW]) + more


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _normalise_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """The params as they will read back from a file: a JSON round trip."""
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a mapping, not {type(params).__name__}")
    try:
        return json.loads(json.dumps(dict(params), default=_json_default))
    except (TypeError, ValueError) as err:
        raise ValueError(f"params must be JSON-compatible: {err}") from err


def _check_orientation(orientation: str) -> str:
    if orientation not in ORIENTATIONS:
        raise ValueError(f"orientation must be one of {ORIENTATIONS}, not {orientation!r}")
    return orientation


def _as_matrix(matrix: Any) -> Matrix:
    """A float ndarray or a CSR matrix/array, sharing memory with the input when possible."""
    if isinstance(matrix, pd.DataFrame):
        raise TypeError("got a DataFrame: use GeneNetwork.from_dataframe")
    if sp.issparse(matrix):
        if matrix.format != "csr":
            matrix = matrix.tocsr()
    else:
        matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"the network matrix must be square 2-D, got shape {matrix.shape}")
    if np.issubdtype(matrix.dtype, np.complexfloating) or not (
        np.issubdtype(matrix.dtype, np.number) or matrix.dtype == bool
    ):
        raise TypeError(f"the network matrix must hold real numbers, not {matrix.dtype}")
    if not np.issubdtype(matrix.dtype, np.floating):
        matrix = matrix.astype(np.float32)
    values = matrix.data if sp.issparse(matrix) else matrix
    # A float64 sum of finite values cannot overflow: one pass, no boolean temporary.
    if values.size and not np.isfinite(np.sum(values, dtype=np.float64)):
        bad = int(values.size - np.count_nonzero(np.isfinite(values)))
        if bad:
            raise ValueError(
                f"the network matrix has {bad} non-finite values (NaN or inf); "
                "replace them (e.g. np.nan_to_num) first"
            )
    if not values.flags["C_CONTIGUOUS"] and not sp.issparse(matrix):
        matrix = np.ascontiguousarray(matrix)
    return matrix


def _best(
    values: np.ndarray, k: int | None, keys: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """Positions of the ``k`` largest values above ``-inf`` (all of them if ``k`` is None);
    ties at the cut go to the smallest ``keys``. Unordered; linear time (no full sort)."""
    if k is None or k >= values.size:
        return np.flatnonzero(values > -np.inf)
    if k == 0:
        return np.empty(0, dtype=np.intp)
    cut = values.size - k
    kth = np.partition(values, cut)[cut]  # the k-th largest value
    if kth == -np.inf:  # fewer than k candidates
        return np.flatnonzero(values > -np.inf)
    above = np.flatnonzero(values > kth)
    tied = np.flatnonzero(values == kth)
    need = k - above.size  # >= 1 since kth is the k-th largest
    if tied.size > need:
        tied = tied[np.argpartition(keys(tied), need - 1)[:need]]
    return np.concatenate([above, tied])


class GeneNetwork:
    """A directed gene x gene network: scores in a square matrix with named genes.

    Parameters
    ----------
    matrix
        Square scores, dense (any real dtype; integers and booleans become float32) or
        sparse (converted to CSR). Otherwise kept as given: no copy, unless a dense array
        is not C-contiguous. NaN or infinite values are refused. Zeros are not edges.
    genes
        Gene ids naming both rows and columns, unique. Defaults to ``var``'s index.
    var
        Gene metadata indexed by gene id (a ``symbol`` column adds symbols to
        :meth:`edges`); reordered to ``genes``; it must cover every gene.
    orientation
        ``"target_by_regulator"``: ``matrix[i, j]`` scores regulator ``genes[j]`` ->
        target ``genes[i]``; ``"regulator_by_target"``: regulator ``genes[i]`` -> target
        ``genes[j]``.
    method
        What made the network (free text), for provenance.
    params
        Settings of the method, for provenance; must be JSON-compatible (they are stored
        as JSON: tuples come back as lists, numpy scalars as Python numbers).

    Examples
    --------
    >>> import numpy as np
    >>> net = GeneNetwork(np.array([[0, 0.9], [0.1, 0]]), ["a", "b"])
    >>> net.edges().values.tolist()  # row = target, column = regulator
    [['b', 'a', 0.9], ['a', 'b', 0.1]]
    """

    def __init__(
        self,
        matrix: Matrix,
        genes: Sequence[str] | pd.Index | None = None,
        *,
        var: pd.DataFrame | None = None,
        orientation: Orientation = "target_by_regulator",
        method: str = "",
        params: Mapping[str, Any] | None = None,
    ) -> None:
        matrix = _as_matrix(matrix)
        _check_orientation(orientation)
        if genes is None:
            if var is None:
                raise ValueError("give the genes, or a var DataFrame indexed by them")
            genes = var.index
        genes = pd.Index(genes)
        if genes.ndim != 1 or len(genes) != matrix.shape[0]:
            raise ValueError(
                f"{len(genes)} genes for a {matrix.shape[0]} x {matrix.shape[1]} matrix"
            )
        if not genes.is_unique:
            dup = genes[genes.duplicated()].unique()
            raise ValueError(f"gene ids must be unique; {len(dup)} repeated: {_show(dup)}")
        genes = genes.astype(str)
        if not genes.is_unique:
            raise ValueError("gene ids must stay unique as strings")
        if var is None:
            var = pd.DataFrame(index=genes)
        else:
            var = var.copy()
            var.index = var.index.astype(str)
            if not var.index.is_unique:
                raise ValueError("var's index must be unique")
            missing = genes.difference(var.index)
            if len(missing):
                raise ValueError(f"var lacks {len(missing)} genes: {_show(missing)}")
            var = var.loc[genes]
        var.index.name = None
        self._adata = ad.AnnData(
            obs=pd.DataFrame(index=pd.Index([], dtype=str)),
            var=var,
            varp={NETWORK_KEY: matrix},
            uns={
                _ORIENTATION_KEY: orientation,
                _METHOD_KEY: str(method),
                _PARAMS_KEY: _normalise_params(params),
            },
        )

    # ---------------------------------------------------------------- properties

    @property
    def adata(self) -> ad.AnnData:
        """The underlying AnnData (no cells; ``var``, ``varp["network"]``, ``uns``)."""
        return self._adata

    @property
    def matrix(self) -> Matrix:
        """The scores, dense or CSR, in this network's :attr:`orientation`."""
        return self._adata.varp[NETWORK_KEY]

    @property
    def genes(self) -> pd.Index:
        """Gene ids, naming rows and columns alike."""
        return self._adata.var_names

    @property
    def var(self) -> pd.DataFrame:
        """Gene metadata indexed by gene id."""
        return self._adata.var

    @property
    def n_genes(self) -> int:
        """Number of genes (the matrix is ``n_genes x n_genes``)."""
        return self._adata.n_vars

    @property
    def orientation(self) -> Orientation:
        """``"target_by_regulator"`` or ``"regulator_by_target"``."""
        return self._adata.uns[_ORIENTATION_KEY]

    @property
    def is_sparse(self) -> bool:
        """Whether the matrix is a scipy sparse matrix."""
        return sp.issparse(self.matrix)

    @property
    def method(self) -> str:
        """What made the network."""
        return self._adata.uns[_METHOD_KEY]

    @property
    def params(self) -> dict[str, Any]:
        """The method's settings."""
        return self._adata.uns[_PARAMS_KEY]

    def __repr__(self) -> str:
        m = self.matrix
        kind = f"sparse {m.dtype}, nnz={m.nnz}" if self.is_sparse else f"dense {m.dtype}"
        method = f", method={self.method!r}" if self.method else ""
        return f"GeneNetwork({self.n_genes} genes, {kind}, {self.orientation}{method})"

    def _like(
        self,
        matrix: Matrix,
        *,
        var: pd.DataFrame | None = None,
        orientation: Orientation | None = None,
    ) -> GeneNetwork:
        return GeneNetwork(
            matrix,
            var=self.var if var is None else var,
            orientation=orientation or self.orientation,
            method=self.method,
            params=copy.deepcopy(self.params),
        )

    # -------------------------------------------------------------- orientation

    def transpose(self) -> GeneNetwork:
        """The same network stored the other way round: the transposed matrix with the
        other orientation. Every edge keeps its direction (see :meth:`reverse` to swap it).
        """
        m = self.matrix
        m = m.T.tocsr() if sp.issparse(m) else np.ascontiguousarray(m.T)
        other = ORIENTATIONS[1 - ORIENTATIONS.index(self.orientation)]
        return self._like(m, orientation=other)

    def as_target_by_regulator(self) -> GeneNetwork:
        """This network with rows as targets and columns as regulators (``self`` if so)."""
        return self if self.orientation == "target_by_regulator" else self.transpose()

    def as_regulator_by_target(self) -> GeneNetwork:
        """This network with rows as regulators and columns as targets (``self`` if so)."""
        return self if self.orientation == "regulator_by_target" else self.transpose()

    def reverse(self) -> GeneNetwork:
        """The network with every edge's direction swapped (regulator <-> target): the
        same matrix read with the other orientation label."""
        other = ORIENTATIONS[1 - ORIENTATIONS.index(self.orientation)]
        return self._like(self.matrix, orientation=other)

    # -------------------------------------------------------------------- edges

    def _stored_to_edge(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(regulator, target) positions of stored (row, column) positions."""
        if self.orientation == "target_by_regulator":
            return cols, rows
        return rows, cols

    def _candidates(
        self, top_k: int | None, threshold: float | None, self_edges: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stored rows, columns and scores of the edges that may be selected."""
        m = self.matrix
        n = self.n_genes

        def order_key(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
            reg, tgt = self._stored_to_edge(rows, cols)
            return reg.astype(np.int64) * n + tgt

        if sp.issparse(m):
            coo = m.tocoo()
            rows, cols, data = coo.row, coo.col, coo.data
            keep = data != 0
            if not self_edges:
                keep &= rows != cols
            if threshold is not None:
                keep &= data >= threshold
            rows, cols, data = rows[keep], cols[keep], data[keep]
            sel = _best(data, top_k, lambda p: order_key(rows[p], cols[p]))
            return rows[sel], cols[sel], data[sel]

        found_rows, found_cols, found_data = [], [], []
        step = max(1, _BLOCK_ENTRIES // max(n, 1))
        for start in range(0, n, step):
            stop = min(start + step, n)
            block = np.array(m[start:stop], copy=True)
            excluded = block == 0
            if threshold is not None:
                excluded |= block < threshold
            block[excluded] = -np.inf
            if not self_edges:
                block[np.arange(stop - start), np.arange(start, stop)] = -np.inf
            flat = block.ravel()

            def keys(p: np.ndarray, start: int = start) -> np.ndarray:
                return order_key(start + p // n, p % n)

            pos = _best(flat, top_k, keys)
            found_rows.append(start + pos // n)
            found_cols.append(pos % n)
            found_data.append(flat[pos])
        if not found_rows:
            empty = np.empty(0, dtype=np.intp)
            return empty, empty, np.empty(0, dtype=m.dtype)
        rows, cols, data = (np.concatenate(x) for x in (found_rows, found_cols, found_data))
        sel = _best(data, top_k, lambda p: order_key(rows[p], cols[p]))
        return rows[sel], cols[sel], data[sel]

    def edges(
        self,
        top_k: int | None = None,
        threshold: float | None = None,
        self_edges: bool = False,
    ) -> pd.DataFrame:
        """The edges as a table, best first.

        Parameters
        ----------
        top_k
            Keep the ``top_k`` best edges (after the other filters); all when None.
            Linear time: no full sort of the matrix.
        threshold
            Keep edges whose score is at least this.
        self_edges
            Keep edges from a gene to itself (the diagonal).

        Returns
        -------
        Columns ``regulator``, ``target`` (gene ids), ``score``, and
        ``regulator_symbol``, ``target_symbol`` when :attr:`var` has a ``symbol``
        column; sorted by score descending, ties by regulator then target position in
        :attr:`genes`. Zero entries are never edges.
        """
        if top_k is not None and (int(top_k) != top_k or top_k < 0):
            raise ValueError(f"top_k must be a non-negative integer, not {top_k!r}")
        top_k = None if top_k is None else int(top_k)
        rows, cols, score = self._candidates(top_k, threshold, self_edges)
        reg, tgt = self._stored_to_edge(rows, cols)
        order = np.lexsort((tgt, reg, -score))
        reg, tgt, score = reg[order], tgt[order], score[order]
        ids = self.genes.to_numpy()
        out = {"regulator": ids[reg], "target": ids[tgt], "score": score}
        if _SYMBOL in self.var.columns:
            symbols = self.var[_SYMBOL].to_numpy()
            out["regulator_symbol"] = symbols[reg]
            out["target_symbol"] = symbols[tgt]
        logger.debug("%d edges selected from %r", len(score), self)
        return pd.DataFrame(out)

    # ----------------------------------------------------------------- subsets

    def subset(self, genes: Sequence[str] | pd.Index) -> GeneNetwork:
        """The network restricted to ``genes``, in the order given.

        Raises
        ------
        KeyError
            When some genes are not in the network.
        """
        genes = pd.Index(genes).astype(str)
        if not genes.is_unique:
            dup = genes[genes.duplicated()].unique()
            raise ValueError(f"genes to keep are repeated: {_show(dup)}")
        idx = self.genes.get_indexer(genes)
        if (idx < 0).any():
            missing = genes[idx < 0]
            raise KeyError(f"{len(missing)} genes not in the network: {_show(missing)}")
        m = self.matrix
        m = m[idx][:, idx] if sp.issparse(m) else m[np.ix_(idx, idx)]
        return self._like(m, var=self.var.iloc[idx])

    # ------------------------------------------------------------- conversions

    def to_networkx(
        self,
        top_k: int | None = None,
        threshold: float | None = None,
        self_edges: bool = False,
    ) -> Any:
        """A :class:`networkx.DiGraph` with edges regulator -> target, attribute ``weight``
        the score; nodes carry :attr:`var`'s ``symbol`` when present. Filters as in
        :meth:`edges`. Needs ``networkx`` (``pip install networkx``)."""
        try:
            import networkx as nx
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError(
                "GeneNetwork.to_networkx needs networkx: pip install networkx"
            ) from err
        table = self.edges(top_k=top_k, threshold=threshold, self_edges=self_edges)
        graph = nx.DiGraph(method=self.method)
        graph.add_weighted_edges_from(
            zip(table["regulator"], table["target"], table["score"].astype(float), strict=True)
        )
        if _SYMBOL in self.var.columns:
            symbols = self.var[_SYMBOL]
            nx.set_node_attributes(graph, {g: symbols[g] for g in graph.nodes}, _SYMBOL)
        return graph

    def to_dataframe(self) -> pd.DataFrame:
        """The dense matrix as a DataFrame labelled by gene ids, in this orientation
        (``target_by_regulator``: index targets, columns regulators)."""
        m = self.matrix
        dense = m.toarray() if sp.issparse(m) else m
        return pd.DataFrame(dense, index=self.genes.copy(), columns=self.genes.copy())

    @classmethod
    def from_dataframe(
        cls,
        frame: pd.DataFrame,
        *,
        var: pd.DataFrame | None = None,
        orientation: Orientation = "target_by_regulator",
        method: str = "",
        params: Mapping[str, Any] | None = None,
    ) -> GeneNetwork:
        """A dense network from a labelled matrix.

        Parameters
        ----------
        frame
            Scores labelled by gene ids; for ``target_by_regulator`` the index holds the
            targets and the columns the regulators. Columns are reordered to the index.
            When they name different genes (e.g. targets x transcription factors) the
            genes are the index followed by the other columns, missing pairs scoring 0.
        var, orientation, method, params
            As for :class:`GeneNetwork`.
        """
        rows, cols = frame.index.astype(str), frame.columns.astype(str)
        if not rows.is_unique or not cols.is_unique:
            raise ValueError("the DataFrame's index and columns must be unique")
        values = frame.to_numpy()
        if rows.equals(cols):
            return cls(
                values, rows, var=var, orientation=orientation, method=method, params=params
            )
        genes = rows.append(cols.difference(rows, sort=False))
        if len(genes) > len(rows) or len(genes) > len(cols):
            logger.info(
                "from_dataframe: %d rows and %d columns make a network of %d genes",
                len(rows),
                len(cols),
                len(genes),
            )
        dtype = values.dtype if np.issubdtype(values.dtype, np.floating) else np.float32
        matrix = np.zeros((len(genes), len(genes)), dtype=dtype)
        matrix[np.ix_(genes.get_indexer(rows), genes.get_indexer(cols))] = values
        return cls(matrix, genes, var=var, orientation=orientation, method=method, params=params)

    @classmethod
    def from_edges(
        cls,
        edges: pd.DataFrame,
        *,
        source: str = "regulator",
        target: str = "target",
        weight: str | None = "score",
        genes: Sequence[str] | pd.Index | None = None,
        var: pd.DataFrame | None = None,
        sparse: bool = True,
        orientation: Orientation = "target_by_regulator",
        method: str = "",
        params: Mapping[str, Any] | None = None,
    ) -> GeneNetwork:
        """A network from an edge list.

        Parameters
        ----------
        edges
            One row per edge regulator -> target; each ordered pair at most once.
        source, target
            Columns of the regulator and target gene ids.
        weight
            Column of the scores; None scores every edge 1.
        genes
            The network's genes; defaults to the sorted union of sources and targets
            (or ``var``'s index). Every edge's genes must be among them.
        var
            Gene metadata; when None and the table has ``{source}_symbol`` and
            ``{target}_symbol`` columns (as :meth:`edges` gives), they fill ``symbol``.
        sparse
            Build a CSR matrix (else dense).
        orientation, method, params
            As for :class:`GeneNetwork`.
        """
        for col in (source, target) + ((weight,) if weight is not None else ()):
            if col not in edges.columns:
                raise KeyError(f"the edge table has no column {col!r}")
        src = edges[source].astype(str).to_numpy()
        tgt = edges[target].astype(str).to_numpy()
        if genes is None:
            genes = var.index if var is not None else pd.Index(np.union1d(src, tgt))
        genes = pd.Index(genes).astype(str)
        if not genes.is_unique:
            dup = genes[genes.duplicated()].unique()
            raise ValueError(f"gene ids must be unique; {len(dup)} repeated: {_show(dup)}")
        s_idx, t_idx = genes.get_indexer(src), genes.get_indexer(tgt)
        unknown = np.unique(np.concatenate([src[s_idx < 0], tgt[t_idx < 0]]))
        if unknown.size:
            raise KeyError(f"{unknown.size} edge genes not in genes: {_show(unknown)}")
        pairs = pd.DataFrame({"s": s_idx, "t": t_idx})
        dup = pairs.duplicated()
        if dup.any():
            examples = [f"{src[i]}->{tgt[i]}" for i in np.flatnonzero(dup.to_numpy())]
            raise ValueError(f"{int(dup.sum())} repeated edges: {_show(examples)}")
        if weight is None:
            w = np.ones(len(edges), dtype=np.float32)
        else:
            w = edges[weight].to_numpy()
            if not np.issubdtype(w.dtype, np.floating):
                w = w.astype(np.float32)
        rows, cols = (t_idx, s_idx) if orientation == "target_by_regulator" else (s_idx, t_idx)
        n = len(genes)
        if sparse:
            matrix: Matrix = sp.csr_matrix((w, (rows, cols)), shape=(n, n), dtype=w.dtype)
        else:
            matrix = np.zeros((n, n), dtype=w.dtype)
            matrix[rows, cols] = w
        if var is None:
            s_sym, t_sym = f"{source}_symbol", f"{target}_symbol"
            if s_sym in edges.columns and t_sym in edges.columns:
                symbols = pd.concat(
                    [
                        pd.Series(edges[s_sym].to_numpy(), index=src),
                        pd.Series(edges[t_sym].to_numpy(), index=tgt),
                    ]
                )
                symbols = symbols[~symbols.index.duplicated()]
                var = pd.DataFrame({_SYMBOL: symbols.reindex(genes)}, index=genes)
        return cls(matrix, genes, var=var, orientation=orientation, method=method, params=params)

    @classmethod
    def from_anndata(
        cls,
        adata: ad.AnnData,
        key: str = NETWORK_KEY,
        *,
        orientation: Orientation | None = None,
        method: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> GeneNetwork:
        """The network in ``adata.varp[key]``, with ``adata.var`` as genes (cells ignored).

        Parameters
        ----------
        adata
            Any AnnData with a gene x gene matrix in ``varp`` (e.g. a GRnnData object,
            whose ``varp["GRN"]`` is ``regulator_by_target``).
        key
            The ``varp`` key.
        orientation, method, params
            Override (or supply) ``adata.uns``'s ``orientation``, ``method`` and
            ``params``. The orientation must come from one or the other.
        """
        if key not in adata.varp:
            raise KeyError(f"adata.varp has no {key!r} (keys: {list(adata.varp.keys())})")
        uns = adata.uns
        if orientation is None:
            orientation = uns.get(_ORIENTATION_KEY)
            if orientation is None:
                raise ValueError(
                    "adata.uns has no 'orientation': pass orientation='target_by_regulator' "
                    "(rows are targets) or 'regulator_by_target' (rows are regulators)"
                )
        if method is None:
            method = str(uns.get(_METHOD_KEY, ""))
        if params is None:
            params = uns.get(_PARAMS_KEY)
            if isinstance(params, str):
                params = json.loads(params) if params else {}
        return cls(
            adata.varp[key],
            adata.var_names,
            var=adata.var,
            orientation=str(orientation),
            method=method,
            params=params,
        )

    # ---------------------------------------------------------------------- I/O

    def write(self, path: str | os.PathLike[str], compression: str | None = None) -> Path:
        """Write the network to ``.h5ad``, atomically (a temporary file in the same folder
        replaces ``path`` once complete). ``params`` are stored as a JSON string.

        Parameters
        ----------
        path
            Destination file.
        compression
            ``"gzip"`` or ``"lzf"`` for the h5ad datasets; none by default.

        Returns
        -------
        The path written.
        """
        path = Path(path)
        out = ad.AnnData(
            obs=pd.DataFrame(index=pd.Index([], dtype=str)),
            var=self.var,
            varp={NETWORK_KEY: self.matrix},
            uns={
                _ORIENTATION_KEY: self.orientation,
                _METHOD_KEY: self.method,
                _PARAMS_KEY: json.dumps(self.params),
            },
        )
        from scdataloader.io import atomic_path

        with atomic_path(path) as tmp:
            out.write_h5ad(tmp, compression=compression)
        logger.info("wrote %r to %s", self, path)
        return path

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> GeneNetwork:
        """Read a network written by :meth:`write` (or any h5ad with ``varp["network"]``
        and ``uns["orientation"]``).

        Raises
        ------
        FileNotFoundError
            The file does not exist.
        scdataloader.errors.FileFormatError
            It is empty, truncated or not an ``.h5ad`` file.
        """
        from scdataloader.io import read_anndata

        if not Path(path).exists():
            raise FileNotFoundError(f"network file not found: {path}")
        return cls.from_anndata(read_anndata(path), NETWORK_KEY)
