"""Figures. matplotlib is imported only inside this package.

Each function takes data (DataFrames, result objects), draws on ``ax=None``
(a new figure when None) and returns the Axes or Figure; nothing calls ``plt.show()``.
"""
