"""Sweeps over the paper's grid (Table 2): the protocol (grid), the runner,
and the table, figures and claims check made from the results."""
