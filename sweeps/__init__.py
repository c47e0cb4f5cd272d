"""Sweeps: the paper's Table 2 grid (the protocol in grid, the table,
figures and claims check made from its results) and the Table 3 ablation
(ablation, table3), both run by the same runner."""
