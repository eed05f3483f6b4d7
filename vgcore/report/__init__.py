"""What the analysis notebooks import: their declared outputs, the analysis (tables, claims), the plots.

- :mod:`~vgcore.report.outputs`: which notebook writes which figure and table; the profile's runs.
- :mod:`~vgcore.report.analysis`: seed aggregation, tables, the paper's claims as checks.
- :mod:`~vgcore.report.plots`: the figure functions.
"""
