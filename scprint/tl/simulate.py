"""Simulated multi-donor counts with planted differential expression.

For calibrating differential-expression methods: a method that ignores donors calls
many genes that differ only between donors, which :func:`simulate_donor_counts` makes
visible (``benchmarks/dge.py`` and ``tests/test_dge.py`` use it).
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = ["simulate_donor_counts"]


def simulate_donor_counts(
    seed: int = 0,
    *,
    n_genes: int = 80,
    n_de: int = 12,
    n_donors: int = 5,
    n_cells: int = 20,
    log2fc: float = 2.0,
    donor_sd: float = 0.2,
    dispersion: float = 0.2,
) -> tuple[ad.AnnData, dict[str, int]]:
    """Negative-binomial counts of two cell types, ``n_donors`` donors per condition.

    Each donor shifts each gene's mean by a log-normal factor (sd ``donor_sd``) and each
    cell has a log-normal library size (sd 0.3). In cell type ``A`` the first ``n_de``
    genes are multiplied by ``2 ** (+-log2fc)`` in the ``disease`` donors (alternating up
    and down); cell type ``B`` has no effect. Counts are negative binomial with the given
    ``dispersion`` (variance ``mu + dispersion * mu**2``).

    Returns the AnnData (``obs``: ``cell_type``, ``donor``, ``condition``, with
    ``normal`` the reference) and the planted genes, each with its sign (+1 or -1).
    """
    if n_de > n_genes:
        raise ValueError(f"n_de ({n_de}) cannot exceed n_genes ({n_genes}).")
    if min(n_genes, n_donors, n_cells) < 1 or dispersion <= 0:
        raise ValueError("n_genes, n_donors and n_cells must be >= 1 and dispersion > 0.")
    rng = np.random.default_rng(seed)
    base = rng.lognormal(1.2, 0.8, n_genes)  # mean counts per cell
    sign = np.where(np.arange(n_genes) % 2 == 0, 1, -1) * (np.arange(n_genes) < n_de)
    rows, obs = [], []
    size = 1.0 / dispersion
    for cell_type in ("A", "B"):
        for d in range(2 * n_donors):
            condition = "normal" if d < n_donors else "disease"
            mu = base * rng.lognormal(0.0, donor_sd, n_genes)  # (genes,)
            if cell_type == "A" and condition == "disease":
                mu = mu * 2.0 ** (log2fc * sign)
            mu = mu[None, :] * rng.lognormal(0.0, 0.3, (n_cells, 1))  # (cells, genes)
            rows.append(rng.negative_binomial(size, size / (size + mu)))
            obs += [(cell_type, f"donor{d}", condition)] * n_cells
    frame = pd.DataFrame(obs, columns=["cell_type", "donor", "condition"])
    frame.index = frame.index.astype(str)
    genes = [f"gene{i}" for i in range(n_genes)]
    adata = ad.AnnData(
        sp.csr_matrix(np.vstack(rows).astype(np.float32)),
        obs=frame,
        var=pd.DataFrame(index=genes),
    )
    return adata, {genes[i]: int(sign[i]) for i in range(n_de)}
